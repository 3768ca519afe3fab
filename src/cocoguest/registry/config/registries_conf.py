"""The containers-registries.conf(5) v2 subset: unqualified search, prefixes, remaps, mirrors, insecure, blocked.

Supported keys: ``unqualified-search-registries``; ``[[registry]]`` ``prefix``, ``location``, ``insecure``,
``blocked``, ``mirror-by-digest-only``; ``[[registry.mirror]]`` ``location``, ``insecure``, ``pull-from-mirror``.
Other keys (``credential-helpers``, ``short-name-mode``, ``[aliases]``, ...) are logged and ignored; the v1
format (``[registries.search]``) is refused. Drop-in directories (``registries.conf.d``) are not read.

Matching follows containers/image ``sysregistriesv2``: a rule matches the reference text
``host[:port]/path[:tag][@digest]`` when its prefix is a leading part of it followed by the end, ``/``, ``:`` or
``@`` (so ``example.com`` also covers ``example.com:5000``, as in containers/image; for ``blocked`` that is the
safe side). ``*.example.com`` matches any subdomain of ``example.com`` (with any port), not ``example.com``
itself. The rule with the longest prefix wins; a repeated prefix keeps its first rule.

Deliberate differences from containers/image, all documented here:

* A non-wildcard rule without ``location`` is accepted (as image-rs does) and means "no remap".
* A literal prefix beats a wildcard prefix of the same length (containers/image picks whichever sorts
  first, which is always the wildcard).
* A wildcard matches when the host ends with the suffix (containers/image only tries the suffix's first
  occurrence in the text).
* No configured unqualified-search registry means ``docker.io`` (image-rs's default; podman refuses short
  names then).

Invariants:
    * A :class:`RegistriesConfig` is validated when built: every error is a :class:`ConfigError` naming the
      file and the field (``registry[2].mirror[0].location``).
    * :meth:`RegistriesConfig.pull_sources` never returns a source for a blocked reference (it raises
      :class:`RegistryBlockedError`, a :class:`ConfigError`) and
      always ends with the primary (possibly remapped) location; mirrors come first, in file order.
    * Pure data after loading: no IO except reading the file in :meth:`RegistriesConfig.load`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import reference as oci_reference
from cocoguest.oci.reference import DOCKER_HUB, ImageReference
from cocoguest.registry.types import RegistryEndpoint, TlsSettings

_logger = logging.getLogger(__name__)


PULL_FROM_MIRROR_VALUES: Final = ("all", "digest-only", "tag-only")

_DOMAIN_COMPONENT: Final = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN: Final = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST_PORT: Final = re.compile(rf"(?:{_DOMAIN}|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_WILDCARD: Final = re.compile(rf"\*\.{_DOMAIN}")
_KNOWN_TOP: Final = frozenset({"unqualified-search-registries", "registry"})
_IGNORED_TOP: Final = frozenset(
    {"credential-helpers", "short-name-mode", "aliases", "additional-layer-store-auth-helper"}
)
_REGISTRY_KEYS: Final = frozenset({"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"})
_MIRROR_KEYS: Final = frozenset({"location", "insecure", "pull-from-mirror"})


class RegistryBlockedError(ConfigError):
    """The registries configuration blocks the reference (``blocked = true``).

    A :class:`ConfigError` (the configuration, not the data, says no), distinguishable so that an
    unqualified-search loop can skip a blocked candidate and fail only when every candidate is blocked.
    """


@dataclass(frozen=True, slots=True)
class Mirror:
    """One ``[[registry.mirror]]``: tried before the primary location."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"
    """``all``, ``digest-only`` (only for references with a digest) or ``tag-only`` (only without one)."""


@dataclass(frozen=True, slots=True)
class RegistryRule:
    """One ``[[registry]]`` table."""

    prefix: str
    """``host[:port][/path][:tag|@digest]`` or ``*.domain``."""
    location: str
    """Where the prefix-rooted namespace really lives; equal to ``prefix`` when not remapped; ``""`` only for a
    wildcard prefix (no remap)."""
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()

    @property
    def is_wildcard(self) -> bool:
        """Whether the prefix is ``*.domain``."""
        return self.prefix.startswith("*.")


@dataclass(frozen=True, slots=True)
class PullSource:
    """One place to try: the physical reference there and how to reach its registry."""

    reference: ImageReference
    """The rewritten (physical) reference; look credentials up with this one."""
    endpoint: RegistryEndpoint
    mirror: bool


def _lower_host(text: str) -> str:
    """``text`` with its first (host) component lower-cased: host names are case-insensitive."""
    host, slash, rest = text.partition("/")
    return host.lower() + slash + rest


def prefix_match_length(reference_text: str, prefix: str) -> int | None:
    """How many leading characters of ``reference_text`` the prefix covers, or ``None`` if it does not match.

    Host names compare case-insensitively (SECURITY: ``EVIL.example`` must not escape a rule for
    ``evil.example``). For a wildcard the covered part is the host name without its port (what a remap
    replaces, as in containers/image).
    """
    text = _lower_host(reference_text)
    prefix = _lower_host(prefix)
    if prefix.startswith("*."):
        host_port = text.partition("/")[0]
        host = host_port if host_port.startswith("[") else host_port.partition(":")[0]
        if host.endswith(prefix[1:]):
            return len(host)
        return None
    if not text.startswith(prefix):
        return None
    if len(text) == len(prefix) or text[len(prefix)] in "/:@":
        return len(prefix)
    return None


def _type_name(value: object) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


class _Fields:
    """Typed access to one TOML table, with errors naming the file and the field."""

    def __init__(self, source: str, where: str, table: Mapping[str, object], known: Iterable[str]) -> None:
        self._source = source
        self._where = where
        self._table = table
        for key in table:
            if key not in known:
                _logger.warning("%s: %s: unsupported key %r ignored", source, where or "top level", key)

    def _field(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"registries configuration {self._source}: {self._field(key)}: {problem}")

    def boolean(self, key: str) -> bool:
        value = self._table.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, f"expected a boolean, got {_type_name(value)}")
        return value

    def string(self, key: str) -> str:
        value = self._table.get(key, "")
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type_name(value)}")
        return value

    def tables(self, key: str) -> list[Mapping[str, object]]:
        value = self._table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error(key, f"expected an array of tables, got {_type_name(value)}")
        return value

    def strings(self, key: str) -> list[str] | None:
        if key not in self._table:
            return None
        value = self._table[key]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, f"expected an array of strings, got {_type_name(value)}")
        return value

    def location(self, key: str, *, wildcard_ok: bool = False) -> str:
        """containers/image ``parseLocation``: trailing ``/`` removed, URL schemes refused; shape checked."""
        value = self.string(key).rstrip("/")
        if value.startswith(("http://", "https://")):
            raise self.error(key, f"{value!r}: URL schemes are not supported")
        if not value:
            return value
        if value.startswith("*."):
            if not wildcard_ok or not _WILDCARD.fullmatch(value):
                raise self.error(key, f"{value!r}: a wildcard must be the whole prefix, as in '*.example.com'")
            return value
        host = value.partition("/")[0]
        if not _HOST_PORT.fullmatch(host) or any(c.isspace() or c == "*" for c in value):
            raise self.error(key, f"{value!r}: not of the form host[:port][/path]")
        return value


def _parse_mirror(source: str, where: str, table: Mapping[str, object], *, by_digest_only: bool) -> Mirror:
    fields = _Fields(source, where, table, _MIRROR_KEYS)
    location = fields.location("location")
    if not location:
        raise fields.error("location", "a mirror needs a location")
    pull_from = fields.string("pull-from-mirror")
    if pull_from and by_digest_only:
        raise fields.error("pull-from-mirror", "cannot be combined with the registry's mirror-by-digest-only")
    if pull_from and pull_from not in PULL_FROM_MIRROR_VALUES:
        raise fields.error("pull-from-mirror", f"{pull_from!r} is not one of {', '.join(PULL_FROM_MIRROR_VALUES)}")
    if by_digest_only:
        pull_from = "digest-only"
    return Mirror(location=location, insecure=fields.boolean("insecure"), pull_from_mirror=pull_from or "all")


def _parse_rule(source: str, index: int, table: Mapping[str, object]) -> RegistryRule:
    where = f"registry[{index}]"
    fields = _Fields(source, where, table, _REGISTRY_KEYS | {"pull-from-mirror"})
    if "pull-from-mirror" in table:
        raise fields.error("pull-from-mirror", "only allowed on a [[registry.mirror]]")
    location = fields.location("location")
    prefix = fields.location("prefix", wildcard_ok=True)
    if not prefix:
        if not location:
            raise fields.error("prefix", "neither prefix nor location is set")
        prefix = location
    if prefix.startswith("*."):
        if location:
            raise fields.error("location", "must be empty when prefix is a wildcard")
    elif not location:
        location = prefix  # image-rs: a rule without location does not remap
    by_digest_only = fields.boolean("mirror-by-digest-only")
    mirrors = tuple(
        _parse_mirror(source, f"{where}.mirror[{i}]", mirror_table, by_digest_only=by_digest_only)
        for i, mirror_table in enumerate(fields.tables("mirror"))
    )
    return RegistryRule(
        prefix=prefix,
        location=location,
        insecure=fields.boolean("insecure"),
        blocked=fields.boolean("blocked"),
        mirrors=mirrors,
    )


def _check_conflicts(source: str, rules: Sequence[RegistryRule]) -> None:
    """containers/image: one location may appear in several rules, but with the same insecure/blocked."""
    seen: dict[str, RegistryRule] = {}
    for rule in rules:
        key = rule.location or rule.prefix
        other = seen.setdefault(key, rule)
        for attribute in ("insecure", "blocked"):
            if getattr(other, attribute) != getattr(rule, attribute):
                msg = (
                    f"registries configuration {source}: registry {key!r} is defined several times with"
                    f" conflicting {attribute!r} settings"
                )
                raise ConfigError(msg)


class RegistriesConfig:
    """A validated registries.conf: rules in file order (first rule per prefix) and the search list."""

    def __init__(
        self,
        rules: Sequence[RegistryRule] = (),
        unqualified_search_registries: Sequence[str] = (),
        source: str = "(no registries configuration)",
    ) -> None:
        """Build from already-validated parts (tests, or configs assembled in code).

        Args:
            rules: ``[[registry]]`` rules, in file order.
            unqualified_search_registries: hosts for short names, in order.
            source: how messages name the configuration (its file path).
        """
        self.rules: tuple[RegistryRule, ...] = tuple(rules)
        self.unqualified_search_registries: tuple[str, ...] = tuple(unqualified_search_registries)
        self.source = source

    def __repr__(self) -> str:
        return f"RegistriesConfig(source={self.source!r}, rules={len(self.rules)})"

    @classmethod
    def load(cls, path: Path | None, *, missing_ok: bool = True, limits: Limits = DEFAULT_LIMITS) -> RegistriesConfig:
        """Read a registries.conf file.

        Args:
            path: the file; ``None`` means no configuration.
            missing_ok: a missing file is an empty configuration (for default paths). Pass ``False`` for a
                file the user named explicitly.
            limits: ``max_registries_conf_bytes``.

        Raises:
            ConfigError: unreadable, too large, not TOML, or invalid (naming the field).
        """
        if path is None:
            return cls()
        try:
            with path.open("rb") as f:
                data = f.read(limits.max_registries_conf_bytes + 1)
        except FileNotFoundError as e:
            if missing_ok:
                _logger.debug("no registries configuration at %s", path)
                return cls(source=str(path))
            msg = f"registries configuration {path}: no such file"
            raise ConfigError(msg) from e
        except OSError as e:
            msg = f"registries configuration {path}: cannot read: {e.strerror or e}"
            raise ConfigError(msg) from e
        if len(data) > limits.max_registries_conf_bytes:
            msg = (
                f"registries configuration {path}: larger than {limits.max_registries_conf_bytes} bytes "
                "(max_registries_conf_bytes)"
            )
            raise ConfigError(msg)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            msg = f"registries configuration {path}: not UTF-8 text"
            raise ConfigError(msg) from e
        return cls.from_toml(text, str(path))

    @classmethod
    def from_toml(cls, text: str, source: str) -> RegistriesConfig:
        """Parse and validate registries.conf TOML text.

        Args:
            text: the TOML document.
            source: how messages name it (the file path).

        Raises:
            ConfigError: not TOML, the v1 format, or a field of the wrong type or shape.
        """
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            msg = f"registries configuration {source}: invalid TOML: {e}"
            raise ConfigError(msg) from e
        if "registries" in document:
            msg = f"registries configuration {source}: registries: the v1 format is not supported; use [[registry]]"
            raise ConfigError(msg)
        fields = _Fields(source, "", document, _KNOWN_TOP | _IGNORED_TOP)
        for key in _IGNORED_TOP & document.keys():
            _logger.warning("registries configuration %s: %r is not supported; ignored", source, key)
        search = fields.strings("unqualified-search-registries") or []
        normalised_search: list[str] = []
        for i, entry in enumerate(search):
            host = entry.rstrip("/")
            if not _HOST_PORT.fullmatch(host):
                raise fields.error(f"unqualified-search-registries[{i}]", f"{host!r} is not a host[:port]")
            normalised_search.append(host)
        rules: list[RegistryRule] = []
        prefixes: set[str] = set()
        for index, table in enumerate(fields.tables("registry")):
            rule = _parse_rule(source, index, table)
            if rule.prefix in prefixes:
                # containers/image keeps the first rule for a prefix (later ones are unreachable).
                _logger.warning(
                    "registries configuration %s: registry[%d]: prefix %r repeated; ignored", source, index, rule.prefix
                )
                continue
            prefixes.add(rule.prefix)
            rules.append(rule)
        _check_conflicts(source, rules)
        return cls(rules, normalised_search, source)

    def rule_for(self, reference: ImageReference) -> RegistryRule | None:
        """The rule with the longest prefix matching ``reference`` (a literal prefix beats a wildcard of equal
        length; otherwise the earlier rule wins), or ``None``."""
        text = str(reference)
        best: RegistryRule | None = None
        best_key = (-1, False)
        for rule in self.rules:
            if prefix_match_length(text, rule.prefix) is None:
                continue
            key = (len(rule.prefix), not rule.is_wildcard)
            if key > best_key:
                best, best_key = rule, key
        return best

    def _rewrite(self, reference: ImageReference, rule: RegistryRule, location: str) -> ImageReference:
        if not location:
            return reference  # wildcard rule without remap
        text = str(reference)
        covered = prefix_match_length(text, rule.prefix)
        if covered is None:  # pragma: no cover — defensive: rule_for matched this prefix
            msg = f"registries configuration {self.source}: prefix {rule.prefix!r} does not match {text!r}"
            raise ConfigError(msg)
        rewritten = location + text[covered:]
        try:
            physical = ImageReference.parse(rewritten, default_tag=False)
        except oci_reference.ImageReferenceError as e:
            msg = (
                f"registries configuration {self.source}: prefix {rule.prefix!r} maps image {text!r} to"
                f" {rewritten!r}, which is not a valid reference"
            )
            raise ConfigError(msg) from e
        if physical.tag is None and physical.digest is None and (reference.tag or reference.digest):
            # A prefix with a tag remapped to a location without one: containers/image refuses such a
            # reference too; silently pulling `latest` instead would be wrong.
            msg = (
                f"registries configuration {self.source}: prefix {rule.prefix!r} maps image {text!r} to"
                f" {rewritten!r}, which names neither a tag nor a digest"
            )
            raise ConfigError(msg)
        return physical

    def pull_sources(
        self,
        reference: ImageReference,
        *,
        tls: Callable[[str], TlsSettings] | None = None,
        insecure_override: bool = False,
    ) -> list[PullSource]:
        """Where to try pulling ``reference`` from, in order: usable mirrors, then the primary location.

        Args:
            reference: the logical reference (as the user named it, after unqualified-search expansion).
            tls: TLS settings for a registry, called with the physical reference's registry as written
                (``docker.io``, ``host:port``), e.g. ``functools.partial(tls_settings_for, cert_dirs=...)``;
                default settings when ``None``.
            insecure_override: ``--tls-verify=false``: every endpoint is insecure.

        Returns:
            At least one source; each endpoint is insecure if its own entry (mirror or rule) says so.

        Raises:
            RegistryBlockedError: the matching rule blocks the reference (a :class:`ConfigError`).
            ConfigError: a remap yields an invalid reference, or one without tag or digest.
        """
        rule = self.rule_for(reference)
        if rule is None:
            return [PullSource(reference, self._endpoint(reference, insecure=insecure_override, tls=tls), mirror=False)]
        if rule.blocked:
            # SECURITY: a blocked namespace is refused outright, also for its mirrors.
            msg = f"image {reference}: registry {rule.prefix!r} is blocked by {self.source}"
            raise RegistryBlockedError(msg)
        digested = reference.digest is not None
        sources: list[PullSource] = []
        for mirror in rule.mirrors:
            # containers-registries.conf(5): digest-only mirrors cannot serve a moved tag.
            if (mirror.pull_from_mirror == "digest-only" and not digested) or (
                mirror.pull_from_mirror == "tag-only" and digested
            ):
                continue
            physical = self._rewrite(reference, rule, mirror.location)
            endpoint = self._endpoint(physical, insecure=mirror.insecure or insecure_override, tls=tls)
            sources.append(PullSource(physical, endpoint, mirror=True))
        physical = self._rewrite(reference, rule, rule.location)
        endpoint = self._endpoint(physical, insecure=rule.insecure or insecure_override, tls=tls)
        sources.append(PullSource(physical, endpoint, mirror=False))
        return sources

    @staticmethod
    def _endpoint(
        reference: ImageReference, *, insecure: bool, tls: Callable[[str], TlsSettings] | None
    ) -> RegistryEndpoint:
        # containers/image names certs.d directories after the registry as written in the reference
        # (docker.io), not the API host (registry-1.docker.io).
        settings = tls(reference.registry) if tls is not None else TlsSettings()
        return RegistryEndpoint(host=reference.api_host, insecure=insecure, tls=settings)

    def expand_unqualified(self, name: str) -> list[ImageReference]:
        """The candidates for a possibly short image name, in search order.

        A name whose first ``/``-separated component is a host (contains ``.`` or ``:``, is ``localhost``, or
        has upper case: the distribution/reference rule) is fully qualified and yields itself. Otherwise each
        unqualified-search registry yields ``registry/name`` (``docker.io`` adds ``library/`` to one-component
        names); with none configured, ``docker.io`` alone.

        Raises:
            ImageReferenceError: ``name`` (or ``registry/name``) is not a valid reference.
        """
        bare = name.removeprefix("docker://")
        first, slash, _ = bare.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            return [ImageReference.parse(bare)]
        registries = self.unqualified_search_registries or (DOCKER_HUB,)
        return [ImageReference.parse(f"{registry}/{bare}") for registry in registries]
