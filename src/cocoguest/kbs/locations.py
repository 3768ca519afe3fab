"""Reading policy files, keys and sigstore configs from where the owner says they are (issue 4, §9.10).

Location forms accepted by :meth:`LocationReader.read`:

* ``kbs://[host[:port]]/repo/type/tag`` (and ``kbs+resource://``): through the configured
  :class:`~cocoguest.kbs.provider.ResourceProvider` (offline_fs files now, the KBS later);
* ``file:///abs/path`` or ``file://localhost/abs/path`` (RFC 8089; percent-decoded);
* a plain path: absolute, or relative to the base directory given at construction.

Any other ``scheme://`` is refused (no ``http(s)``: a policy fetched over a network we do not trust is no policy).

Invariants:
    * Every result is at most ``max_bytes`` long; a longer resource is an error, never truncated.
    * Only regular files are read (no FIFOs, devices or directories); symlinks are followed, as the owner's
      configuration is trusted to name its own files.
    * Nothing is cached: each ``read`` asks the provider or the file system again (upstream's never-invalidated
      cache is guest-components.md §14 item 8).
    * Every error names the location as written.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from cocoguest.errors import ConfigError, ResourceNotFoundError, TransportError
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits

_URI_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):", re.ASCII)


class LocationReader:
    """Implements ``image.policy.types.ResourceReader`` over kbs URIs, file URIs and plain paths."""

    __slots__ = ("_base_dir", "_limits", "_max_bytes", "_provider")

    def __init__(
        self,
        base_dir: Path,
        provider: ResourceProvider | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_bytes: int | None = None,
    ) -> None:
        """Create a reader.

        Args:
            base_dir: absolute directory that relative plain paths are resolved against (e.g. the policy file's).
            provider: resolves ``kbs://`` locations; ``None`` makes them a configuration error.
            limits: the caller's limits (``max_policy_resource_bytes``, ``max_resource_uri_length``).
            max_bytes: largest resource accepted (``None``: ``limits.max_policy_resource_bytes``).

        Raises:
            ValueError: ``base_dir`` is relative or ``max_bytes`` is not positive (programmer errors).
        """
        if not base_dir.is_absolute():
            msg = f"base_dir must be absolute, got {base_dir}"
            raise ValueError(msg)
        if max_bytes is None:
            max_bytes = limits.max_policy_resource_bytes
        if max_bytes <= 0:
            msg = f"max_bytes must be positive, got {max_bytes}"
            raise ValueError(msg)
        self._base_dir = base_dir
        self._provider = provider
        self._max_bytes = max_bytes
        self._limits = limits

    def read(self, location: str) -> bytes:
        """The bytes at ``location`` (``kbs://...``, ``file:///...`` or a plain path).

        Args:
            location: as written in the policy or configuration.

        Returns:
            The content, at most ``max_bytes`` long.

        Raises:
            ConfigError: malformed or unsupported location, no provider for ``kbs://``, not a regular file,
                unreadable for permissions, or larger than the limit.
            ResourceNotFoundError: no such file or resource.
            TransportError: the file or the provider could not be read.
        """
        if not location:
            msg = "empty resource location"
            raise ConfigError(msg)
        if "\x00" in location:
            msg = f"resource location {location!r} contains a NUL byte"
            raise ConfigError(msg)
        scheme_match = _URI_SCHEME.match(location)
        scheme = scheme_match.group(1).lower() if scheme_match else None
        if scheme is not None and (scheme == "kbs" or scheme.startswith("kbs+")):
            return self._read_kbs(location)
        if scheme == "file":
            return self._read_file(self._file_uri_path(location), location)
        # SECURITY: no http(s) or other remote schemes: a policy or key from an untrusted network is no policy.
        if scheme is not None and location[len(scheme) + 1 :].startswith("//"):
            msg = f"resource location {location!r}: scheme {scheme!r} is not supported (use kbs://, file:// or a path)"
            raise ConfigError(msg)
        path = Path(location)
        if not path.is_absolute():
            path = self._base_dir / path
        return self._read_file(path, location)

    def _read_kbs(self, location: str) -> bytes:
        uri = ResourceUri.parse(location, limits=self._limits)
        if self._provider is None:
            msg = f"resource {location} needs a resource provider: give --offline-fs-resources FILE or configure a KBS"
            raise ConfigError(msg)
        data = self._provider.get_resource(uri)
        # SECURITY: cap what a provider may hand us, as for files; too large is an error, never a truncation.
        if len(data) > self._max_bytes:
            msg = f"resource {location} is {len(data)} bytes, more than the limit of {self._max_bytes}"
            raise ConfigError(msg)
        return data

    @staticmethod
    def _file_uri_path(location: str) -> Path:
        """The local path of ``file:///abs`` or ``file://localhost/abs``."""
        parts = urlsplit(location)
        if not location[len(parts.scheme) + 1 :].startswith("//"):
            msg = f"resource location {location!r}: write file URIs as file:///absolute/path"
            raise ConfigError(msg)
        if parts.netloc not in ("", "localhost"):
            msg = (
                f"resource location {location!r}: file URI host must be empty or localhost "
                "(for a local absolute path write file:///path)"
            )
            raise ConfigError(msg)
        if parts.query or parts.fragment or "?" in location or "#" in location:
            msg = f"resource location {location!r}: a file URI may not have a query or fragment"
            raise ConfigError(msg)
        try:
            decoded = unquote(parts.path, errors="strict")
        except UnicodeDecodeError as e:
            msg = f"resource location {location!r}: file URI path is not UTF-8 after percent-decoding"
            raise ConfigError(msg) from e
        if "\x00" in decoded:
            msg = f"resource location {location!r}: file URI path contains a NUL byte"
            raise ConfigError(msg)
        path = Path(decoded)
        if not path.is_absolute():
            msg = f"resource location {location!r}: file URI path must be absolute"
            raise ConfigError(msg)
        return path

    def _read_file(self, path: Path, location: str) -> bytes:
        """Read regular file ``path`` up to the cap; messages name ``location`` (and ``path`` if different)."""
        where = location if str(path) == location else f"{location} ({path})"
        try:
            # O_NONBLOCK: opening a FIFO must not hang; fstat then refuses it.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError) as e:
            msg = f"resource {where} does not exist"
            raise ResourceNotFoundError(msg) from e
        except PermissionError as e:
            msg = f"resource {where} is not readable: {e.strerror}"
            raise ConfigError(msg) from e
        except OSError as e:
            msg = f"cannot open resource {where}: {e.strerror}"
            raise TransportError(msg) from e
        try:
            is_regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except BaseException:
            os.close(fd)
            raise
        if not is_regular:  # SECURITY: no FIFOs (hang), devices (endless) or directories
            os.close(fd)
            msg = f"resource {where} is not a regular file"
            raise ConfigError(msg)
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read(self._max_bytes + 1)
            except OSError as e:
                msg = f"cannot read resource {where}: {e.strerror}"
                raise TransportError(msg) from e
        if len(data) > self._max_bytes:
            msg = f"resource {where} is larger than the limit of {self._max_bytes} bytes"
            raise ConfigError(msg)
        return data
