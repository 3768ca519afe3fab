"""The ``kbs`` getter: a vault secret's ``name`` is a resource URI released by the configured KBC.

Invariant: the name must parse as a ``kbs://`` resource URI; the KBC (cc_kbc through the AA's token, or
offline_fs) is the only source; there is no ``kbs`` decrypter (as upstream).
"""

from __future__ import annotations

from cocoguest.cdh.kms.api import Annotations
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits


class KbsGetter:
    """Vault secrets from a KBC."""

    __slots__ = ("_limits", "_resources")

    def __init__(self, resources: ResourceProvider, limits: Limits = DEFAULT_LIMITS) -> None:
        """Release secrets through ``resources``."""
        self._resources = resources
        self._limits = limits

    def get_secret(self, name: str, annotations: Annotations) -> bytes:
        """The KBS resource ``name`` (annotations are ignored).

        Raises:
            ResourceUriError: ``name`` is not a resource URI.
            ResourceNotFoundError, KbsDeniedError, TransportError: the KBC could not release it.
        """
        del annotations
        return self._resources.get_resource(ResourceUri.parse(name, limits=self._limits))
