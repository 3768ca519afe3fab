"""Reading an image's manifest and config from an untrusted source (pull step 2 and 4; copy step 1).

Invariants:
    * The manifest is size-capped, checked against a digest the reference pins, and, when it is an index or a
      manifest list, resolved to the requested platform with the instance checked against the index entry's
      digest and size.
    * Docker schema 1 is refused; the config blob is size-capped and digest- and size-checked.
    * Policy before config, by types: the config is read only from an :class:`ApprovedImage`, which only
      :func:`approve` (a policy decision that accepted this manifest) or :func:`for_host_tool` (copy and
      inspect, which like skopeo's read images outside any guest policy) make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from cocoguest.digest import Digest, Readable
from cocoguest.errors import (
    DigestMismatchError,
    PolicyRejectedError,
    ProtocolError,
    SizeMismatchError,
    UnsupportedError,
)
from cocoguest.image.platform import PlatformSpec, select_manifest
from cocoguest.jsonutil import load_object
from cocoguest.limits import Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import ImageIndex, ImageManifest, media_type_of
from cocoguest.oci.source import ImageSource
from cocoguest.signature.policy import PolicyDecision

SCHEMA1_TYPES: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
INDEX_TYPES: Final = frozenset({media_types.OCI_INDEX, media_types.DOCKER_MANIFEST_LIST})


class Opened(Protocol):
    """What manifest reading needs of an opened source."""

    @property
    def source(self) -> ImageSource:
        """The untrusted source."""
        ...

    @property
    def pinned_digest(self) -> Digest | None:
        """A digest the reference pins, if any."""
        ...


@dataclass(frozen=True)
class FetchedManifest:
    """The manifest for our platform, verified against whatever pinned it."""

    untrusted_bytes: bytes
    """The manifest exactly as served (its digest is ``digest``)."""
    digest: Digest
    manifest: ImageManifest
    index_digest: Digest | None = None
    """The index/manifest list it was selected from, if any."""


_APPROVAL: Final = object()
"""Only this module holds it: an :class:`ApprovedImage` cannot be made elsewhere."""


@dataclass(frozen=True)
class ApprovedImage:
    """A fetched manifest that may be read further: its config and layers (pull step 3 passed).

    Made only by :func:`approve` or :func:`for_host_tool`; constructing it directly raises ``TypeError``.
    """

    source: ImageSource
    fetched: FetchedManifest
    decision: PolicyDecision | None
    """The accepting policy decision; ``None`` for a host tool (copy, inspect) that runs no guest policy."""
    _approval: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._approval is not _APPROVAL:
            msg = "an ApprovedImage is made by approve() or for_host_tool() only"
            raise TypeError(msg)

    @property
    def manifest(self) -> ImageManifest:
        """The verified manifest."""
        return self.fetched.manifest


def approve(source: ImageSource, fetched: FetchedManifest, decision: PolicyDecision) -> ApprovedImage:
    """The image, approved by ``decision``.

    Raises:
        PolicyRejectedError: the decision rejected the image (its reasons in the message).
    """
    if not decision.accepted:
        reasons = "; ".join(decision.reasons) or "no reason given"
        policy = f" {decision.policy_source}" if decision.policy_source else ""
        msg = f"{source.describe()}: rejected by the signature policy{policy}: {reasons}"
        raise PolicyRejectedError(msg)
    return ApprovedImage(source, fetched, decision, _APPROVAL)


def for_host_tool(source: ImageSource, fetched: FetchedManifest) -> ApprovedImage:
    """The image for a host-side tool (copy, inspect) that reads images outside any guest policy, as skopeo's
    ``copy --insecure-policy`` and ``inspect`` do. Never used by the pull."""
    return ApprovedImage(source, fetched, None, _APPROVAL)


def manifest_type(untrusted: bytes, declared: str | None, what: str) -> str:
    """The media type of a manifest document; refuses schema 1.

    Raises:
        ProtocolError: not a JSON object.
        UnsupportedError: Docker schema 1.
    """
    try:
        inner = media_type_of(untrusted, f"{what}: manifest")
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    version = load_object(untrusted, f"{what}: manifest").get("schemaVersion")
    media_type = inner or declared or media_types.OCI_MANIFEST
    if media_type in SCHEMA1_TYPES or version == 1:
        msg = f"{what}: Docker schema 1 manifests are not supported (deprecated and unverifiable); re-push the image"
        raise UnsupportedError(msg)
    return media_type


def fetch_manifest(opened: Opened, platform: PlatformSpec, limits: Limits) -> FetchedManifest:
    """The manifest for ``platform``, digest-checked, resolved through an index if needed.

    Raises:
        DigestMismatchError, ProtocolError, UnsupportedError, ResourceNotFoundError, TransportError.
    """
    source, what = opened.source, opened.source.describe()
    untrusted, declared = source.get_manifest(None)
    if len(untrusted) > limits.max_manifest_bytes:
        msg = f"{what}: manifest of {len(untrusted)} bytes exceeds the {limits.max_manifest_bytes}-byte limit"
        raise ProtocolError(msg)
    pinned = opened.pinned_digest
    digest = Digest.of_bytes(untrusted, pinned.algorithm if pinned is not None else "sha256")
    if pinned is not None and digest != pinned:
        msg = f"{what}: manifest has digest {digest}, the reference pins {pinned}"
        raise DigestMismatchError(msg)
    media_type = manifest_type(untrusted, declared, what)
    index_digest: Digest | None = None
    if media_type in INDEX_TYPES:
        index_digest = digest
        try:
            index = ImageIndex.from_bytes(untrusted, f"{what}: index")
        except ValueError as e:
            raise ProtocolError(str(e)) from e
        chosen = select_manifest(index, platform, what)
        untrusted, declared = source.get_manifest(chosen.digest)
        digest = Digest.of_bytes(untrusted, chosen.digest.algorithm)
        if digest != chosen.digest:
            msg = f"{what}: manifest for {platform} has digest {digest}, the index says {chosen.digest}"
            raise DigestMismatchError(msg)
        if len(untrusted) != chosen.size:
            msg = f"{what}: manifest {digest} for {platform} has {len(untrusted)} bytes, the index says {chosen.size}"
            raise SizeMismatchError(msg)
        media_type = manifest_type(untrusted, declared or chosen.media_type, what)
        if media_type in INDEX_TYPES:
            msg = f"{what}: nested index for {platform} is not supported"
            raise UnsupportedError(msg)
    where = f"{what}: manifest {digest}"
    try:
        manifest = ImageManifest.from_bytes(untrusted, where, media_type)
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    if len(manifest.layers) > limits.max_layers:
        msg = f"{where}: {len(manifest.layers)} layers, over the limit of {limits.max_layers}"
        raise ProtocolError(msg)
    return FetchedManifest(untrusted, digest, manifest, index_digest)


def read_to_eof(stream: Readable, cap: int, chunk_bytes: int) -> bytes:
    """Everything ``stream`` yields up to ``cap`` bytes: reads until EOF or ``cap`` (a stream may return short
    reads, one network chunk each; a single ``read(n)`` is never taken for the whole)."""
    parts: list[bytes] = []
    total = 0
    while total < cap:
        data = stream.read(min(chunk_bytes, cap - total))
        if not data:
            break
        parts.append(data)
        total += len(data)
    return b"".join(parts)


def read_config_blob(image: ApprovedImage, limits: Limits) -> bytes:
    """The config blob of an approved image, size-capped and checked against its descriptor.

    The blob is read to EOF (at most ``desc.size + 1`` bytes, so an overlong blob shows).

    Raises:
        ProtocolError: over the size limit.
        DigestMismatchError: digest or size mismatch.
    """
    source, desc = image.source, image.manifest.config
    what = f"{source.describe()}: config {desc.digest}"
    if desc.size > limits.max_config_bytes:
        msg = f"{what}: {desc.size} bytes is over the {limits.max_config_bytes}-byte limit"
        raise ProtocolError(msg)
    with source.open_blob(desc) as blob:
        untrusted = read_to_eof(blob, desc.size + 1, limits.stream_chunk_bytes)
    actual = Digest.of_bytes(untrusted, desc.digest.algorithm)
    if len(untrusted) != desc.size or actual != desc.digest:
        msg = f"{what}: content has digest {actual} ({len(untrusted)} bytes), expected {desc.digest} ({desc.size})"
        raise DigestMismatchError(msg)
    return untrusted


def parse_config(untrusted: bytes, what: str) -> dict[str, object]:
    """The config JSON object.

    Raises:
        ProtocolError: not a JSON object.
    """
    return load_object(untrusted, what)
