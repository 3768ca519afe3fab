"""PKCS#11 configuration of ocicrypt: RFC 7512 URIs, key files and the module policy (ocicrypt.md §5.4).

* A **key file** is YAML ``{pkcs11: {uri: "pkcs11:..."}, module: {env: {NAME: VALUE}}}``; it names a key
  on a token, the module (shared library) that drives the token and, for private-key use, the PIN.
* The **module policy** (``ocicrypt.conf``, YAML ``{pkcs11: {module-directories: [...],
  allowed-module-paths: [...]}}``) says which modules may be loaded. ``internal`` stands for the built-in
  distribution directories (:data:`INTERNAL_MODULE_DIRECTORIES`).

Invariants:
    * :func:`load_pkcs11_key_file` returns ``None`` for anything that is not such YAML (PEM, DER, JSON
      keys, keyrings, binary) and raises :class:`ConfigError` only for a key file that is one but is broken.
    * PINs are never part of a ``repr`` or an error message.
    * SECURITY: loading a module runs its code in our process, so a module is used only when the policy
      allows it: it lies directly inside a ``module-directories`` entry, is listed in
      ``allowed-module-paths``, or lies directly inside an ``allowed-module-paths`` entry ending in ``/``.
      With no policy file there is no module at all (Go ocicrypt allows everything when the lists are
      empty; we allow nothing).
    * Library code never reads ``os.environ``: the CLI passes the environment to
      :func:`default_pkcs11_config_paths`.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote_to_bytes

import yaml

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits

CONFIG_FILE_NAME: Final = "ocicrypt.conf"
INTERNAL: Final = "internal"

_MULTIARCH: Final = {
    "x86_64": "x86_64-linux-gnu",
    "amd64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
}


def _internal_directories() -> tuple[str, ...]:
    # Go ocicrypt's GetDefaultModuleDirectories, narrowed: Go also allows the whole /usr/lib/<triplet>/,
    # we only allow its softhsm/ and pkcs11/ subdirectories.
    dirs = ["/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/local/lib/pkcs11", "/usr/lib/softhsm"]
    triplet = _MULTIARCH.get(platform.machine().lower())
    if triplet:
        dirs += [f"/usr/lib/{triplet}/softhsm", f"/usr/lib/{triplet}/pkcs11"]
    return tuple(dirs)


INTERNAL_MODULE_DIRECTORIES: Final = _internal_directories()
"""What ``internal`` means in ``module-directories`` (Fedora, RHEL, openSUSE, Arch, Debian, Ubuntu)."""

# RFC 7512 §2.3: pk11-v-res / pct-encoded; a '%' must start a two-digit hex escape.
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LIBRARY_VERSION: Final = re.compile(r"[0-9]+(\.[0-9]+)?")
_OBJECT_TYPES: Final = frozenset({"public", "private", "cert", "secret-key", "data"})
_MAX_SLOT_ID: Final = 0xFFFFFFFF  # CK_SLOT_ID is 32 bits in Go ocicrypt's check


def _unquote(value: str, name: str, source: str) -> bytes:
    if _BAD_PERCENT.search(value):
        msg = f"{source}: pkcs11 URI attribute {name!r} has a malformed percent-escape"
        raise ConfigError(msg)
    # RFC 7512 has no '+'-for-space rule (Go's url.QueryUnescape has one; we follow the RFC).
    return unquote_to_bytes(value)


def _text(value: bytes, name: str, source: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"{source}: pkcs11 URI attribute {name!r} is not UTF-8"
        raise ConfigError(msg) from e


def _split_attributes(part: str, separator: str, where: str, source: str) -> dict[str, bytes]:
    attributes: dict[str, bytes] = {}
    if not part:
        return attributes
    for item in part.split(separator):
        name, eq, value = item.partition("=")
        if not eq or not name or "=" in value:
            # SECURITY: only the name is echoed; the value may be a PIN.
            msg = f"{source}: malformed pkcs11 URI {where} attribute {name!r}"
            raise ConfigError(msg)
        if name in attributes:
            msg = f"{source}: duplicate pkcs11 URI {where} attribute {name!r}"
            raise ConfigError(msg)
        attributes[name] = _unquote(value, name, source)
    return attributes


@dataclass(frozen=True, slots=True)
class Pkcs11Uri:
    """A parsed RFC 7512 ``pkcs11:`` URI, as ocicrypt uses it.

    ``key_id`` is the raw ``id`` bytes (CKA_ID); ``object_label`` the ``object`` (CKA_LABEL);
    ``object_type`` the ``type``. Attributes ocicrypt does not use are kept, decoded, in
    ``other_path`` and ``other_query``.
    """

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    key_id: bytes | None = None
    object_label: str | None = None
    object_type: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    pin_source: str | None = None
    module_name: str | None = None
    module_path: str | None = None
    other_path: tuple[tuple[str, str], ...] = ()
    other_query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str) -> Pkcs11Uri:
        """Parse ``pkcs11:PATH[?QUERY]`` (path attributes split by ``;``, query attributes by ``&``).

        Args:
            text: The URI.
            source: Where it came from (the key file), for messages.

        Raises:
            ConfigError: the URI is malformed: no ``pkcs11:`` prefix, several ``?``, an attribute without
                ``=``, a duplicate attribute, a bad percent-escape, a non-numeric ``slot-id``, an unknown
                ``type``, both ``pin-value`` and ``pin-source``, or a relative ``module-path``.
        """
        if not text.startswith("pkcs11:"):
            msg = f"{source}: not a pkcs11 URI (missing the 'pkcs11:' prefix)"
            raise ConfigError(msg)
        path_part, question, query_part = text[len("pkcs11:") :].partition("?")
        if "?" in query_part:
            msg = f"{source}: malformed pkcs11 URI (more than one '?')"
            raise ConfigError(msg)
        if question and not query_part:
            msg = f"{source}: malformed pkcs11 URI (empty query after '?')"
            raise ConfigError(msg)
        path = _split_attributes(path_part, ";", "path", source)
        query = _split_attributes(query_part, "&", "query", source)

        def text_of(attributes: dict[str, bytes], name: str) -> str | None:
            value = attributes.pop(name, None)
            return None if value is None else _text(value, name, source)

        slot_text = text_of(path, "slot-id")
        slot_id: int | None = None
        if slot_text is not None:
            if not slot_text.isdigit() or not slot_text.isascii() or int(slot_text) > _MAX_SLOT_ID:
                msg = f"{source}: pkcs11 URI slot-id {slot_text!r} is not a 32-bit unsigned number"
                raise ConfigError(msg)
            slot_id = int(slot_text)
        object_type = text_of(path, "type")
        if object_type is not None and object_type not in _OBJECT_TYPES:
            msg = f"{source}: pkcs11 URI type {object_type!r} is not one of {', '.join(sorted(_OBJECT_TYPES))}"
            raise ConfigError(msg)
        uri = cls(
            token=text_of(path, "token"),
            manufacturer=text_of(path, "manufacturer"),
            serial=text_of(path, "serial"),
            model=text_of(path, "model"),
            slot_id=slot_id,
            key_id=path.pop("id", None),
            object_label=text_of(path, "object"),
            object_type=object_type,
            pin_value=text_of(query, "pin-value"),
            pin_source=text_of(query, "pin-source"),
            module_name=text_of(query, "module-name"),
            module_path=text_of(query, "module-path"),
            other_path=tuple((k, _text(v, k, source)) for k, v in path.items()),
            other_query=tuple((k, _text(v, k, source)) for k, v in query.items()),
        )
        uri._validate(source)
        return uri

    def _validate(self, source: str) -> None:
        library_version = dict(self.other_path).get("library-version")
        if library_version is not None and not _LIBRARY_VERSION.fullmatch(library_version):
            msg = f"{source}: pkcs11 URI library-version {library_version!r} is malformed"
            raise ConfigError(msg)
        # RFC 7512 §2.4: pin-source and pin-value are mutually exclusive.
        if self.pin_value is not None and self.pin_source is not None:
            msg = f"{source}: pkcs11 URI must not have both pin-value and pin-source"
            raise ConfigError(msg)
        if self.module_path is not None and not self.module_path.startswith("/"):
            msg = f"{source}: pkcs11 URI module-path {self.module_path!r} must be absolute"
            raise ConfigError(msg)

    def describe(self) -> str:
        """The key's identity for messages: token/slot and object/id, never the PIN."""
        parts = []
        if self.token is not None:
            parts.append(f"token={self.token}")
        if self.slot_id is not None:
            parts.append(f"slot-id={self.slot_id}")
        if self.object_label is not None:
            parts.append(f"object={self.object_label}")
        if self.key_id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.key_id))
        return ";".join(parts)

    def read_pin(self, source: str, *, limits: Limits = DEFAULT_LIMITS) -> str | None:
        """The PIN: ``pin-value``, or the whole content of the ``pin-source`` file (as Go: no stripping), at most
        ``limits.max_key_file_bytes``.

        Raises:
            ConfigError: ``pin-source`` is not an absolute path or ``file:`` URI, or cannot be read.
        """
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is None:
            return None
        path = self.pin_source
        for prefix in ("file://", "file:"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        if not path.startswith("/"):
            msg = f"{source}: pkcs11 pin-source must be an absolute path or a file: URI"
            raise ConfigError(msg)
        limit = limits.max_key_file_bytes
        try:
            with Path(path).open("rb") as f:
                data = f.read(limit + 1)
        except OSError as e:
            msg = f"{source}: cannot read the pkcs11 pin-source file {path}"
            raise ConfigError(msg) from e
        if len(data) > limit:
            msg = f"{source}: the pkcs11 pin-source file {path} is larger than {limit} bytes"
            raise ConfigError(msg)
        return _text(data, "pin-source", source)


@dataclass(frozen=True, slots=True)
class Pkcs11KeyFile:
    """A PKCS#11 key file: the key's URI and the environment its module needs (e.g. ``SOFTHSM2_CONF``)."""

    uri: Pkcs11Uri
    module_env: Mapping[str, str]
    source: str


def _mapping(value: object, what: str, source: str) -> Mapping[object, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"{source}: {what} must be a mapping"
        raise ConfigError(msg)
    return value


def load_pkcs11_key_file(data: bytes, source: str, *, limits: Limits = DEFAULT_LIMITS) -> Pkcs11KeyFile | None:
    """Load a PKCS#11 key file, or return ``None`` if ``data`` is not one.

    ``data`` is "not one" unless it is UTF-8 YAML (or JSON) whose top level is a mapping with a ``pkcs11``
    mapping in it.

    Raises:
        ConfigError: it is a key file but ``pkcs11.uri`` is missing or malformed, or ``module.env`` is not a
            mapping of strings.
    """
    # Cheap rejection first: PEM, DER, keyrings and JWKs never mention pkcs11 at the top level.
    if b"pkcs11" not in data or len(data) > limits.max_key_file_bytes:
        return None
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(document, Mapping) or not isinstance(document.get("pkcs11"), Mapping):
        return None
    uri_text = document["pkcs11"].get("uri")
    if not isinstance(uri_text, str):
        msg = f"{source}: PKCS#11 key file has no pkcs11.uri string"
        raise ConfigError(msg)
    uri = Pkcs11Uri.parse(uri_text.strip(), source)
    env: dict[str, str] = {}
    for name, value in _mapping(
        _mapping(document.get("module"), "module", source).get("env"), "module.env", source
    ).items():
        if not isinstance(name, str) or not isinstance(value, str):
            msg = f"{source}: module.env entries must be strings (quote numbers)"
            raise ConfigError(msg)
        if not name or "=" in name or "\0" in name or "\0" in value:
            msg = f"{source}: module.env has an invalid variable name or value for {name!r}"
            raise ConfigError(msg)
        env[name] = value
    return Pkcs11KeyFile(uri, MappingProxyType(env), source)


@dataclass(frozen=True, slots=True)
class Pkcs11ModuleConfig:
    """The module policy: where modules are searched and which module paths may be loaded.

    ``module_directories`` has ``internal`` already expanded. An ``allowed_module_paths`` entry ending in
    ``/`` allows every file directly inside that directory; other entries are exact file paths.
    """

    module_directories: tuple[str, ...]
    allowed_module_paths: tuple[str, ...]


def _string_list(value: object, what: str, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        msg = f"{source}: pkcs11.{what} must be a list of paths"
        raise ConfigError(msg)
    return list(value)


def _internal_config() -> Pkcs11ModuleConfig:
    # Go's OCICRYPT_CONFIG=internal: the distribution directories, both searched and allowed.
    return Pkcs11ModuleConfig(INTERNAL_MODULE_DIRECTORIES, tuple(d + "/" for d in INTERNAL_MODULE_DIRECTORIES))


def default_pkcs11_config_paths(env: Mapping[str, str]) -> list[str]:
    """The candidate ``ocicrypt.conf`` paths, in the order they are tried.

    ``OCICRYPT_CONFIG`` alone if it is set (a path, or ``internal`` for the built-in policy); otherwise
    ``$XDG_CONFIG_HOME/ocicrypt.conf``, ``$HOME/.config/ocicrypt.conf`` and ``/etc/ocicrypt.conf``.
    Differences from Go ocicrypt: Go falls back to the other paths when ``$OCICRYPT_CONFIG`` does not
    exist (we do not: an explicit setting is never silently replaced), and Go's last path is the
    relative ``etc/ocicrypt.conf`` (a bug; we use ``/etc``).

    Args:
        env: The process environment, passed in by the CLI.
    """
    explicit = env.get("OCICRYPT_CONFIG")
    if explicit:
        return [explicit]
    paths = []
    if env.get("XDG_CONFIG_HOME"):
        paths.append(str(Path(env["XDG_CONFIG_HOME"]) / CONFIG_FILE_NAME))
    if env.get("HOME"):
        paths.append(str(Path(env["HOME"]) / ".config" / CONFIG_FILE_NAME))
    paths.append("/etc/" + CONFIG_FILE_NAME)
    return paths


def load_pkcs11_module_config(path: str | None, *, limits: Limits = DEFAULT_LIMITS) -> Pkcs11ModuleConfig | None:
    """Load the module policy from an ``ocicrypt.conf`` YAML file.

    Args:
        path: The file, ``internal`` for the built-in policy, or ``None``.

    Returns:
        The policy; ``None`` if ``path`` is ``None`` or the file does not exist (as Go: not an error).

    Raises:
        ConfigError: the file cannot be read, is too large, is not YAML, or its ``pkcs11`` section is
            malformed.
    """
    if path is None:
        return None
    if path == INTERNAL:
        return _internal_config()
    limit = limits.max_key_file_bytes
    try:
        with Path(path).open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        msg = f"{path}: cannot read the ocicrypt config file"
        raise ConfigError(msg) from e
    if len(data) > limit:
        msg = f"{path}: ocicrypt config file is larger than {limit} bytes"
        raise ConfigError(msg)
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        msg = f"{path}: the ocicrypt config file is not valid YAML"
        raise ConfigError(msg) from e
    section = _mapping(_mapping(document, "the top level", path).get("pkcs11"), "pkcs11", path)
    directories: list[str] = []
    for entry in _string_list(section.get("module-directories"), "module-directories", path):
        directories.extend(INTERNAL_MODULE_DIRECTORIES if entry == INTERNAL else [entry])
    allowed = _string_list(section.get("allowed-module-paths"), "allowed-module-paths", path)
    return Pkcs11ModuleConfig(tuple(directories), tuple(allowed))


def find_pkcs11_module_config(paths: Iterable[str]) -> Pkcs11ModuleConfig | None:
    """The policy from the first of ``paths`` that exists (see :func:`default_pkcs11_config_paths`).

    Raises:
        ConfigError: the first existing file is malformed.
    """
    for path in paths:
        config = load_pkcs11_module_config(path)
        if config is not None:
            return config
    return None


def _collapse(path: str) -> str:
    # Lexical normalisation of an absolute path: '..' cannot climb out of an allowed directory.
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _is_allowed(module: str, config: Pkcs11ModuleConfig) -> bool:
    module = _collapse(module)
    parent = module.rsplit("/", 1)[0] or "/"
    for directory in config.module_directories:
        if _collapse(directory) == parent:
            return True
    for allowed in config.allowed_module_paths:
        if allowed.endswith("/"):
            if _collapse(allowed) == parent:
                return True
        elif _collapse(allowed) == module:
            return True
    return False


def _candidates(name: str) -> list[str]:
    # softhsm2's module is libsofthsm2.so: module-name=softhsm2 finds it as lib<name>.so.
    return [f"lib{name}.so", f"{name}.so", f"lib{name}2.so"]


def resolve_pkcs11_module(uri: Pkcs11Uri, config: Pkcs11ModuleConfig | None, source: str) -> str:
    """The path of the PKCS#11 module a key file's URI asks for, if the policy allows it.

    ``module-path`` naming a file is used as is; naming a directory, it is searched for ``module-name``.
    Without ``module-path``, ``module-name`` is searched in the policy's ``module-directories`` as
    ``lib<name>.so``, ``<name>.so`` and ``lib<name>2.so``.

    Raises:
        ConfigError: there is no policy ("No ocicrypt config file was found"), no module attribute, the
            module does not exist, or the policy does not allow it. Messages name ``source``.
    """
    if config is None:
        msg = (
            f"{source}: No ocicrypt config file was found (set OCICRYPT_CONFIG, or create"
            f" ~/.config/{CONFIG_FILE_NAME} or /etc/{CONFIG_FILE_NAME} with pkcs11.module-directories)"
        )
        raise ConfigError(msg)
    search: tuple[str, ...] = config.module_directories
    if uri.module_path is not None:
        module_path = Path(uri.module_path)
        if module_path.is_file():
            # SECURITY: loading a module runs its code; only modules the policy names are loaded.
            if not _is_allowed(uri.module_path, config):
                msg = f"{source}: pkcs11 module {uri.module_path} is not allowed by the ocicrypt config policy"
                raise ConfigError(msg)
            return _collapse(uri.module_path)
        if not module_path.is_dir():
            msg = f"{source}: pkcs11 module-path {uri.module_path} does not exist"
            raise ConfigError(msg)
        search = (uri.module_path,)
    if not uri.module_name:
        msg = f"{source}: the pkcs11 URI names no module (add module-name=... or module-path=...)"
        raise ConfigError(msg)
    if "/" in uri.module_name or uri.module_name in (".", ".."):
        msg = f"{source}: pkcs11 module-name {uri.module_name!r} must be a plain name"
        raise ConfigError(msg)
    found_disallowed: str | None = None
    for directory in search:
        for candidate in _candidates(uri.module_name):
            path = str(Path(directory) / candidate)
            if not Path(path).is_file():
                continue
            # SECURITY: as above; a module-path directory outside the policy finds nothing loadable.
            if _is_allowed(path, config):
                return _collapse(path)
            found_disallowed = found_disallowed or path
    if found_disallowed is not None:
        msg = f"{source}: pkcs11 module {found_disallowed} is not allowed by the ocicrypt config policy"
        raise ConfigError(msg)
    where = ", ".join(search) or "no module-directories configured"
    msg = f"{source}: pkcs11 module {uri.module_name!r} not found ({where})"
    raise ConfigError(msg)
