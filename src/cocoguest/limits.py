"""Every size, count and time limit of cocoguest, in one frozen dataclass.

Invariant: no other module hard-codes a size, count or time limit; every reader of untrusted data is
capped by a field of :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied to untrusted input and to long work."""

    max_manifest_bytes: int = 4 * MiB
    """Manifest or index JSON (containers/image uses 4 MiB)."""
    max_config_bytes: int = 8 * MiB
    """Image config JSON."""
    max_index_json_bytes: int = 4 * MiB
    """An OCI layout's index.json."""
    max_blob_bytes: int = 64 * GiB
    """One layer blob."""
    max_layers: int = 512
    """Layers in one manifest (Docker caps at 127; we are generous but finite)."""
    max_annotation_bytes: int = 1 * MiB
    """One annotation value (wrapped keys are a few KiB)."""
    max_key_file_bytes: int = 1 * MiB
    """A key, certificate, keyring or key YAML file."""
    max_private_options_bytes: int = 64 * KiB
    """Unwrapped private-options JSON (193 bytes in practice)."""
    max_password_fd_bytes: int = 64
    """Bytes read from ``FILE:fd=N`` (as Go ocicrypt)."""
    max_key_recipients: int = 64
    """Recipients in one wrapped-key entry (JWE, PKCS7): each costs a private-key operation per key."""
    max_der_depth: int = 32
    """Nesting depth of DER structures (CMS)."""
    max_der_length_octets: int = 4
    """Octets of a DER long-form length (4 = lengths under 4 GiB)."""
    max_auth_file_bytes: int = 1 * MiB
    """containers-auth.json file."""
    max_registries_conf_bytes: int = 1 * MiB
    """registries.conf file."""
    registry_connect_timeout_s: float = 30.0
    """Connecting to a registry."""
    registry_read_timeout_s: float = 60.0
    """Between two reads from a registry."""
    registry_retry_attempts: int = 5
    """Tries of one registry request (5xx, 429, resets)."""
    registry_retry_base_delay_s: float = 0.5
    """First backoff delay; doubles per try, with jitter."""
    registry_retry_max_delay_s: float = 10.0
    """Longest backoff delay."""
    registry_retry_after_cap_s: float = 30.0
    """Longest Retry-After honoured."""
    registry_max_redirects: int = 5
    """Redirects followed per request."""
    registry_error_body_bytes: int = 64 * KiB
    """Error body read for the message."""
    registry_token_max_bytes: int = 1 * MiB
    """Token endpoint answer."""
    registry_blob_resumes: int = 5
    """Range resumes of one interrupted blob download."""
    registry_upload_chunk_bytes: int = 1 * MiB
    """Read size when pushing a blob."""
    registry_default_token_lifetime_s: float = 60.0
    """Token lifetime when the server gives none (token spec)."""
    registry_token_expiry_margin_s: float = 10.0
    """Refresh tokens this long before they expire."""
    max_user_db_bytes: int = 4 * MiB
    """An image's /etc/passwd or /etc/group."""
    max_symlink_hops: int = 40
    """Symlinks followed resolving one path inside a rootfs (Linux MAXSYMLINKS)."""
    store_db_busy_timeout_s: float = 30.0
    """Waiting for the store database lock."""
    gpg_export_timeout_s: float = 60.0
    """`gpg --export` for pgp:UID recipients."""
    max_tar_entries: int = 1_000_000
    """Entries in one layer tar."""
    dir_meta_memory_entries: int = 16384
    """Directory metadata records (mode, owner, mtime: set after the children) kept in memory per layer unpack
    or rootfs merge; more spill to a scratch SQLite file beside the tree (a record costs ~300 bytes)."""
    max_tar_name_bytes: int = 4096
    """A member name or link name (PATH_MAX)."""
    max_tar_pax_header_bytes: int = 1 * MiB
    """One PAX extended header (Go's archive/tar cap)."""
    max_tar_sparse_segments: int = 65536
    """Segments of one sparse file."""
    max_tar_file_real_bytes: int = 1 << 40
    """Expanded size of one (sparse) file."""
    max_offline_fs_file_bytes: int = 16 * MiB
    """One offline_fs_kbc key or resource file."""
    max_resource_uri_length: int = 2048
    """A kbs:// resource URI, in characters."""
    max_policy_resource_bytes: int = 4 * MiB
    """A policy, key or sigstore config read from a location."""
    max_policy_bytes: int = 4 * MiB
    """containers-policy.json."""
    max_sigstore_payload_bytes: int = 4 * MiB
    """A cosign payload (containers/image MaxSignatureBodySize)."""
    max_policy_reasons_per_requirement: int = 16
    """Rejection reasons kept per requirement."""
    max_signed_reference_length: int = 1024
    """A reference claimed by a signature, before any regex runs."""
    max_registries_d_file_bytes: int = 1 * MiB
    """One registries.d YAML file."""
    max_registries_d_files: int = 1000
    """Files in a registries.d directory."""
    max_lookaside_signatures: int = 128
    """Signatures read per manifest digest."""
    max_signature_bytes: int = 4 * MiB
    """One simple signature."""
    max_signature_list_bytes: int = 4 * MiB
    """An X-Registry-Supports-Signatures answer."""
    max_sigstore_attachment_layers: int = 256
    """Layers of a sha256-<hex>.sig manifest."""
    max_private_key_bytes: int = 64 * KiB
    """A cosign private key file."""
    max_scrypt_memory_bytes: int = 256 * MiB
    """scrypt memory (128*r*N) for encrypted cosign keys."""
    max_chain_certificates: int = 10
    """Certificates in a keyless signature chain."""
    max_chain_depth: int = 8
    """X.509 chain depth."""
    max_signed_payload_bytes: int = 4 * MiB
    """A signed message payload after decompression."""
    max_keyring_bytes: int = 16 * MiB
    """A trusted GPG keyring."""
    max_decompression_ratio: int = 4096
    """Uncompressed bytes per compressed byte of a layer (gzip cannot exceed ~1032:1; zstd can, hence generous)."""
    decompression_ratio_allowance_bytes: int = 64 * MiB
    """Uncompressed bytes always allowed before the ratio applies (small, highly compressible layers)."""
    stream_chunk_bytes: int = 1 * MiB
    """Read size of the streaming layer pipeline."""
    stream_queue_chunks: int = 4
    """Chunks in flight per pipeline stage (bounds memory)."""
    keyprovider_timeout_s: float = 60.0
    """One key provider call (Go has none; we do)."""
    keyprovider_max_response_bytes: int = 1 * MiB
    """A key provider's JSON answer."""


DEFAULT_LIMITS = Limits()
