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

import json
from dataclasses import asdict, dataclass


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

    def to_json(self) -> dict[str, object]:
        """JSON form (the fields by name)."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> BlobSource | None:
        """Parse :meth:`to_json` output; None if it is not that shape."""
        if not isinstance(obj, dict):
            return None
        digest, size, media_type, key_check = (obj.get(k) for k in ("digest", "size", "media_type", "key_check"))
        if not (isinstance(digest, str) and isinstance(media_type, str) and isinstance(key_check, str)):
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        return cls(digest, size, media_type, key_check)


LAYER_META_NAME = "layer.json"
"""Beside a layer's ``diff``: its size and the source it was first verified from, for ``fsck --repair``."""


def layer_meta(size: int, source: BlobSource | None) -> bytes:
    """The content of ``layer.json``: written into the staging directory, so it is committed with the layer."""
    return json.dumps({"size": size, "source": None if source is None else source.to_json()}).encode()


def parse_layer_meta(data: bytes) -> tuple[int | None, BlobSource | None]:
    """``(size, source)`` from ``layer.json``; None for what is missing or malformed (the file is ours)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    size = obj.get("size")
    valid_size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return valid_size, BlobSource.from_json(obj.get("source"))
