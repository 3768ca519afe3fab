"""The KBC capability (guest-components.md §7.1): release resources and decrypt key-provider annotations.

Invariants:
    * A KBC is a :class:`~cocoguest.kbs.provider.ResourceProvider` (so ``kbs:///`` policies, keys and sigstore
      configs resolve through it) plus ``decrypt_payload`` for AnnotationPackets.
    * A KBC never falls back to another KBC.
"""

from __future__ import annotations

from typing import Protocol

from cocoguest.kbs.annotation_packet import AnnotationPacket
from cocoguest.kbs.resource_uri import ResourceUri


class Kbc(Protocol):
    """A key broker client."""

    @property
    def name(self) -> str:
        """``cc_kbc``, ``offline_fs_kbc`` or ``sample_kbc``."""
        ...

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The plaintext of resource ``uri`` (see :class:`~cocoguest.kbs.provider.ResourceProvider`)."""
        ...

    def decrypt_payload(self, packet: AnnotationPacket) -> bytes:
        """The layer key options wrapped in ``packet``.

        Raises:
            ResourceNotFoundError, KbsDeniedError, TransportError: the KEK could not be obtained.
            DecryptionIntegrityError: the KEK does not open the packet.
            ProtocolError: malformed packet members.
        """
        ...
