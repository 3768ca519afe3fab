"""Docker/OCI image references (``[host[:port]/]path[:tag][@digest]``) with docker.io normalisation.

Follows the distribution/reference grammar: the first component is a registry host if it contains ``.`` or
``:`` or is ``localhost``; otherwise the reference is on ``docker.io`` and single-component paths gain
``library/``. Repository path components are lowercase ``[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*``.

Invariants:
    * A :class:`ImageReference` is always valid and normalised (``docker.io`` not ``index.docker.io``);
      ``str()`` gives the fully qualified form and ``parse(str(r)) == r``.
    * Pure data: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cocoguest.digest import Digest

DOCKER_HUB: Final = "docker.io"
_LEGACY_HUB_NAMES: Final = frozenset({"index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API_HOST: Final = "registry-1.docker.io"
DEFAULT_TAG: Final = "latest"
_MAX_NAME: Final = 255
_IDENTIFIER: Final = re.compile(r"[a-f0-9]{64}")

_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Go's \w is ASCII-only
_HOST: Final = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
    r"(?::[0-9]+)?"
)


class ImageReferenceError(ValueError):
    """A malformed image reference."""


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return DOCKER_HUB, name


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalised image reference. At least one of ``tag`` and ``digest`` may be ``None``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> ImageReference:
        """Parse and normalise; a reference with neither tag nor digest gets ``latest`` if ``default_tag``.

        Raises:
            ImageReferenceError: malformed.
        """
        original = text
        text = text.removeprefix("docker://")
        if _IDENTIFIER.fullmatch(text):
            msg = f"image reference {original!r}: a 64-character hex string is an image ID, not a repository name"
            raise ImageReferenceError(msg)
        digest: Digest | None = None
        if "@" in text:
            text, _, digest_text = text.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except ValueError as e:
                msg = f"image reference {original!r}: {e}"
                raise ImageReferenceError(msg) from e
        tag: str | None = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.fullmatch(tag):
                msg = f"image reference {original!r}: invalid tag {tag!r}"
                raise ImageReferenceError(msg)
        if not text:
            msg = f"image reference {original!r}: empty repository"
            raise ImageReferenceError(msg)
        registry, path = _split_domain(text)
        if not _HOST.fullmatch(registry):
            msg = f"image reference {original!r}: invalid registry host {registry!r}"
            raise ImageReferenceError(msg)
        if registry in _LEGACY_HUB_NAMES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
            msg = f"image reference {original!r}: invalid repository name {path!r} (lowercase letters, digits, . _ -)"
            raise ImageReferenceError(msg)
        if len(path) > _MAX_NAME:
            msg = f"image reference {original!r}: repository path longer than {_MAX_NAME} characters"
            raise ImageReferenceError(msg)
        if tag is None and digest is None and default_tag:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host to talk to (Docker Hub's API lives on ``registry-1.docker.io``)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    def with_registry(self, registry: str, repository: str | None = None) -> ImageReference:
        """The same tag/digest in another location (mirrors, remaps)."""
        return ImageReference(registry, repository or self.repository, self.tag, self.digest)

    def manifest_ref(self) -> str:
        """What to put after ``/manifests/``: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out
