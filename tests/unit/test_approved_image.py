"""Policy before config, by types: only an approved image (or a host tool's) gives access to the config."""

from __future__ import annotations

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import PolicyRejectedError
from cocoguest.image.manifests import ApprovedImage, FetchedManifest, approve, for_host_tool
from cocoguest.oci.descriptor import ImageManifest
from cocoguest.signature.policy import PolicyDecision

_MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
    b'"application/vnd.oci.image.config.v1+json","digest":"sha256:' + b"a" * 64 + b'","size":2},"layers":[]}'
)


class _Source:
    def describe(self) -> str:
        return "oci:/images/app:latest"


def _fetched() -> FetchedManifest:
    manifest = ImageManifest.from_bytes(_MANIFEST, "manifest", "application/vnd.oci.image.manifest.v1+json")
    return FetchedManifest(_MANIFEST, Digest.of_bytes(_MANIFEST), manifest)


def test_an_accepting_decision_approves() -> None:
    decision = PolicyDecision(True, ("signed by the owner",))
    image = approve(_Source(), _fetched(), decision)  # type: ignore[arg-type]
    assert image.decision is decision
    assert image.manifest.config.size == 2


def test_a_rejecting_decision_names_the_image_and_the_reasons() -> None:
    with pytest.raises(PolicyRejectedError, match=r"oci:/images/app:latest: rejected .*: no signature; wrong key"):
        approve(_Source(), _fetched(), PolicyDecision(False, ("no signature", "wrong key")))  # type: ignore[arg-type]


def test_an_approved_image_cannot_be_made_by_hand() -> None:
    with pytest.raises(TypeError, match="approve"):
        ApprovedImage(_Source(), _fetched(), PolicyDecision(True), object())  # type: ignore[arg-type]


def test_host_tools_read_without_a_decision() -> None:
    assert for_host_tool(_Source(), _fetched()).decision is None  # type: ignore[arg-type]
