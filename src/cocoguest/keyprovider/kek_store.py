"""Where coco-keyprovider puts the KEKs it makes: a KBS, through the Trustee admin API (kbs-protocol.md §12).

Invariants:
    * :class:`KbsKekStore` stores the KEK as the resource at the key id's ``repo/type/tag`` with one
      ``POST /kbs/v0/resource/<path>``, signed with an Ed25519 Bearer JWT when an admin key is configured (the
      legacy Trustee admin auth upstream's coco_keyprovider uses); a refusal raises
      :class:`~cocoguest.errors.KbsStatusError` naming the path, the status and the KBS's ``{type, detail}``.
    * It is safe to call from several threads at once (one shared HTTP connection pool).
"""

from __future__ import annotations

from typing import Protocol

from cocoguest.crypto.jws import Ed25519PrivateKey
from cocoguest.devkbs.admin_client import KbsAdminClient
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits


class KekStore(Protocol):
    """Keeps a KEK where the guest's KBC will ask for it."""

    def store(self, kid: ResourceUri, kek: bytes) -> None:
        """Store ``kek`` under ``kid``.

        Raises:
            KbsStatusError: the KBS refused.
            TransportError: the KBS could not be reached.
        """
        ...


class KbsKekStore:
    """A :class:`KekStore` that registers KEKs in the KBS at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: Ed25519PrivateKey | None = None,
        ca_cert: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Register KEKs at ``url``, signing admin tokens with ``auth_key`` if given.

        Raises:
            ConfigError: ``url`` is not an http(s) URL.
        """
        self._client = KbsAdminClient(url, auth_key=auth_key, ca_cert=ca_cert, limits=limits)

    def store(self, kid: ResourceUri, kek: bytes) -> None:
        """Register ``kek`` as resource ``kid.path`` (the key id's host, if any, is only a name)."""
        self._client.set_resource(kid.path, kek)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
