"""ocicrypt: OCI image layer encryption, wire-compatible with Go containers/ocicrypt and ocicrypt-rs."""
