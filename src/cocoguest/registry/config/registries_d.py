"""containers-registries.d(5): where simple-signing signatures live (lookaside); whether sigstore attachments are used.

A registries.d directory holds ``*.yaml`` files, merged::

    default-docker:
      lookaside: https://sigs.example.com
    docker:
      registry.example.com/team:
        lookaside: file:///var/lib/sigs
        lookaside-staging: file:///srv/staging
        use-sigstore-attachments: true

Invariants (containers/image ``docker/registries_d.go``):
    * Lookup order for an image: its full identity (``host/repo:tag`` or ``host/repo@digest``), the repository,
      parent namespaces, the host, then ``*.domain`` wildcards (port dropped), then ``default-docker``. Each
      key is looked up separately: a matching section without that key falls through to the next scope.
    * ``lookaside`` wins over its legacy name ``sigstore``; for writing, ``lookaside-staging`` then
      ``sigstore-staging`` come first.
    * Only files whose names end in ``.yaml`` are read, in name order; unknown keys are ignored.
    * A scope (or ``default-docker``) defined in two files with DIFFERENT content is a :class:`ConfigError`
      naming both files. Unlike containers/image, an identical repeated definition is accepted (image-rs
      merges such files; its test vectors rely on it).
    * No built-in default lookaside here: ``None`` means "not configured" and callers decide (see
      :mod:`cocoguest.registry.signature_store`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import yaml

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci.reference import ImageReference

_logger = logging.getLogger(__name__)


_URL_KEYS: Final = ("lookaside", "lookaside-staging", "sigstore", "sigstore-staging")


@dataclass(frozen=True, slots=True)
class RegistryNamespace:
    """One configuration section (``default-docker`` or a ``docker`` scope)."""

    lookaside: str | None = None
    lookaside_staging: str | None = None
    sigstore: str | None = None
    """Legacy name of ``lookaside``."""
    sigstore_staging: str | None = None
    """Legacy name of ``lookaside-staging``."""
    use_sigstore_attachments: bool | None = None

    def top_level(self, *, write: bool) -> str | None:
        """The signature storage URL this section gives for reading (or writing), if any."""
        if write:
            for staging in (self.lookaside_staging, self.sigstore_staging):
                if staging:
                    return staging
        return self.lookaside or self.sigstore or None

    @classmethod
    def from_yaml(cls, untrusted: object, where: str) -> RegistryNamespace:
        """Build from a parsed YAML mapping.

        Raises:
            ConfigError: not a mapping, a URL that is not a string or not a URL, or a non-boolean
                ``use-sigstore-attachments``.
        """
        if untrusted is None:
            return cls()
        if not isinstance(untrusted, dict):
            msg = f"{where}: a mapping expected"
            raise ConfigError(msg)
        urls: dict[str, str | None] = {}
        for key in _URL_KEYS:
            value = untrusted.get(key)
            if value is not None and not isinstance(value, str):
                msg = f"{where}: {key} must be a URL string"
                raise ConfigError(msg)
            if value:
                _check_url(value, f"{where}: {key}")
            urls[key] = value or None
        attachments = untrusted.get("use-sigstore-attachments")
        if attachments is not None and not isinstance(attachments, bool):
            msg = f"{where}: use-sigstore-attachments must be true or false"
            raise ConfigError(msg)
        unknown = sorted(str(k) for k in untrusted if k not in (*_URL_KEYS, "use-sigstore-attachments"))
        if unknown:
            _logger.debug("%s: ignoring unknown keys %s", where, ", ".join(unknown))
        return cls(urls["lookaside"], urls["lookaside-staging"], urls["sigstore"], urls["sigstore-staging"],
                   attachments)  # fmt: skip


def _check_url(value: str, where: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError as e:
        msg = f"{where}: invalid URL {value!r}"
        raise ConfigError(msg) from e
    if not parts.scheme:
        msg = f"{where}: {value!r} is not a URL (file://, http:// or https://)"
        raise ConfigError(msg)


def reference_identity(reference: ImageReference) -> str:
    """The image's most specific scope: ``host/repo@digest`` if it has a digest, else ``host/repo:tag``."""
    if reference.digest is not None:
        return f"{reference.name}@{reference.digest}"
    return f"{reference.name}:{reference.tag or 'latest'}"


def reference_namespaces(reference: ImageReference) -> list[str]:
    """Less specific scopes, most specific first: repository, parent namespaces, host, ``*.domain`` wildcards."""
    name = reference.name
    scopes: list[str] = []
    while True:
        scopes.append(name)
        slash = name.rfind("/")
        if slash < 0:
            break
        name = name[:slash]
    host = name.split(":", 1)[0] if not name.startswith("[") else name
    while "." in host:
        host = host.split(".", 1)[1]
        scopes.append(f"*.{host}")
    return scopes


@dataclass(frozen=True, slots=True)
class RegistriesD:
    """The merged configuration of a registries.d directory."""

    default_docker: RegistryNamespace | None = None
    docker: Mapping[str, RegistryNamespace] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, *, limits: Limits = DEFAULT_LIMITS) -> RegistriesD:
        """Read and merge every ``*.yaml`` file of ``directory`` (a missing directory is an empty config).

        At most ``limits.max_registries_d_files`` files of at most ``limits.max_registries_d_file_bytes`` each.

        Raises:
            ConfigError: a file cannot be read, is not valid YAML, is too large, or conflicts with another.
        """
        try:
            names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".yaml"))
        except FileNotFoundError:
            return cls()
        except OSError as e:
            msg = f"registries.d {directory}: cannot list it ({e.strerror or e})"
            raise ConfigError(msg) from e
        if len(names) > limits.max_registries_d_files:
            msg = (
                f"registries.d {directory}: more than {limits.max_registries_d_files} YAML files "
                "(max_registries_d_files)"
            )
            raise ConfigError(msg)
        documents: list[tuple[str, bytes]] = []
        for name in names:
            path = directory / name
            try:
                with path.open("rb") as f:
                    data = f.read(limits.max_registries_d_file_bytes + 1)
            except FileNotFoundError:
                continue  # removed since listing (containers/image ignores this race too)
            except OSError as e:
                msg = f"registries.d file {path}: cannot read it ({e.strerror or e})"
                raise ConfigError(msg) from e
            if len(data) > limits.max_registries_d_file_bytes:
                msg = (
                    f"registries.d file {path}: larger than {limits.max_registries_d_file_bytes} bytes "
                    "(max_registries_d_file_bytes)"
                )
                raise ConfigError(msg)
            documents.append((str(path), data))
        return cls.from_documents(documents)

    @classmethod
    def from_documents(cls, documents: Sequence[tuple[str, bytes]]) -> RegistriesD:
        """Merge registries.d YAML documents, given as ``(source name, content)`` in order.

        Also used for a single sigstore config fetched as a resource (image-rs ``sigstore_config``).

        Raises:
            ConfigError: invalid YAML, a wrong type, or a scope defined differently in two documents.
        """
        default: RegistryNamespace | None = None
        default_from = ""
        docker: dict[str, RegistryNamespace] = {}
        docker_from: dict[str, str] = {}
        for source, data in documents:
            try:
                untrusted = yaml.safe_load(data)
            except yaml.YAMLError as e:
                msg = f"registries.d file {source}: invalid YAML ({str(e).splitlines()[0]})"
                raise ConfigError(msg) from e
            if untrusted is None:
                continue
            if not isinstance(untrusted, dict):
                msg = f"registries.d file {source}: a YAML mapping expected"
                raise ConfigError(msg)
            if untrusted.get("default-docker") is not None:
                section = RegistryNamespace.from_yaml(untrusted["default-docker"], f"{source}: default-docker")
                if default is not None and section != default:
                    msg = f'registries.d: "default-docker" defined differently in {default_from} and {source}'
                    raise ConfigError(msg)
                default, default_from = section, source
            scopes = untrusted.get("docker")
            if scopes is None:
                continue
            if not isinstance(scopes, dict):
                msg = f"registries.d file {source}: docker must be a mapping of scopes"
                raise ConfigError(msg)
            for scope, value in scopes.items():
                if not isinstance(scope, str) or not scope:
                    msg = f"registries.d file {source}: docker scope {scope!r} is not a non-empty string"
                    raise ConfigError(msg)
                section = RegistryNamespace.from_yaml(value, f"{source}: docker: {scope}")
                if scope in docker and docker[scope] != section:
                    first = docker_from[scope]
                    msg = f'registries.d: "docker" scope {scope!r} defined differently in {first} and {source}'
                    raise ConfigError(msg)
                docker[scope], docker_from[scope] = section, source
        return cls(default, docker)

    def _sections(self, reference: ImageReference) -> list[RegistryNamespace]:
        """The sections that apply to ``reference``, most specific first."""
        scopes = [reference_identity(reference), *reference_namespaces(reference)]
        sections = [self.docker[s] for s in scopes if s in self.docker]
        if self.default_docker is not None:
            sections.append(self.default_docker)
        return sections

    def _top_level(self, reference: ImageReference, *, write: bool) -> str | None:
        for section in self._sections(reference):
            url = section.top_level(write=write)
            if url:
                return url
        return None

    def lookaside_for(self, reference: ImageReference) -> str | None:
        """The configured lookaside URL (top level, without the repository path) for reading, if any."""
        return self._top_level(reference, write=False)

    def staging_for(self, reference: ImageReference) -> str | None:
        """The configured URL for writing signatures (staging, else the lookaside), if any."""
        return self._top_level(reference, write=True)

    def use_sigstore_attachments(self, reference: ImageReference) -> bool:
        """Whether sigstore attachments (``sha256-<hex>.sig`` tags) are read and written for ``reference``."""
        for section in self._sections(reference):
            if section.use_sigstore_attachments is not None:
                return section.use_sigstore_attachments
        return False
