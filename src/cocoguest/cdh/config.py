"""The CDH config (guest-components.md §5.3, §9.2): TOML or JSON by file extension, or defaults from text.

Keys as upstream: ``socket``, ``[kbc] name/url/kbs_cert``, ``[aa] aa_socket``, ``[[credentials]]
resource_uri/path``, ``skip_sealed_secret_verification``, ``[log] level``, ``[image]`` (image-rs ImageConfig keys).
cocoguest extensions: ``[image] insecure_accept_anything`` (pulls without a policy; warns on every pull),
``sealed_secret_key_dir`` and ``local_kms_dir`` (the development ``local`` KMS plugin's directory).

Without a file (:func:`default_cdh_config`): the KBC from ``aa_kbc_params`` text (``AA_KBC_PARAMS``, then
``agent.aa_kbc_params=``), credentials from ``cdh.kbs_resources=<uri>::<path>,...``, the policy from
``agent.image_policy_file=`` when ``agent.enable_signature_verification=true``; pure functions over text.

Invariants:
    * Unknown keys are errors naming the key; every error names the source.
    * SECURITY: a credential ``path`` lies under ``/run/confidential-containers/cdh/kbs`` with no ``.``/``..``
      components (as upstream); anything else is refused at load time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from cocoguest.errors import ConfigError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.kbc.params import AaKbcParams, parse_aa_kbc_params
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_SOCKET: Final = "unix:///run/confidential-containers/cdh.sock"
DEFAULT_AA_SOCKET: Final = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
DEFAULT_WORK_DIR: Final = Path("/run/kata-containers/image")
CREDENTIALS_ROOT: Final = PurePosixPath("/run/confidential-containers/cdh/kbs")
DEFAULT_SEALED_SECRET_KEY_DIR: Final = Path("/run/confidential-containers/cdh/sealed-secret")
KBS_RESOURCES_KEY: Final = "cdh.kbs_resources="
_CDH_KBCS: Final = ("cc_kbc", "offline_fs_kbc", "sample_kbc")


@dataclass(frozen=True)
class Credential:
    """A KBS resource written to ``path`` at start-up."""

    resource_uri: str
    path: Path


@dataclass(frozen=True)
class ImagePullProxy:
    """``[image.image_pull_proxy]``."""

    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None


@dataclass(frozen=True)
class ImageConfig:
    """``[image]``: image-rs's ImageConfig keys (guest-components.md §9.2)."""

    work_dir: Path = DEFAULT_WORK_DIR
    image_security_policy_uri: str | None = None
    sigstore_config_uri: str | None = None
    authenticated_registry_credentials_uri: str | None = None
    registry_configuration_uri: str | None = None
    max_concurrent_layer_downloads_per_image: int = 3
    image_pull_proxy: ImagePullProxy | None = None
    extra_root_certificates: tuple[str, ...] = ()
    insecure_accept_anything: bool = False
    """cocoguest extension: pull without a policy (upstream's default; here explicit, warned on every pull)."""


@dataclass(frozen=True)
class CdhConfig:
    """One CDH's configuration."""

    kbc: AaKbcParams
    socket: str = DEFAULT_SOCKET
    kbs_cert: str | None = None
    aa_socket: str = DEFAULT_AA_SOCKET
    credentials: tuple[Credential, ...] = ()
    skip_sealed_secret_verification: bool = False
    image: ImageConfig = field(default_factory=ImageConfig)
    log_level: str = "info"
    sealed_secret_key_dir: Path = DEFAULT_SEALED_SECRET_KEY_DIR
    local_kms_dir: Path | None = None
    source: str = "defaults"


def check_credential_path(path: str, source: str) -> Path:
    """``path`` if it is under :data:`CREDENTIALS_ROOT` with no ``.``/``..`` components.

    Raises:
        ConfigError: otherwise (names the path and the source).
    """
    pure = PurePosixPath(path)
    parts = path.split("/")
    # SECURITY: credentials are written by the CDH; confine them to their directory (as upstream).
    if not pure.is_absolute() or any(p in (".", "..") for p in parts) or not pure.is_relative_to(CREDENTIALS_ROOT):
        msg = f"CDH config {source}: credential path {path[:200]!r} must lie under {CREDENTIALS_ROOT} without . or .."
        raise ConfigError(msg)
    if pure == CREDENTIALS_ROOT:
        msg = f"CDH config {source}: credential path {path!r} names the directory itself"
        raise ConfigError(msg)
    return Path(path)


def kbs_resources_from_cmdline(cmdline: str, source: str = "the kernel command line") -> tuple[Credential, ...]:
    """``cdh.kbs_resources=<uri>::<path>,<uri>::<path>`` (the first occurrence) as credentials.

    Raises:
        ConfigError: an entry without ``::`` or a path outside the credentials directory.
    """
    for word in cmdline.split():
        if word.startswith(KBS_RESOURCES_KEY):
            result = []
            for entry in filter(None, word[len(KBS_RESOURCES_KEY) :].split(",")):
                uri, sep, path = entry.partition("::")
                if not sep:
                    msg = f"{source}: cdh.kbs_resources entry {entry[:200]!r} is not <uri>::<path>"
                    raise ConfigError(msg)
                result.append(Credential(uri, check_credential_path(path, source)))
            return tuple(result)
    return ()


def image_config_from_cmdline(cmdline: str) -> ImageConfig:
    """The ``[image]`` defaults from kernel parameters (``agent.image_policy_file`` is honoured only with
    ``agent.enable_signature_verification=true``; ``agent.image_registry_auth``; ``agent.*_proxy``)."""
    params: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("agent.") and key not in params:
            params[key] = value
    verify = params.get("agent.enable_signature_verification", "").lower() == "true"
    proxy = ImagePullProxy(
        params.get("agent.https_proxy"), params.get("agent.http_proxy"), params.get("agent.no_proxy")
    )
    return ImageConfig(
        image_security_policy_uri=params.get("agent.image_policy_file") if verify else None,
        authenticated_registry_credentials_uri=params.get("agent.image_registry_auth"),
        image_pull_proxy=proxy if proxy != ImagePullProxy() else None,
    )


def default_cdh_config(kbc: AaKbcParams, cmdline: str | None) -> CdhConfig:
    """The config without ``-c``: ``kbc`` (already resolved from AA_KBC_PARAMS / cmdline) plus kernel parameters."""
    text = cmdline or ""
    return CdhConfig(
        kbc=kbc,
        credentials=kbs_resources_from_cmdline(text),
        image=image_config_from_cmdline(text),
        source=f"defaults (aa_kbc_params from {kbc.source})",
    )


def load_cdh_config(path: Path, *, cmdline: str | None = None, limits: Limits = DEFAULT_LIMITS) -> CdhConfig:
    """Read ``path`` (``.json`` is JSON, anything else TOML); ``cdh.kbs_resources`` on ``cmdline`` is appended.

    Raises:
        ConfigError: unreadable, too large or malformed (names the file and the key).
    """
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_cdh_config_bytes + 1)
    except OSError as e:
        msg = f"CDH config {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_cdh_config_bytes:
        msg = f"CDH config {path}: larger than {limits.max_cdh_config_bytes} bytes"
        raise ConfigError(msg)
    config = parse_cdh_config(data, str(path), json_format=path.suffix == ".json", limits=limits)
    extra = kbs_resources_from_cmdline(cmdline) if cmdline else ()
    if extra:
        from dataclasses import replace  # noqa: PLC0415

        config = replace(config, credentials=config.credentials + extra)
    return config


_TOP: Final = frozenset(
    {
        "socket",
        "kbc",
        "aa",
        "credentials",
        "skip_sealed_secret_verification",
        "image",
        "log",
        "sealed_secret_key_dir",
        "local_kms_dir",
    }
)
_IMAGE: Final = frozenset(
    {
        "work_dir",
        "image_security_policy_uri",
        "sigstore_config_uri",
        "authenticated_registry_credentials_uri",
        "registry_configuration_uri",
        "max_concurrent_layer_downloads_per_image",
        "image_pull_proxy",
        "extra_root_certificates",
        "insecure_accept_anything",
    }
)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"CDH config {self.source}: {key} {problem}")

    def keys(self, table: Mapping[str, object], known: frozenset[str], prefix: str) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            raise self.fail(prefix + unknown[0][:64], f"is not a known key (known: {', '.join(sorted(known))})")

    def table(self, parent: Mapping[str, object], key: str, prefix: str = "") -> Mapping[str, object] | None:
        value = parent.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.fail(prefix + key, "must be a table")
        return value

    def text(self, table: Mapping[str, object], key: str, prefix: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(prefix + key, "must be a string")
        return value

    def flag(self, table: Mapping[str, object], key: str, prefix: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(prefix + key, "must be true or false")
        return value


def _load(untrusted: bytes, source: str, *, json_format: bool, limits: Limits) -> dict[str, object]:
    if json_format:
        return load_object(untrusted, f"CDH config {source}", ConfigError, limits=limits)
    try:
        return tomllib.loads(untrusted.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        msg = f"CDH config {source}: not valid UTF-8 TOML ({e})"
        raise ConfigError(msg) from e


def _image(reader: _Reader, table: Mapping[str, object] | None) -> ImageConfig:
    if table is None:
        return ImageConfig()
    p = "image."
    reader.keys(table, _IMAGE, p)
    concurrent = table.get("max_concurrent_layer_downloads_per_image", 3)
    if not isinstance(concurrent, int) or isinstance(concurrent, bool) or not 1 <= concurrent <= 64:
        raise reader.fail(p + "max_concurrent_layer_downloads_per_image", "must be an integer from 1 to 64")
    roots = table.get("extra_root_certificates", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise reader.fail(p + "extra_root_certificates", "must be a list of PEM strings")
    proxy_table = reader.table(table, "image_pull_proxy", p)
    proxy = None
    if proxy_table is not None:
        pp = p + "image_pull_proxy."
        reader.keys(proxy_table, frozenset({"https_proxy", "http_proxy", "no_proxy"}), pp)
        proxy = ImagePullProxy(
            reader.text(proxy_table, "https_proxy", pp),
            reader.text(proxy_table, "http_proxy", pp),
            reader.text(proxy_table, "no_proxy", pp),
        )
    work_dir = reader.text(table, "work_dir", p)
    return ImageConfig(
        work_dir=Path(work_dir) if work_dir else DEFAULT_WORK_DIR,
        image_security_policy_uri=reader.text(table, "image_security_policy_uri", p),
        sigstore_config_uri=reader.text(table, "sigstore_config_uri", p),
        authenticated_registry_credentials_uri=reader.text(table, "authenticated_registry_credentials_uri", p),
        registry_configuration_uri=reader.text(table, "registry_configuration_uri", p),
        max_concurrent_layer_downloads_per_image=concurrent,
        image_pull_proxy=proxy,
        extra_root_certificates=tuple(str(r) for r in roots),
        insecure_accept_anything=reader.flag(table, "insecure_accept_anything", p),
    )


def _credentials(reader: _Reader, value: object) -> tuple[Credential, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise reader.fail("credentials", "must be an array of tables")
    result = []
    for index, entry in enumerate(value):
        prefix = f"credentials[{index}]."
        if not isinstance(entry, dict):
            raise reader.fail(f"credentials[{index}]", "must be a table")
        reader.keys(entry, frozenset({"resource_uri", "path"}), prefix)
        uri, path = reader.text(entry, "resource_uri", prefix), reader.text(entry, "path", prefix)
        if uri is None or path is None:
            raise reader.fail(f"credentials[{index}]", "needs resource_uri and path")
        result.append(Credential(uri, check_credential_path(path, reader.source)))
    return tuple(result)


def parse_cdh_config(untrusted: bytes, source: str, *, json_format: bool, limits: Limits = DEFAULT_LIMITS) -> CdhConfig:
    """Parse a CDH config document (see the module docstring).

    Raises:
        ConfigError: malformed document, unknown key, missing ``[kbc] name``, bad credential path.
    """
    document = _load(untrusted, source, json_format=json_format, limits=limits)
    reader = _Reader(source)
    reader.keys(document, _TOP, "")
    kbc_table = reader.table(document, "kbc")
    if kbc_table is None:
        raise reader.fail("[kbc]", "is required")
    reader.keys(kbc_table, frozenset({"name", "url", "kbs_cert"}), "kbc.")
    name = reader.text(kbc_table, "name", "kbc.")
    if name not in _CDH_KBCS:
        raise reader.fail("kbc.name", f"must be one of {', '.join(_CDH_KBCS)}")
    url = reader.text(kbc_table, "url", "kbc.") or ""
    kbc = parse_aa_kbc_params(f"{name}::{url}", f"CDH config {source}")
    aa = reader.table(document, "aa") or {}
    reader.keys(aa, frozenset({"aa_socket"}), "aa.")
    log = reader.table(document, "log") or {}
    reader.keys(log, frozenset({"level"}), "log.")
    key_dir = reader.text(document, "sealed_secret_key_dir", "")
    local_kms = reader.text(document, "local_kms_dir", "")
    return CdhConfig(
        kbc=kbc,
        socket=reader.text(document, "socket", "") or DEFAULT_SOCKET,
        kbs_cert=reader.text(kbc_table, "kbs_cert", "kbc."),
        aa_socket=reader.text(aa, "aa_socket", "aa.") or DEFAULT_AA_SOCKET,
        credentials=_credentials(reader, document.get("credentials")),
        skip_sealed_secret_verification=reader.flag(document, "skip_sealed_secret_verification", ""),
        image=_image(reader, reader.table(document, "image")),
        log_level=(reader.text(log, "level", "log.") or "info").lower(),
        sealed_secret_key_dir=Path(key_dir) if key_dir else DEFAULT_SEALED_SECRET_KEY_DIR,
        local_kms_dir=Path(local_kms) if local_kms else None,
        source=source,
    )
