"""The offline_fs_kbc resource provider: KBS resources from local JSON files (guest-components.md §5.6).

File format, shared by the key file and the resource file::

    {"<repo>/<type>/<tag>": "<base64 standard, padded, of the content>", ...}

Loading follows CDH's ``plugins/kbs/offline_fs.rs``: files are merged in the order given (upstream: keys file,
resources file, then ``OFFLINE_FS_KBC_EXTRA_FILE_PATH``); a missing file is logged and skipped; a malformed file
is an error; a resource defined again in a later file replaces the earlier one, with a warning.

Stricter than upstream, on purpose:
    * a name that appears twice in one file is an error (JSON parsers disagree on which value wins);
    * every name must be a valid ``repo/type/tag`` (a name no :class:`ResourceUri` can address is a typo);
    * base64 must be canonical standard base64 (as the Rust ``STANDARD`` engine), without whitespace;
    * files must be regular files of at most ``Limits.max_offline_fs_file_bytes`` (which caps every resource
      too), UTF-8 JSON.

Invariants:
    * Lookup is by ``uri.path`` only: host, port and query of the URI are ignored (§5.6), as upstream.
    * Resource values (keys!) never appear in messages, logs or ``repr``.
    * After :meth:`OfflineFsKbc.load` returns, no more IO happens: lookups are served from memory.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cocoguest import jsonutil
from cocoguest.errors import ConfigError, ResourceNotFoundError
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

DEFAULT_KEYS_PATH: Final = Path("/etc/aa-offline_fs_kbc-keys.json")
DEFAULT_RESOURCES_PATH: Final = Path("/etc/aa-offline_fs_kbc-resources.json")
DEFAULT_PATHS: Final = (DEFAULT_KEYS_PATH, DEFAULT_RESOURCES_PATH)
"""Where upstream looks, in upstream's merge order (guest-components.md §3)."""


def _resource_uri_for(name: str) -> ResourceUri:
    """The URI ``kbs:///<name>`` for a file entry name ``repo/type/tag``."""
    parts = name.split("/")
    if len(parts) != 3:
        msg = f"expected <repo>/<type>/<tag>, got {len(parts)} segment(s)"
        raise ValueError(msg)
    return ResourceUri(repository=parts[0], resource_type=parts[1], tag=parts[2])


def _read_capped(path: Path, limits: Limits) -> bytes | None:
    """The bytes of regular file ``path``, or ``None`` if it does not exist.

    Raises:
        ConfigError: not a regular file, unreadable, or larger than the cap.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not hang; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        msg = f"cannot open offline_fs resource file {path}: {e.strerror}"
        raise ConfigError(msg) from e
    try:
        is_regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not is_regular:
        os.close(fd)
        msg = f"offline_fs resource file {path} is not a regular file"
        raise ConfigError(msg)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limits.max_offline_fs_file_bytes + 1)
        except OSError as e:
            msg = f"cannot read offline_fs resource file {path}: {e.strerror}"
            raise ConfigError(msg) from e
    if len(data) > limits.max_offline_fs_file_bytes:
        msg = (
            f"offline_fs resource file {path} is larger than {limits.max_offline_fs_file_bytes} bytes "
            "(max_offline_fs_file_bytes)"
        )
        raise ConfigError(msg)
    return data


def _parse_file(path: Path, data: bytes) -> dict[str, bytes]:
    """Decode one offline_fs file into ``{repo/type/tag: content}``.

    Raises:
        ConfigError: the file is not a JSON object of canonical base64 strings under valid names.
    """

    def defined_twice(name: str) -> ConfigError:
        return ConfigError(f"offline_fs resource file {path}: resource {name!r} is defined twice")

    # SECURITY: a name given twice is ambiguous (parsers differ on which value wins): refuse the file.
    untrusted_doc = jsonutil.loads(data, f"offline_fs resource file {path}", ConfigError, duplicate_error=defined_twice)
    if not isinstance(untrusted_doc, dict):
        msg = f"offline_fs resource file {path} must hold a JSON object, not {type(untrusted_doc).__name__}"
        raise ConfigError(msg)
    resources: dict[str, bytes] = {}
    for name, untrusted_value in untrusted_doc.items():
        try:
            _resource_uri_for(name)
        except (ResourceUriError, ValueError) as e:
            msg = f"offline_fs resource file {path}: resource name {name!r} is not <repo>/<type>/<tag>: {e}"
            raise ConfigError(msg) from e
        if not isinstance(untrusted_value, str):
            msg = f"offline_fs resource file {path}: value of {name!r} must be a base64 string"
            raise ConfigError(msg)
        try:
            value = base64.b64decode(untrusted_value, validate=True)
        except (binascii.Error, ValueError) as e:
            # SECURITY: the value may be a secret key: the message names the entry, never its content.
            msg = f"offline_fs resource file {path}: value of {name!r} is not standard base64"
            raise ConfigError(msg) from e  # binascii's messages carry no data
        if base64.b64encode(value).decode("ascii") != untrusted_value:
            msg = f"offline_fs resource file {path}: value of {name!r} is not canonical base64 (padding/trailing bits)"
            raise ConfigError(msg)
        resources[name] = value
    return resources


class OfflineFsKbc:
    """Serves ``kbs:///repo/type/tag`` from merged offline_fs files. Implements ``ResourceProvider``."""

    __slots__ = ("_resources", "_sources")

    def __init__(self, resources: Mapping[str, bytes], sources: Mapping[str, Path] | None = None) -> None:
        """Wrap an already merged map (tests, callers with their own source); :meth:`load` reads files.

        Args:
            resources: ``{"repo/type/tag": content}``.
            sources: optional file each resource came from, for messages.

        Raises:
            ConfigError: a name is not ``repo/type/tag``.
        """
        for name in resources:
            try:
                _resource_uri_for(name)
            except (ResourceUriError, ValueError) as e:
                msg = f"offline_fs resource name {name!r} is not <repo>/<type>/<tag>: {e}"
                raise ConfigError(msg) from e
        self._resources: dict[str, bytes] = dict(resources)
        self._sources: dict[str, Path] = dict(sources or {})

    @classmethod
    def load(cls, paths: Sequence[Path], *, limits: Limits = DEFAULT_LIMITS) -> OfflineFsKbc:
        """Read and merge offline_fs key/resource files, in order.

        A missing file is logged (WARNING) and skipped. A resource defined in several files: the later file
        wins, with a WARNING (as CDH's ``offline_fs.rs``).

        Args:
            paths: files in merge order, e.g. :data:`DEFAULT_PATHS` then ``--offline-fs-resources`` files.
            limits: ``max_offline_fs_file_bytes`` and the JSON caps.

        Returns:
            The provider; it may be empty if no file exists.

        Raises:
            ConfigError: a file is unreadable, not a regular file, too large or malformed (names file and entry).
        """
        resources: dict[str, bytes] = {}
        sources: dict[str, Path] = {}
        for path in paths:
            data = _read_capped(path, limits)
            if data is None:
                _logger.warning("offline_fs resource file %s does not exist; skipped", path)
                continue
            for name, value in _parse_file(path, data).items():
                if name in resources:
                    _logger.warning("offline_fs resource %s in %s replaces the one from %s", name, path, sources[name])
                resources[name] = value
                sources[name] = path
            _logger.debug("loaded offline_fs resource file %s", path)
        return cls(resources, sources)

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The content stored under ``uri.path`` (host, port and query ignored, §5.6).

        Raises:
            ResourceNotFoundError: no loaded file defines ``uri.path``.
        """
        try:
            return self._resources[uri.path]
        except KeyError:
            msg = f"resource {uri} is not in the offline_fs resource files"
            raise ResourceNotFoundError(msg) from None

    def source_of(self, uri: ResourceUri) -> Path | None:
        """The file the resource ``uri`` was loaded from, if known."""
        return self._sources.get(uri.path)

    def __contains__(self, uri: object) -> bool:
        """Whether ``uri`` (a :class:`ResourceUri`) is defined."""
        return isinstance(uri, ResourceUri) and uri.path in self._resources

    def __len__(self) -> int:
        """Number of resources loaded."""
        return len(self._resources)

    def paths(self) -> frozenset[str]:
        """The ``repo/type/tag`` names loaded (not their values)."""
        return frozenset(self._resources)

    def __repr__(self) -> str:
        """Names only: values may be secret keys."""
        return f"OfflineFsKbc({len(self._resources)} resources)"
