"""Registry credentials from containers-auth.json(5) files (and Docker's ``config.json`` / ``.dockercfg``).

Follows containers/image ``pkg/docker/config`` (read-only side):

* Files, in order (:func:`default_auth_files`): ``$REGISTRY_AUTH_FILE`` alone if set; otherwise
  ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/<uid>/auth.json`` without ``XDG_RUNTIME_DIR``),
  ``${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json``, ``$DOCKER_CONFIG/config.json`` (else
  ``$HOME/.docker/config.json``), ``$HOME/.dockercfg`` (the legacy format: a bare map of keys, no ``auths``).
* Per file (:func:`load_credentials`): the exact keys ``registry/ns/repo``, ``registry/ns``, ``registry`` (only
  ``registry`` in a legacy file); then, for the registry only, keys normalised as containers/image does:
  ``http://``/``https://`` stripped together with everything after the host (``https://index.docker.io/v1/``
  becomes ``index.docker.io``; legacy keys lose their path even without a scheme), and ``docker.io`` /
  ``registry-1.docker.io`` / ``index.docker.io`` treated as one host.
* The first file with an entry wins. An entry with neither ``auth`` nor ``identitytoken`` (Docker writes
  ``{}`` when a credential helper holds the secret) ends the search in that file, as in containers/image.

Invariants:
    * Never raises for a missing file; any other unreadable or malformed file is a :class:`ConfigError`
      naming the file (and the key, for a bad entry), never echoing secret material.
    * ``credHelpers`` / ``credsStore`` are not supported: they are logged at debug level and skipped.
    * Library code: the environment comes in as a mapping; nothing reads ``os.environ``.

Deliberate differences from containers/image: an ``auth`` value that decodes to text without ``:`` is a
:class:`ConfigError` (Go logs a warning and treats the file as having no entry), and an ``identitytoken`` without
``auth`` is returned as a token credential (Go drops it).
"""

from __future__ import annotations

import base64
import binascii
import logging
import pwd
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.types import Credentials

_logger = logging.getLogger(__name__)


_LEGACY_FILE_NAME: Final = ".dockercfg"
_DOCKER_HUB_HOSTS: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _home_dir(env: Mapping[str, str], uid: int) -> Path | None:
    home = env.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None


def default_auth_files(env: Mapping[str, str], uid: int) -> list[Path]:
    """The auth files to search, in containers/image's order (see the module docstring).

    Args:
        env: the process environment (``REGISTRY_AUTH_FILE``, ``XDG_RUNTIME_DIR``, ``XDG_CONFIG_HOME``,
            ``DOCKER_CONFIG``, ``HOME``).
        uid: the caller's uid, for ``/run/containers/<uid>/auth.json`` and the home directory fallback.

    Returns:
        Paths in lookup order; they need not exist. A file named ``.dockercfg`` is read in the legacy format.
    """
    explicit = env.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [Path(explicit)]
    paths: list[Path] = []
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        paths.append(Path(runtime_dir) / "containers" / "auth.json")
    else:
        paths.append(Path(f"/run/containers/{uid}/auth.json"))
    home = _home_dir(env, uid)
    config_home = env.get("XDG_CONFIG_HOME")
    if config_home:
        paths.append(Path(config_home) / "containers" / "auth.json")
    elif home is not None:
        paths.append(home / ".config" / "containers" / "auth.json")
    docker_config = env.get("DOCKER_CONFIG")
    if docker_config:
        paths.append(Path(docker_config) / "config.json")
    elif home is not None:
        paths.append(home / ".docker" / "config.json")
    if home is not None:
        paths.append(home / _LEGACY_FILE_NAME)
    unique: list[Path] = []
    for path in paths:
        if path not in unique:
            unique.append(path)
    return unique


def _normalise_host(host: str) -> str:
    return "index.docker.io" if host in _DOCKER_HUB_HOSTS else host


def _normalise_key(key: str, *, legacy: bool) -> str:
    """containers/image ``normalizeAuthFileKey``: a key as a (normalised) registry host."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    if legacy or stripped != key:
        stripped = stripped.partition("/")[0]
    return _normalise_host(stripped)


def _lookup_keys(name: str, registry: str, *, legacy: bool) -> Iterator[str]:
    """``registry/ns/repo``, ``registry/ns``, ..., ``registry`` (legacy files: ``registry`` only)."""
    if legacy:
        yield registry
        return
    key = name
    while True:
        yield key
        slash = key.rfind("/")
        if slash < 0:
            return
        key = key[:slash]


def _read_json(path: Path, limits: Limits) -> object | None:
    """The parsed file (at most ``limits.max_auth_file_bytes``), or ``None`` when it does not exist."""
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_auth_file_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        msg = f"auth file {path}: cannot read: {e.strerror or e}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_auth_file_bytes:
        msg = f"auth file {path}: larger than {limits.max_auth_file_bytes} bytes (max_auth_file_bytes)"
        raise ConfigError(msg)
    return loads(data, f"auth file {path}", ConfigError, limits=limits)


def _auth_entries(path: Path, document: object, *, legacy: bool) -> dict[str, tuple[str, str]]:
    """The ``auths`` map of a file (the whole document for a legacy file) as ``key -> (auth, identitytoken)``."""
    if not isinstance(document, dict):
        msg = f"auth file {path}: expected a JSON object at the top level"
        raise ConfigError(msg)
    auths = document if legacy else document.get("auths", {})
    if not isinstance(auths, dict):
        msg = f"auth file {path}: field 'auths' must be an object"
        raise ConfigError(msg)
    entries: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            msg = f"auth file {path}: entry {key!r} must be an object"
            raise ConfigError(msg)
        untrusted_auth = entry.get("auth", "")
        untrusted_token = entry.get("identitytoken", "")
        for field, value in (("auth", untrusted_auth), ("identitytoken", untrusted_token)):
            if not isinstance(value, str):
                msg = f"auth file {path}: entry {key!r}: field {field!r} must be a string"
                raise ConfigError(msg)
        entries[key] = (untrusted_auth, untrusted_token)
    return entries


def _note_helpers(path: Path, document: Mapping[str, object], registry: str) -> None:
    helpers = document.get("credHelpers")
    if isinstance(helpers, dict) and registry in helpers:
        _logger.debug("auth file %s: credHelpers entry for %s is not supported; ignoring it", path, registry)
    if document.get("credsStore"):
        _logger.debug("auth file %s: credsStore is not supported; ignoring it", path)


def _decode_entry(path: Path, key: str, entry: tuple[str, str]) -> Credentials | None:
    """containers/image ``decodeDockerAuth``; ``None`` for an empty (credential-helper marker) entry."""
    untrusted_auth, untrusted_token = entry
    source = f"{path} ({key})"
    username = password = ""
    if untrusted_auth:
        try:
            decoded = base64.b64decode(untrusted_auth, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as e:
            # SECURITY: the message never includes the value: it is a secret.
            msg = f"auth file {path}: entry {key!r}: field 'auth' is not base64 of UTF-8 'user:password'"
            raise ConfigError(msg) from e
        username, sep, password = decoded.partition(":")
        if not sep:
            msg = f"auth file {path}: entry {key!r}: field 'auth' does not decode to 'user:password' (no ':')"
            raise ConfigError(msg)
        # containers/image trims NULs, image-rs trailing newlines (written by `echo user:pass | base64`).
        password = password.strip("\x00").rstrip("\n")
    if not username and not password and not untrusted_token:
        _logger.debug("auth file %s: entry %r is empty (a credential helper marker?); skipping the file", path, key)
        return None
    return Credentials(username=username, password=password, identity_token=untrusted_token, source=source)


def _find_in_file(path: Path, name: str, registry: str, limits: Limits) -> tuple[bool, Credentials | None]:
    """Look ``name`` up in one file: (an entry was found, its credentials)."""
    legacy = path.name == _LEGACY_FILE_NAME
    document = _read_json(path, limits)
    if document is None:
        return False, None
    entries = _auth_entries(path, document, legacy=legacy)
    if not legacy and isinstance(document, dict):
        _note_helpers(path, document, registry)
    for key in _lookup_keys(name, registry, legacy=legacy):
        if key in entries:
            return True, _decode_entry(path, key, entries[key])
    # Registry level only: keys written as URLs (`docker login` before normalisation, legacy /v1/ keys).
    wanted = _normalise_host(registry)
    for key, entry in entries.items():
        if _normalise_key(key, legacy=legacy) == wanted:
            return True, _decode_entry(path, key, entry)
    return False, None


def load_credentials(
    reference: ImageReference, auth_files: Sequence[Path], *, limits: Limits = DEFAULT_LIMITS
) -> Credentials | None:
    """The credentials for ``reference``'s repository from the first auth file that has an entry for it.

    Args:
        reference: the image; its ``registry/repository`` is the most specific key. For mirrors and remaps
            pass the physical reference (the one actually contacted), never the logical one.
        auth_files: files in lookup order (see :func:`default_auth_files`); missing ones are skipped.
        limits: ``max_auth_file_bytes`` and the JSON caps.

    Returns:
        The credentials (``source`` names the file and the key), or ``None`` for anonymous access.

    Raises:
        ConfigError: a file cannot be read, is not JSON of the expected shape, or the matching entry's
            ``auth`` is not base64 of ``user:password``.
    """
    for path in auth_files:
        found, credentials = _find_in_file(path, reference.name, reference.registry, limits)
        if credentials is not None:
            _logger.debug("credentials for %s from %s", reference.name, credentials.source)
            return credentials
        if found:
            continue
        _logger.debug("no credentials for %s in %s", reference.name, path)
    return None
