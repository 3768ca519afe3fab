"""``offline_fs_kbc``: KEKs and resources from the offline_fs files (guest-components.md §5.6, §7.1).

Invariant: the KEK of a packet is the resource at the packet's ``kid`` (host and query ignored).
"""

from __future__ import annotations

from typing import Final

from cocoguest.kbs.annotation_packet import AnnotationPacket, decrypt_with_kek
from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.kbs.resource_uri import ResourceUri

NAME: Final = "offline_fs_kbc"


class OfflineFsKbcClient:
    """The offline_fs resource provider as a KBC."""

    __slots__ = ("_store",)

    def __init__(self, store: OfflineFsKbc) -> None:
        """Wrap loaded offline_fs files."""
        self._store = store

    @property
    def name(self) -> str:
        """``offline_fs_kbc``."""
        return NAME

    def get_resource(self, uri: ResourceUri) -> bytes:
        """See :meth:`OfflineFsKbc.get_resource`."""
        return self._store.get_resource(uri)

    def decrypt_payload(self, packet: AnnotationPacket) -> bytes:
        """Decrypt with the KEK stored under the packet's ``kid``."""
        return decrypt_with_kek(packet, self._store.get_resource(packet.kid_uri))
