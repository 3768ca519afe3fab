"""The ImageSource contract: where manifests and blobs come from. Everything it returns is UNTRUSTED.

Invariants:
    * Sources never verify on behalf of callers; callers check manifest digests, blob digests and sizes.
    * Manifests are returned size-capped (``Limits.max_manifest_bytes``); blobs are streamed.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from cocoguest.digest import Digest
from cocoguest.oci.descriptor import Descriptor


class ImageSource(Protocol):
    """An image location (registry repository or local layout)."""

    def describe(self) -> str:
        """How messages name this source (``docker://host/repo:tag``, ``oci:/path:ref``)."""
        ...

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        """The raw manifest (or index) and the media type the source declared for it.

        ``digest=None`` fetches what the reference names (tag or digest); otherwise that exact manifest.

        Raises:
            ResourceNotFoundError, TransportError, ProtocolError.
        """
        ...

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A stream of the blob's bytes, unverified. Closing it releases the connection/file.

        Raises:
            ResourceNotFoundError, TransportError.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
