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
    stream_chunk_bytes: int = 1 * MiB
    """Read size of the streaming layer pipeline."""
    stream_queue_chunks: int = 4
    """Chunks in flight per pipeline stage (bounds memory)."""
    keyprovider_timeout_s: float = 60.0
    """One key provider call (Go has none; we do)."""
    keyprovider_max_response_bytes: int = 1 * MiB
    """A key provider's JSON answer."""


DEFAULT_LIMITS = Limits()
