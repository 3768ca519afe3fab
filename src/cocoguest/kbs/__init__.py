"""Key Broker Service: resource URIs, the resource-provider capability, the RCAR 0.4.0 client and the KBCs.

Modules: ``resource_uri`` (URIs), ``provider`` (capability), ``protocol`` (RCAR, sans-IO), ``canonical_json``
(RFC 8785), ``tee_key`` (TEE key, JWE), ``http`` (size-capped transport), ``token_cache``, ``client``
(background-check and passport clients), ``evidence`` (what the client needs from an attester),
``annotation_packet`` + ``key_unwrap`` (UnWrapKey core), ``kbc/`` (cc_kbc, offline_fs_kbc, sample_kbc,
aa_kbc_params), ``offline_fs``, ``locations``.

Invariants:
    * A :class:`ResourceUri` is always valid (exactly ``repo/type/tag``, KBS segment grammar); nothing here
      accepts a free-form resource path.
    * Consumers depend on :class:`ResourceProvider` only; the offline_fs provider, the sample KBC and the KBS client
      (``kbc.CcKbc``) implement it.
"""

from __future__ import annotations

from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError

__all__ = ["OfflineFsKbc", "ResourceProvider", "ResourceUri", "ResourceUriError"]
