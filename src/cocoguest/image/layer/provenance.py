"""The store's reuse key of a layer descriptor: :class:`~cocoguest.image.store.BlobSource` from a descriptor.

Invariant: the key check of an encrypted layer is an HMAC keyed by the unwrapped layer key over everything
else that decides the decryption (cipher, nonce, the descriptor's HMAC). It changes whenever any of them
does, and reveals nothing about the key: the store may keep it on disk.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cocoguest.image.store import BlobSource
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt.layer import UnwrappedKey
from cocoguest.ocicrypt.options import PublicOptions

_KEY_CHECK_LABEL: Final = b"cocoguest verified layer key check v1\0"


def key_check(key: UnwrappedKey, public: PublicOptions) -> str:
    """A check value of the key material that decrypts a layer (hex HMAC-SHA256, keyed by the layer key)."""
    message = b"\0".join((_KEY_CHECK_LABEL, public.cipher.encode(), key.options.nonce, public.hmac))
    return hmac.new(key.options.symkey, message, hashlib.sha256).hexdigest()


def blob_source(desc: Descriptor, key: UnwrappedKey | None, public: PublicOptions | None) -> BlobSource:
    """The source a descriptor names: digest, size, media type and (encrypted) the key check.

    SECURITY: an encrypted descriptor's source includes the check of the key the caller unwrapped, so a
    layer verified with one key is never reused for a descriptor whose annotations wrap another.

    Raises:
        ValueError: an encrypted descriptor without an unwrapped key (a programming error).
    """
    if not media_types.is_encrypted(desc.media_type):
        return BlobSource(str(desc.digest), desc.size, desc.media_type)
    if key is None or public is None:
        msg = f"layer {desc.digest}: encrypted layer without an unwrapped key"
        raise ValueError(msg)
    return BlobSource(str(desc.digest), desc.size, desc.media_type, key_check(key, public))
