"""``cc_kbc``: a Trustee KBS through the KBS client (guest-components.md §7.1, kbs-protocol.md).

Invariant: the KEK of a packet is the KBS resource at the packet's ``kid``, released only after attestation
and decrypted with this guest's TEE key (:class:`cocoguest.kbs.client.KbsClient`).
"""

from __future__ import annotations

from typing import Final, Protocol

from cocoguest.kbs.annotation_packet import AnnotationPacket, decrypt_with_kek
from cocoguest.kbs.resource_uri import ResourceUri

NAME: Final = "cc_kbc"


class _ResourceSource(Protocol):
    def get_resource(self, uri: ResourceUri) -> bytes: ...


class CcKbc:
    """A KBS client (background-check or passport) as a KBC."""

    __slots__ = ("_client",)

    def __init__(self, client: _ResourceSource) -> None:
        """Wrap a :class:`~cocoguest.kbs.client.KbsClient` or :class:`~cocoguest.kbs.client.PassportKbsClient`."""
        self._client = client

    @property
    def name(self) -> str:
        """``cc_kbc``."""
        return NAME

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The resource from the KBS (attesting when the cached token is stale)."""
        return self._client.get_resource(uri)

    def decrypt_payload(self, packet: AnnotationPacket) -> bytes:
        """Decrypt with the KEK released by the KBS at the packet's ``kid``."""
        return decrypt_with_kek(packet, self._client.get_resource(packet.kid_uri))
