"""Key Broker Service resources: resource URIs, the resource-provider capability and the offline_fs provider.

Invariants:
    * A :class:`ResourceUri` is always valid (exactly ``repo/type/tag``, KBS segment grammar); nothing here
      accepts a free-form resource path.
    * Consumers depend on :class:`ResourceProvider` only; the offline_fs provider now and the KBS client later
      implement it.
"""

from __future__ import annotations

from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError

__all__ = ["OfflineFsKbc", "ResourceProvider", "ResourceUri", "ResourceUriError"]
