"""Where sealed-secret verification keys come from (guest-components.md §8.3).

A ``kid`` that parses as a resource URI (``kbs:///repo/type/tag``) is released by the KBC; any other ``kid``
names a file in the local key directory (default ``/run/confidential-containers/cdh/sealed-secret``).

Invariants:
    * SECURITY: a local ``kid`` is one plain file name: no ``/``, ``.``/``..`` or NUL, so no lookup leaves the
      directory; the resolved path must still be inside it (symlinks out are refused).
    * Keys are size-capped (``Limits.max_offline_fs_file_bytes``) and must be JSON objects (JWKs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, ResourceNotFoundError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_KEY_DIR: Final = Path("/run/confidential-containers/cdh/sealed-secret")


class SealedSecretKeys:
    """Verification JWKs from the KBS (resource-URI kids) or a local directory."""

    __slots__ = ("_directory", "_limits", "_resources")

    def __init__(
        self, resources: ResourceProvider | None, directory: Path = DEFAULT_KEY_DIR, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        """Look keys up through ``resources`` (the KBC) or in ``directory``."""
        self._resources = resources
        self._directory = directory
        self._limits = limits

    def public_jwk(self, kid: str) -> dict[str, object]:
        """The JWK for ``kid`` (see the module docstring).

        Raises:
            ResourceNotFoundError: no such key. ConfigError: a malformed kid or key, no KBC for a URI kid.
        """
        if kid.startswith("kbs:"):
            if self._resources is None:
                msg = f"sealed secret key {kid[:200]!r}: no KBC configured to fetch it"
                raise ConfigError(msg)
            untrusted = self._resources.get_resource(ResourceUri.parse(kid, limits=self._limits))
            return load_object(untrusted, f"sealed secret key {kid[:200]!r}", ConfigError, limits=self._limits)
        return self._local(kid)

    def _local(self, kid: str) -> dict[str, object]:
        # SECURITY: one plain component; then the resolved path must stay inside the directory.
        if not kid or kid in (".", "..") or "/" in kid or "\x00" in kid or len(kid) > 255:
            msg = f"sealed secret key {kid[:64]!r}: not a resource URI and not a plain file name"
            raise ConfigError(msg)
        root = self._directory.resolve()
        path = (root / kid).resolve()
        if path.parent != root:
            msg = f"sealed secret key {kid!r}: resolves outside {root}"
            raise ConfigError(msg)
        try:
            with path.open("rb") as f:
                data = f.read(self._limits.max_offline_fs_file_bytes + 1)
        except FileNotFoundError:
            msg = f"sealed secret key {kid!r}: unknown kid (not in {root})"
            raise ResourceNotFoundError(msg) from None
        except OSError as e:
            msg = f"sealed secret key {kid!r}: cannot read {path}: {e.strerror}"
            raise ConfigError(msg) from e
        if len(data) > self._limits.max_offline_fs_file_bytes:
            msg = f"sealed secret key {kid!r}: larger than {self._limits.max_offline_fs_file_bytes} bytes"
            raise ConfigError(msg)
        return load_object(data, f"sealed secret key {kid!r}", ConfigError, limits=self._limits)
