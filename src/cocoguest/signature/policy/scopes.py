"""Which ``transports.<name>`` scope of a policy applies to an image (containers/image ``requirementsForImageRef``).

Candidate scopes, most specific first, then ``""`` of the transport, then the policy's ``default``:

* ``docker`` (``docker/policyconfiguration/naming.go``): ``host/path:tag`` or ``host/path@digest``; then
  ``host/path``, each parent namespace, ``host[:port]``; then, with the port stripped, ``*.`` wildcards from the
  most specific (``a.b.example.com`` gives ``*.b.example.com``, ``*.example.com``, ``*.com``; the host itself is
  never a wildcard candidate). A name-only reference gets ``:latest`` first, as containers/image's docker
  transport does. A reference with BOTH a tag and a digest is refused (containers/image refuses it too).
* ``oci`` (``oci/layout/oci_transport.go``): the layout directory (the part before the first ``:``) and each of
  its parents, excluding ``/``; the ``:ref`` part is not part of the identity. The caller passes the absolute
  path with symlinks already resolved (containers/image's ``resolvedDir``): this module does no IO.

Invariants:
    * Pure functions; the first candidate present in the transport's scopes wins.
    * Scope strings are compared exactly (no normalisation of the policy keys beyond what containers/image does).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.signature.policy.identity import DockerReference, ReferenceFormatError, parse_normalized_named

T = TypeVar("T")


def docker_image_reference(reference: str, *, limits: Limits = DEFAULT_LIMITS) -> DockerReference:
    """Parse the pulled image's reference like containers/image's docker transport (``latest`` added if bare).

    Raises:
        ReferenceFormatError: invalid, or has both a tag and a digest.
    """
    ref = parse_normalized_named(reference, limits=limits)
    if ref.tag is not None and ref.digest is not None:
        msg = f"image reference {reference!r} has both a tag and a digest (not supported by containers/image)"
        raise ReferenceFormatError(msg)
    if ref.is_name_only:
        ref = DockerReference(ref.name, "latest", None)
    return ref


def docker_scopes(reference: str, *, limits: Limits = DEFAULT_LIMITS) -> tuple[str, ...]:
    """Candidate docker scopes, most specific first (without the transport default ``""``).

    Raises:
        ReferenceFormatError: see :func:`docker_image_reference`.
    """
    ref = docker_image_reference(reference, limits=limits)
    identity = f"{ref.name}:{ref.tag}" if ref.tag is not None else f"{ref.name}@{ref.digest}"
    out = [identity]
    name = ref.name
    while True:
        out.append(name)
        slash = name.rfind("/")
        if slash == -1:
            break
        name = name[:slash]
    host = name.split(":", 1)[0]
    while True:
        dot = host.find(".")
        if dot == -1:
            break
        host = host[dot + 1 :]
        out.append(f"*.{host}")
    return tuple(out)


def oci_layout_dir(reference: str) -> str:
    """The layout directory of an ``oci`` reference ``/abs/path[:ref]``, cleaned.

    Raises:
        ReferenceFormatError: the path is not absolute.
    """
    directory = reference.split(":", 1)[0]
    if not directory.startswith("/"):
        msg = f"oci reference {reference!r}: the layout path must be absolute"
        raise ReferenceFormatError(msg)
    return go_clean_path(directory)


def go_clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` for absolute POSIX paths (``//x`` becomes ``/x``, unlike :func:`posixpath.normpath`)."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def oci_scopes(reference: str) -> tuple[str, ...]:
    """Candidate oci scopes: the layout directory, then its parents, never ``/``.

    Raises:
        ReferenceFormatError: the path is not absolute.
    """
    path = oci_layout_dir(reference)
    out: list[str] = []
    while path != "/" and "/" in path:
        out.append(path)
        path = path[: path.rfind("/")] or "/"
    return tuple(out)


def candidate_scopes(transport: str, reference: str, *, limits: Limits = DEFAULT_LIMITS) -> tuple[str, ...]:
    """Candidate scopes for ``transport`` (``docker`` or ``oci``), most specific first, without ``""``.

    Raises:
        ReferenceFormatError: the reference is invalid for the transport.
        ValueError: an unsupported transport.
    """
    if transport == "docker":
        return docker_scopes(reference, limits=limits)
    if transport == "oci":
        return oci_scopes(reference)
    msg = f"policy scopes for transport {transport!r} are not supported"
    raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ScopeMatch(Generic[T]):
    """The requirements that apply and where they came from."""

    transport: str
    scope: str | None
    """The matched key of ``transports.<transport>`` (``""`` for the transport default), or None for ``default``."""
    requirements: T

    @property
    def label(self) -> str:
        """A JSON-path-like name of the matched section, e.g. ``transports.docker["quay.io/x"]`` or ``default``."""
        if self.scope is None:
            return "default"
        quoted = self.scope.replace("\\", "\\\\").replace('"', '\\"')
        return f'transports.{self.transport}["{quoted}"]'


def lookup(
    default: T,
    transports: Mapping[str, Mapping[str, T]],
    transport: str,
    reference: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> ScopeMatch[T]:
    """Pick the requirements for an image: the first candidate scope present, then ``""``, then ``default``.

    Raises:
        ReferenceFormatError, ValueError: see :func:`candidate_scopes`.
    """
    candidates = candidate_scopes(transport, reference, limits=limits)
    scopes = transports.get(transport)
    if scopes is not None:
        for scope in (*candidates, ""):
            if scope in scopes:
                return ScopeMatch(transport, scope, scopes[scope])
    return ScopeMatch(transport, None, default)
