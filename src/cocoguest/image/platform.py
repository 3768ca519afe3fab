"""Platforms: the running machine's, parsing ``--platform``, choosing a manifest from an index."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import ConfigError, ResourceNotFoundError
from cocoguest.oci.descriptor import Descriptor, ImageIndex

_PLATFORMS_LISTED: Final = 8
"""Platforms named in a "no image for platform" message; the others are counted."""
_PLATFORM_NAME_CHARS: Final = 64

_MACHINE_TO_GOARCH: Final = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "s390x": ("s390x", None),
    "ppc64le": ("ppc64le", None),
    "riscv64": ("riscv64", None),
    "i686": ("386", None),
}


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """An os/architecture[/variant] wanted by the user."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> PlatformSpec:
        """Parse ``os/arch[/variant]``.

        Raises:
            ConfigError: malformed.
        """
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            msg = f"--platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8"
            raise ConfigError(msg)
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def running(cls) -> PlatformSpec:
        """The machine we run on."""
        arch, variant = _MACHINE_TO_GOARCH.get(_platform.machine(), (_platform.machine(), None))
        return cls("linux", arch, variant)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def select_manifest(index: ImageIndex, wanted: PlatformSpec, what: str) -> Descriptor:
    """The index entry for ``wanted``: exact variant first, then an entry without variant (arm64 'v8' default).

    Raises:
        ResourceNotFoundError: no entry for the platform (the message lists what is available).
    """
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None and d.platform.os == wanted.os and d.platform.architecture == wanted.architecture
    ]
    for descriptor in candidates:
        assert descriptor.platform is not None  # noqa: S101  (filtered above)
        if descriptor.platform.variant == wanted.variant:
            return descriptor
    for descriptor in candidates:
        assert descriptor.platform is not None  # noqa: S101  (filtered above)
        if descriptor.platform.variant is None or wanted.variant is None:
            return descriptor
    available = sorted(
        {
            f"{d.platform.os}/{d.platform.architecture}" + (f"/{d.platform.variant}" if d.platform.variant else "")
            for d in index.manifests
            if d.platform is not None
        }
    )
    # An index may list 10,000 platforms: name a few (each cut short), count the rest.
    shown = ", ".join(name[:_PLATFORM_NAME_CHARS] for name in available[:_PLATFORMS_LISTED]) or "none"
    if len(available) > _PLATFORMS_LISTED:
        shown += f" and {len(available) - _PLATFORMS_LISTED} more"
    msg = f"{what}: no image for platform {wanted} (available: {shown})"
    raise ResourceNotFoundError(msg)
