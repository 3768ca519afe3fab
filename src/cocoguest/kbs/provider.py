"""The resource-provider capability: ``kbs://`` URI in, plaintext bytes out.

Implemented by :class:`cocoguest.kbs.offline_fs.OfflineFsKbc` now and by the KBS client when the attestation
work lands (guest-components.md §7.1 ``get_resource(ResourceUri)``, §9.10).

Invariants:
    * A provider returns the resource exactly as released; it never falls back to another source.
    * Every failure is a :class:`~cocoguest.errors.CocoError` that names the URI.
"""

from __future__ import annotations

from typing import Protocol

from cocoguest.kbs.resource_uri import ResourceUri


class ResourceProvider(Protocol):
    """Something that can release KBS resources (offline_fs files, a KBS)."""

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The plaintext of the resource ``uri.path``.

        Args:
            uri: the resource to fetch; providers that have one fixed source ignore its host and port.

        Returns:
            The resource bytes.

        Raises:
            ResourceNotFoundError: the provider has no such resource.
            TransportError, ProtocolError: the provider could not be reached or answered badly.
            VerificationError: the provider refused to release it (attestation or resource policy).
        """
        ...
