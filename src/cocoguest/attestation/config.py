"""The attestation agent's configuration (guest-components.md §5.1): one frozen model, TOML or JSON.

Shape (upstream's ``config.example.toml``; the format is chosen by the file extension, ``.json`` or ``.toml``)::

    allow_sample_attester = false          # cocoguest only: development switch (see below)

    [token_configs.coco_as]
    url = "http://127.0.0.1:8000"

    [token_configs.kbs]
    url = "https://127.0.0.1:8080"
    cert = "-----BEGIN CERTIFICATE-----..."  # optional extra root CA (PEM text)
    tee_key_algorithm = "ECDH-ES+A256KW-P256"

    [eventlog_config]
    init_pcr = 17
    enable_eventlog = false

    [log]
    level = "info"

Without a config file, ``token_configs.kbs`` comes from ``aa_kbc_params`` when its KBC is ``cc_kbc``
(:func:`default_aa_config`), as upstream.

Invariants:
    * The file is at most ``Limits.max_aa_config_bytes``; every key is one of the above, with the type shown:
      an unknown key or a wrong type is a :class:`ConfigError` naming the file and the key (stricter than
      upstream's serde, which ignores unknown keys: a misspelt ``enable_eventlog`` must not silently turn
      measurement off).
    * URLs are ``http(s)://host[:port]``; ``init_pcr`` is a PCR number (0-23).
    * SECURITY: ``allow_sample_attester`` defaults to false; it only permits the sample attester when no TEE
      is found (``select_attester``), it never replaces a detected TEE.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cocoguest.attestation.eventlog import DEFAULT_INIT_PCR
from cocoguest.errors import ConfigError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.kbc.params import AaKbcParams
from cocoguest.kbs.tee_key import DEFAULT_TEE_KEY_ALGORITHM, TeeKeyAlgorithm
from cocoguest.limits import DEFAULT_LIMITS, Limits

MAX_PCR: Final = 23
_TOP_KEYS: Final = frozenset({"token_configs", "eventlog_config", "log", "allow_sample_attester"})
_TOKEN_KEYS: Final = frozenset({"kbs", "coco_as"})
_KBS_KEYS: Final = frozenset({"url", "cert", "tee_key_algorithm"})
_COCO_AS_KEYS: Final = frozenset({"url"})
_EVENTLOG_KEYS: Final = frozenset({"init_pcr", "enable_eventlog"})
_LOG_KEYS: Final = frozenset({"level"})
_LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "warning", "error", "off")


@dataclass(frozen=True, slots=True)
class KbsTokenConfig:
    """``[token_configs.kbs]``: where ``GetToken("kbs")`` attests, and with which TEE key."""

    url: str
    cert_pem: bytes | None = None
    tee_key_algorithm: TeeKeyAlgorithm = DEFAULT_TEE_KEY_ALGORITHM


@dataclass(frozen=True, slots=True)
class CocoAsTokenConfig:
    """``[token_configs.coco_as]``: the attestation service of ``GetToken("coco_as")``."""

    url: str


@dataclass(frozen=True, slots=True)
class EventLogConfig:
    """``[eventlog_config]``: whether ExtendRuntimeMeasurement is enabled, and its default PCR."""

    init_pcr: int = DEFAULT_INIT_PCR
    enable_eventlog: bool = False


@dataclass(frozen=True, slots=True)
class AaConfig:
    """The whole AA configuration (see the module docstring)."""

    kbs: KbsTokenConfig | None = None
    coco_as: CocoAsTokenConfig | None = None
    eventlog: EventLogConfig = field(default_factory=EventLogConfig)
    allow_sample_attester: bool = False
    log_level: str = "info"
    source: str = "the defaults"
    """Where this configuration came from (for messages)."""


def default_aa_config(params: AaKbcParams | None) -> AaConfig:
    """The configuration without a config file: ``kbs`` from ``aa_kbc_params`` if its KBC is ``cc_kbc``."""
    if params is not None and params.kbc_name == "cc_kbc":
        return AaConfig(kbs=KbsTokenConfig(params.kbs_uri), source=f"aa_kbc_params from {params.source}")
    return AaConfig()


def load_aa_config(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> AaConfig:
    """Read and parse the config file at ``path`` (format by extension: ``.json``, else TOML).

    Raises:
        ConfigError: unreadable, too large, not TOML/JSON, or not the documented shape.
    """
    try:
        with path.open("rb") as f:
            untrusted = f.read(limits.max_aa_config_bytes + 1)
    except OSError as e:
        msg = f"AA config {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(untrusted) > limits.max_aa_config_bytes:
        msg = f"AA config {path}: larger than {limits.max_aa_config_bytes} bytes"
        raise ConfigError(msg)
    return parse_aa_config(untrusted, str(path), json_format=path.suffix.lower() == ".json", limits=limits)


def parse_aa_config(untrusted: bytes, source: str, *, json_format: bool, limits: Limits = DEFAULT_LIMITS) -> AaConfig:
    """Parse an AA config document (see the module docstring).

    Raises:
        ConfigError: malformed; the message names ``source`` and the key at fault.
    """
    document = _load(untrusted, source, json_format=json_format, limits=limits)
    reader = _Reader(source)
    reader.check_keys(document, _TOP_KEYS, "")
    tokens = reader.table(document, "token_configs")
    reader.check_keys(tokens, _TOKEN_KEYS, "token_configs.")
    kbs: KbsTokenConfig | None = None
    if "kbs" in tokens:
        table = reader.table(tokens, "kbs", "token_configs.")
        reader.check_keys(table, _KBS_KEYS, "token_configs.kbs.")
        cert = reader.optional_str(table, "cert", "token_configs.kbs.")
        algorithm = reader.optional_str(table, "tee_key_algorithm", "token_configs.kbs.")
        try:
            tee_key_algorithm = TeeKeyAlgorithm.parse(algorithm) if algorithm else DEFAULT_TEE_KEY_ALGORITHM
        except ConfigError as e:
            msg = f"AA config {source}: token_configs.kbs.tee_key_algorithm: {e}"
            raise ConfigError(msg) from e
        kbs = KbsTokenConfig(
            reader.url(table, "token_configs.kbs."),
            cert.encode("utf-8") if cert else None,
            tee_key_algorithm,
        )
    coco_as: CocoAsTokenConfig | None = None
    if "coco_as" in tokens:
        table = reader.table(tokens, "coco_as", "token_configs.")
        reader.check_keys(table, _COCO_AS_KEYS, "token_configs.coco_as.")
        coco_as = CocoAsTokenConfig(reader.url(table, "token_configs.coco_as."))
    eventlog_table = reader.table(document, "eventlog_config")
    reader.check_keys(eventlog_table, _EVENTLOG_KEYS, "eventlog_config.")
    init_pcr = eventlog_table.get("init_pcr", DEFAULT_INIT_PCR)
    if not isinstance(init_pcr, int) or isinstance(init_pcr, bool) or not 0 <= init_pcr <= MAX_PCR:
        msg = f"AA config {source}: eventlog_config.init_pcr must be a PCR number 0-{MAX_PCR}"
        raise ConfigError(msg)
    eventlog = EventLogConfig(init_pcr, reader.boolean(eventlog_table, "enable_eventlog", "eventlog_config."))
    log_table = reader.table(document, "log")
    reader.check_keys(log_table, _LOG_KEYS, "log.")
    level = reader.optional_str(log_table, "level", "log.") or "info"
    if level.lower() not in _LOG_LEVELS:
        msg = f"AA config {source}: log.level {level[:32]!r} is not one of {', '.join(_LOG_LEVELS)}"
        raise ConfigError(msg)
    return AaConfig(
        kbs=kbs,
        coco_as=coco_as,
        eventlog=eventlog,
        allow_sample_attester=reader.boolean(document, "allow_sample_attester", ""),
        log_level=level.lower(),
        source=source,
    )


def _load(untrusted: bytes, source: str, *, json_format: bool, limits: Limits) -> dict[str, object]:
    if json_format:
        return load_object(untrusted, f"AA config {source}", ConfigError, limits=limits)
    try:
        return tomllib.loads(untrusted.decode("utf-8"))
    except UnicodeDecodeError as e:
        msg = f"AA config {source}: not UTF-8"
        raise ConfigError(msg) from e
    except tomllib.TOMLDecodeError as e:
        msg = f"AA config {source}: not valid TOML ({e})"
        raise ConfigError(msg) from e


class _Reader:
    """Typed access to config tables; every error names the source and the dotted key."""

    def __init__(self, source: str) -> None:
        self._source = source

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"AA config {self._source}: {key} {problem}")

    def check_keys(self, table: Mapping[str, object], known: frozenset[str], prefix: str) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            names = ", ".join(repr(prefix + k[:64]) for k in unknown[:5])
            msg = f"AA config {self._source}: unknown key(s) {names} (known: {', '.join(sorted(known))})"
            raise ConfigError(msg)

    def table(self, parent: Mapping[str, object], key: str, prefix: str = "") -> Mapping[str, object]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(prefix + key, "must be a table")
        return value

    def optional_str(self, table: Mapping[str, object], key: str, prefix: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self._fail(prefix + key, "must be a string")
        return value

    def boolean(self, table: Mapping[str, object], key: str, prefix: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(prefix + key, "must be true or false")
        return value

    def url(self, table: Mapping[str, object], prefix: str) -> str:
        value = self.optional_str(table, "url", prefix)
        if value is None:
            raise self._fail(prefix + "url", "is required")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self._fail(prefix + "url", f"{value[:200]!r} is not an http(s)://host[:port] URL")
        return value.rstrip("/")
