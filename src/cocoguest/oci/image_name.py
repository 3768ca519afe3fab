"""Typed image names: which transport, and the name the policy judges and the store records.

``docker://host/repo[:tag|@digest]`` is a :class:`DockerImageName`, ``oci:PATH[:REF]`` a :class:`LayoutImageName`.
Code passes these values around instead of ``"docker://"`` strings; only :meth:`__str__` spells the prefix.

Invariants:
    * Pure data: parsing does no IO (a layout path is not resolved until :attr:`LayoutImageName.policy_name`).
    * :attr:`policy_name` is exactly what containers-policy.json scopes are matched against (containers/image's
      ``PolicyConfigurationIdentity``): the docker reference as written (tag and/or digest), or the layout's
      absolute path with ``:REF``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cocoguest.errors import ConfigError
from cocoguest.oci.reference import ImageReference


@dataclass(frozen=True, slots=True)
class DockerImageName:
    """An image in a registry repository (``docker://``)."""

    transport: ClassVar[Literal["docker"]] = "docker"
    reference: ImageReference

    @property
    def policy_name(self) -> str:
        """The reference the policy judges (``host/repo:tag`` or ``host/repo@digest``)."""
        return str(self.reference)

    def __str__(self) -> str:
        return f"docker://{self.reference}"


@dataclass(frozen=True, slots=True)
class LayoutImageName:
    """An image in an OCI layout directory (``oci:PATH[:REF]``)."""

    transport: ClassVar[Literal["oci"]] = "oci"
    path: Path
    ref: str | None

    @classmethod
    def parse(cls, text: str) -> LayoutImageName:
        """Parse ``oci:PATH[:REF]`` (the prefix is optional); REF is what follows the last ``:`` unless that is
        part of the path.

        Raises:
            ConfigError: empty path.
        """
        body = text.removeprefix("oci:")
        path, ref = body, None
        if ":" in body:
            head, _, tail = body.rpartition(":")
            if "/" not in tail:
                path, ref = head, tail or None
        if not path:
            msg = f"image reference {text!r}: empty layout path"
            raise ConfigError(msg)
        return cls(Path(path), ref)

    @property
    def policy_name(self) -> str:
        """The layout's absolute path, with ``:REF`` when given (resolves the path: the one non-pure member)."""
        return str(self.path.resolve()) + (f":{self.ref}" if self.ref else "")

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.ref}" if self.ref else "")


ImageName = DockerImageName | LayoutImageName
"""Any image name; ``match`` on the two classes to tell them apart."""
