"""Step (1) of the pull: turn IMAGE into an opened, untrusted source (DESIGN.md §2).

``oci:PATH[:REF]`` opens a local layout. Anything else is a registry reference (``docker://`` optional):
registries.conf is applied (blocked refused, mirrors first, remapped location last), credentials come from
auth.json per location, TLS settings from certs.d. The first location that serves the manifest is used.

Invariant: a blocked registry is refused before any network access.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cocoguest.digest import Digest
from cocoguest.errors import CocoError, ConfigError, ResourceNotFoundError, TransportError
from cocoguest.image.layout import OciLayoutImageSource
from cocoguest.oci.descriptor import Descriptor
from cocoguest.oci.image_name import DockerImageName, ImageName, LayoutImageName
from cocoguest.oci.reference import ImageReference, ImageReferenceError
from cocoguest.oci.source import ImageSource
from cocoguest.registry.access import RegistryAccess
from cocoguest.registry.config.registries_conf import RegistryBlockedError
from cocoguest.registry.docker import DockerSource

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundImage:
    """The image a source found: the name the policy judges and the store records, and where it was served."""

    name: ImageName
    registry: DockerSource | None
    """The registry location that served the manifest (a mirror's, if one answered); ``None`` for a layout."""


@dataclass(frozen=True)
class OpenedSource:
    """An untrusted source and the name it was opened under.

    Invariant: :meth:`found` is meaningful only after the first manifest was fetched: for a short name or a
    mirrored registry, the location that answered decides the name and the signature location.
    """

    source: ImageSource
    requested: ImageName
    pinned_digest: Digest | None = None
    locations: FallbackSource | None = None
    """The registry locations behind ``source`` (the same object), for :meth:`found`."""

    def found(self) -> FoundImage:
        """The name the image was found under and the location that served it."""
        if self.locations is None:
            return FoundImage(self.requested, None)
        logical = self.locations.logical_reference
        name = DockerImageName(logical) if logical is not None else self.requested
        return FoundImage(name, self.locations.chosen)


class FallbackSource:
    """Tries registry locations in order for the first manifest, then sticks to the one that answered."""

    def __init__(
        self, candidates: Sequence[DockerSource], name: str, logical: Sequence[ImageReference] | None = None
    ) -> None:
        """``logical[i]`` is the reference candidate ``i`` stands for (the short-name expansion it came from,
        before mirrors and remaps); it names the image for the policy and the store."""
        self._candidates = list(candidates)
        self._logical = list(logical) if logical is not None else [c.reference for c in candidates]
        self._chosen: DockerSource | None = None
        self._chosen_logical: ImageReference | None = None
        self._name = name

    @property
    def logical_reference(self) -> ImageReference | None:
        """The reference of the image that was found (``None`` before the first manifest)."""
        return self._chosen_logical

    @property
    def chosen(self) -> DockerSource | None:
        """The location that served the manifest (``None`` before the first manifest)."""
        return self._chosen

    def describe(self) -> str:
        """The chosen location, or the reference as given."""
        return self._chosen.describe() if self._chosen is not None else self._name

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        """The manifest from the first location that has it."""
        if self._chosen is not None:
            return self._chosen.get_manifest(digest)
        errors: list[CocoError] = []
        for candidate in self._candidates:
            try:
                result = candidate.get_manifest(digest)
            except (TransportError, ResourceNotFoundError) as e:
                _logger.info("%s: %s; trying the next location", candidate.describe(), e)
                errors.append(e)
                continue
            self._chosen = candidate
            self._chosen_logical = self._logical[self._candidates.index(candidate)]
            return result
        if len(errors) == 1:
            raise errors[0]
        msg = f"{self._name}: no location could serve the manifest: " + "; ".join(str(e) for e in errors)
        raise ResourceNotFoundError(msg) from errors[-1]

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A blob from the chosen location."""
        if self._chosen is None:  # pragma: no cover - defensive: the manifest always comes first
            msg = "open_blob before get_manifest"
            raise RuntimeError(msg)
        return self._chosen.open_blob(desc)

    def close(self) -> None:
        """Close every location."""
        for candidate in self._candidates:
            candidate.close()


def _is_unqualified(text: str) -> bool:
    """No registry host in the name (distribution's rule: a first component with '.', ':', upper case, or
    'localhost' is a host)."""
    first, sep, _ = text.partition("/")
    return not sep or not ("." in first or ":" in first or first == "localhost" or first != first.lower())


def open_source(image: str, access: RegistryAccess, *, search_unqualified: bool = True) -> OpenedSource:
    """Parse ``image`` and open its source (no network access yet).

    ``search_unqualified``: a short name (no registry host) is tried in registries.conf's
    unqualified-search registries (``pull``); without it the name is normalised to docker.io (skopeo's
    ``docker://``).

    Raises:
        ConfigError: a malformed reference or a blocked registry.
    """
    if image.startswith("oci:"):
        layout = LayoutImageName.parse(image)
        return OpenedSource(OciLayoutImageSource(layout, access.limits), layout)
    text = image.removeprefix("docker://")
    try:
        if search_unqualified and _is_unqualified(text.split("@", 1)[0]):
            references = access.registries.expand_unqualified(text)
        else:
            references = [ImageReference.parse(text)]
    except ImageReferenceError as e:
        raise ConfigError(str(e)) from e
    candidates: list[DockerSource] = []
    logical: list[ImageReference] = []
    blocked: list[RegistryBlockedError] = []
    for reference in references:
        try:
            locations = access.registries.pull_sources(
                reference, tls=access.tls_for, insecure_override=not access.tls_verify
            )
        except RegistryBlockedError as e:
            blocked.append(e)  # a short name may still resolve in another search registry
            continue
        for location in locations:
            candidates.append(
                DockerSource(
                    location.reference,
                    location.endpoint,
                    access.credentials_for(location.reference),
                    limits=access.limits,
                    env=access.env,
                    retry=access.retry_policy,
                )
            )
            logical.append(reference)
    if not candidates:
        raise blocked[0]
    primary = DockerImageName(references[0])
    fallback = FallbackSource(candidates, str(primary), logical)
    return OpenedSource(fallback, primary, primary.reference.digest, fallback)
