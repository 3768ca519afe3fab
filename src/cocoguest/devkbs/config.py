"""The dev KBS configuration, a TOML file in Trustee's shape (kbs-protocol.md §1.1, §12 legacy, §13 legacy).

```toml
[http_server]
sockets = ["127.0.0.1:8080"]       # default
insecure_http = false              # default: HTTPS, needs private_key and certificate
private_key = "/path/key.pem"
certificate = "/path/cert.pem"
payload_request_size = 2           # MiB, default 2

[admin]
insecure_api = false               # default: admin calls need a Bearer JWT signed by auth_public_key
auth_public_key = "/path/admin.pub"   # Ed25519 SubjectPublicKeyInfo PEM

[attestation_token]
signing_key = "/path/token.pem"    # ES256 (P-256) PEM; default: an ephemeral key per process
duration_min = 5                   # token lifetime, default 5 minutes
extra_teekey_paths = []            # JSON pointers tried first for the tee-pubkey claim

[attestation_service]
timeout = 5                        # session lifetime in minutes, default 5

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "/opt/confidential-containers/kbs/repository"

[policy_engine]
policy_path = "/opt/confidential-containers/kbs/policy.rego"   # created with Trustee's default if missing
```

Unknown tables and keys are ignored (Trustee configurations carry AS and RVPS sections this KBS does not need);
known keys of the wrong type are errors naming the key. Relative paths are relative to the config file.

Invariants:
    * Admin authentication is on unless ``insecure_api = true``; ``auth_public_key`` is then required.
    * HTTPS unless ``insecure_http = true``; ``private_key`` and ``certificate`` are then required.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits, MiB

DEFAULT_SOCKET: Final = "127.0.0.1:8080"
DEFAULT_RESOURCE_DIR: Final = Path("/opt/confidential-containers/kbs/repository")
DEFAULT_POLICY_PATH: Final = Path("/opt/confidential-containers/kbs/policy.rego")
_MAX_CONFIG_BYTES: Final = 1 * MiB
_SECONDS_PER_MINUTE: Final = 60
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DevKbsConfig:
    """The dev KBS settings (see the module docstring for the TOML keys)."""

    sockets: tuple[tuple[str, int], ...] = (("127.0.0.1", 8080),)
    insecure_http: bool = False
    private_key: Path | None = None
    certificate: Path | None = None
    payload_request_bytes: int = DEFAULT_LIMITS.devkbs_max_request_bytes
    insecure_api: bool = False
    auth_public_key: Path | None = None
    token_signing_key: Path | None = None
    token_lifetime_s: int = DEFAULT_LIMITS.devkbs_token_lifetime_s
    extra_teekey_paths: tuple[str, ...] = ()
    session_lifetime_s: float = DEFAULT_LIMITS.devkbs_session_lifetime_s
    resource_dir: Path = DEFAULT_RESOURCE_DIR
    policy_path: Path = DEFAULT_POLICY_PATH
    limits: Limits = field(default=DEFAULT_LIMITS)

    def __post_init__(self) -> None:
        """Check the invariants of the module docstring.

        Raises:
            ConfigError: HTTPS without key or certificate; admin auth without a public key.
        """
        if not self.insecure_http and (self.private_key is None or self.certificate is None):
            msg = "dev KBS config: [http_server] needs private_key and certificate unless insecure_http = true"
            raise ConfigError(msg)
        if not self.insecure_api and self.auth_public_key is None:
            msg = "dev KBS config: [admin] needs auth_public_key unless insecure_api = true"
            raise ConfigError(msg)
        if not self.sockets:
            msg = "dev KBS config: [http_server] sockets is empty"
            raise ConfigError(msg)


def parse_socket(text: str, where: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        ConfigError: not that shape (names ``where``).
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"{where}: {text[:100]!r} is not HOST:PORT"
        raise ConfigError(msg)
    return host, int(port)


def _table(document: dict[str, object], name: str) -> dict[str, object]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        msg = f"dev KBS config: [{name}] must be a table"
        raise ConfigError(msg)
    return value


def _typed(table: dict[str, object], section: str, key: str, kind: type[T], default: T) -> T:
    value = table.get(key, default)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        msg = f"dev KBS config: [{section}] {key} must be {kind.__name__}"
        raise ConfigError(msg)
    return value


def _path(table: dict[str, object], section: str, key: str, base: Path) -> Path | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        msg = f"dev KBS config: [{section}] {key} must be a path"
        raise ConfigError(msg)
    return base / value


def _positive(value: int, section: str, key: str) -> int:
    if value <= 0:
        msg = f"dev KBS config: [{section}] {key} must be positive"
        raise ConfigError(msg)
    return value


def _resource_dir(document: dict[str, object], base: Path) -> Path:
    plugins = document.get("plugins", [])
    if not isinstance(plugins, list):
        msg = "dev KBS config: [[plugins]] must be an array of tables"
        raise ConfigError(msg)
    resource_dir = DEFAULT_RESOURCE_DIR
    for plugin in plugins:
        if not isinstance(plugin, dict):
            msg = "dev KBS config: [[plugins]] must be an array of tables"
            raise ConfigError(msg)
        if plugin.get("name") != "resource":
            msg = f"dev KBS config: plugin {str(plugin.get('name'))[:40]!r} is not supported (only 'resource')"
            raise ConfigError(msg)
        if plugin.get("type", "LocalFs") != "LocalFs":
            msg = f"dev KBS config: resource plugin type {str(plugin.get('type'))[:40]!r} is not LocalFs"
            raise ConfigError(msg)
        resource_dir = _path(plugin, "plugins", "dir_path", base) or DEFAULT_RESOURCE_DIR
    return resource_dir


def load_config(path: Path, limits: Limits = DEFAULT_LIMITS) -> DevKbsConfig:
    """The configuration in the TOML file ``path``.

    Raises:
        ConfigError: unreadable, not TOML, or a known key with the wrong type or value (names the key).
    """
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
    except OSError as e:
        msg = f"dev KBS config {path}: {e.strerror}"
        raise ConfigError(msg) from e
    if len(raw) > _MAX_CONFIG_BYTES:
        msg = f"dev KBS config {path}: larger than {_MAX_CONFIG_BYTES} bytes"
        raise ConfigError(msg)
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        msg = f"dev KBS config {path}: not TOML ({e})"
        raise ConfigError(msg) from e
    return config_from_document(document, path.parent, limits)


def config_from_document(document: dict[str, object], base: Path, limits: Limits = DEFAULT_LIMITS) -> DevKbsConfig:
    """The configuration of a parsed TOML document; relative paths resolve against ``base``.

    Raises:
        ConfigError: a known key with the wrong type or value.
    """
    http = _table(document, "http_server")
    admin = _table(document, "admin")
    token = _table(document, "attestation_token")
    service = _table(document, "attestation_service")
    engine = _table(document, "policy_engine")
    sockets_raw = _typed(http, "http_server", "sockets", list, [DEFAULT_SOCKET])
    sockets = tuple(
        parse_socket(s, "dev KBS config: [http_server] sockets") if isinstance(s, str) else parse_socket("", "")
        for s in sockets_raw
    )
    size_mib = _positive(
        _typed(http, "http_server", "payload_request_size", int, 2), "http_server", "payload_request_size"
    )
    teekey_paths = _typed(token, "attestation_token", "extra_teekey_paths", list, [])
    if not all(isinstance(p, str) for p in teekey_paths):
        msg = "dev KBS config: [attestation_token] extra_teekey_paths must be strings"
        raise ConfigError(msg)
    duration_min = _positive(
        _typed(token, "attestation_token", "duration_min", int, 5), "attestation_token", "duration_min"
    )
    timeout_min = _positive(_typed(service, "attestation_service", "timeout", int, 5), "attestation_service", "timeout")
    return DevKbsConfig(
        sockets=sockets,
        insecure_http=_typed(http, "http_server", "insecure_http", bool, False),
        private_key=_path(http, "http_server", "private_key", base),
        certificate=_path(http, "http_server", "certificate", base),
        payload_request_bytes=size_mib * MiB,
        insecure_api=_typed(admin, "admin", "insecure_api", bool, False),
        auth_public_key=_path(admin, "admin", "auth_public_key", base),
        token_signing_key=_path(token, "attestation_token", "signing_key", base),
        token_lifetime_s=duration_min * _SECONDS_PER_MINUTE,
        extra_teekey_paths=tuple(str(p) for p in teekey_paths),
        session_lifetime_s=float(timeout_min * _SECONDS_PER_MINUTE),
        resource_dir=_resource_dir(document, base),
        policy_path=_path(engine, "policy_engine", "policy_path", base) or DEFAULT_POLICY_PATH,
        limits=limits,
    )
