"""What identifies a blob as a verified source of a layer: the store's reuse key.

Invariants:
    * A :class:`BlobSource` names everything that decides what a blob decodes to: the blob's digest and size,
      the media type (compression, encryption) and, for an encrypted blob, a check value of the key material
      that decrypted it (key, nonce, HMAC). Two descriptors with equal sources decode the same bytes the same
      way, so one verification of the source vouches for the other.
    * The store records a source only after that very source was downloaded and verified in full (digest,
      size, HMAC, diff_id); a committed layer is reused only for a recorded source (see ``Store.acquire_layer``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlobSource:
    """One way of obtaining a layer: this blob, decoded as this media type, with this key.

    Attributes:
        digest: the blob digest from the descriptor (``sha256:...``).
        size: the blob size from the descriptor.
        media_type: the descriptor's media type (decides decryption and decompression).
        key_check: for an encrypted blob, a keyed check value of the unwrapped key material (never the key
            itself); empty for a plain blob.
    """

    digest: str
    size: int
    media_type: str
    key_check: str = ""
