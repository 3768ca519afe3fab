"""The ocicrypt key provider config file (ocicrypt.md §5.5).

Format: ``{"key-providers": {"<name>": {"cmd": {"path": "...", "args": [...]}} | {"grpc": "host:port"} |
{"ttrpc": "unix:///..."} | {"native": "attestation_agent"}}}``. Go ocicrypt knows ``cmd`` and ``grpc``
(plus ``grpc-tls`` since v1.3.0); ocicrypt-rs adds ``ttrpc`` and ``native``.

Invariants:
    * The caller passes the path explicitly (the CLI reads ``$OCICRYPT_KEYPROVIDER_CONFIG``); this module
      never reads the environment.
    * Each returned :class:`KeyProviderEntry` has exactly one transport set, chosen in the order
      ``cmd`` > ``grpc`` > ``ttrpc`` > ``native`` (Go: ``cmd`` wins over ``grpc``; ocicrypt-rs uses the same
      order). The others are dropped with a warning.
    * Every error is a :class:`~cocoguest.errors.ConfigError` (or ``UnsupportedError``) naming the file and,
      where one is at fault, the provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, UnsupportedError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

_TRANSPORTS: Final = ("cmd", "grpc", "ttrpc", "native")


@dataclass(frozen=True)
class KeyProviderEntry:
    """One configured key provider; exactly one of ``cmd_path``, ``grpc``, ``ttrpc``, ``native`` is set."""

    name: str
    cmd_path: str | None
    cmd_args: tuple[str, ...]
    grpc: str | None
    ttrpc: str | None
    native: str | None


def _read(path: str, limits: Limits) -> bytes:
    limit = limits.max_key_file_bytes
    try:
        with Path(path).open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        msg = f"key provider config {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limit:
        msg = f"key provider config {path}: larger than {limit} bytes (max_key_file_bytes)"
        raise ConfigError(msg)
    return data


def _string(value: object, path: str, name: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        msg = f"key provider config {path}: provider {name!r}: {field!r} must be a non-empty string"
        raise ConfigError(msg)
    return value


def _cmd(value: object, path: str, name: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        msg = f"key provider config {path}: provider {name!r}: 'cmd' must be an object with 'path' and 'args'"
        raise ConfigError(msg)
    cmd_path = _string(value.get("path"), path, name, "cmd.path")
    args = value.get("args")
    if args is None:
        return cmd_path, ()
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        msg = f"key provider config {path}: provider {name!r}: 'cmd.args' must be a list of strings"
        raise ConfigError(msg)
    return cmd_path, tuple(args)


def _entry(name: str, value: object, path: str) -> KeyProviderEntry:
    if not name:
        msg = f"key provider config {path}: empty provider name"
        raise ConfigError(msg)
    if not isinstance(value, dict):
        msg = f"key provider config {path}: provider {name!r} must be an object"
        raise ConfigError(msg)
    present = [t for t in _TRANSPORTS if value.get(t) is not None]
    if not present:
        # docs/keyprovider.md's first example puts "path" directly under the provider; Go ignores it.
        hint = " ('path' belongs under 'cmd')" if "path" in value else ""
        msg = f"key provider config {path}: provider {name!r} has no cmd, grpc, ttrpc or native transport{hint}"
        raise ConfigError(msg)
    chosen = present[0]
    if len(present) > 1:
        _logger.warning("key provider config %s: provider %r: using %s, ignoring %s", path, name, chosen, present[1:])
    if chosen == "cmd":
        cmd_path, cmd_args = _cmd(value["cmd"], path, name)
        return KeyProviderEntry(name, cmd_path, cmd_args, None, None, None)
    target = _string(value[chosen], path, name, chosen)
    if chosen == "grpc":
        if value.get("grpc-tls") is not None:
            # SECURITY: Go ≥ v1.3.0 dials TLS here; older Go (and we) would silently send layer keys in clear.
            msg = f"key provider config {path}: provider {name!r}: 'grpc-tls' is not supported"
            raise UnsupportedError(msg)
        return KeyProviderEntry(name, None, (), target, None, None)
    if chosen == "ttrpc":
        return KeyProviderEntry(name, None, (), None, target, None)
    return KeyProviderEntry(name, None, (), None, None, target)


def load_keyprovider_config(
    path: str, data: bytes | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, KeyProviderEntry]:
    """Parse a key provider config file.

    Args:
        path: the file to read, and the name used in error messages.
        data: the file's content, if the caller already has it (then ``path`` is not read).
        limits: ``max_key_file_bytes`` and the JSON caps.

    Returns:
        The providers by name. A file without ``key-providers`` yields no providers (as Go).

    Raises:
        ConfigError: the file cannot be read, is not JSON, or a provider entry is malformed.
        UnsupportedError: a provider uses ``grpc-tls``.
    """
    raw = _read(path, limits) if data is None else data
    obj = load_object(raw, f"key provider config {path}", ConfigError, limits=limits)
    providers = obj.get("key-providers")
    if providers is None:
        return {}
    if not isinstance(providers, dict):
        msg = f"key provider config {path}: 'key-providers' must be an object"
        raise ConfigError(msg)
    return {name: _entry(name, value, path) for name, value in providers.items()}
