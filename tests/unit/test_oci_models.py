"""OCI models and media types: parsing, round trips, the +encrypted rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.digest import Digest
from cocoguest.oci import media_types as mt
from cocoguest.oci.descriptor import Descriptor, ImageIndex, ImageManifest

DIGEST = "sha256:" + "ab" * 32


def _manifest(**extra: object) -> bytes:
    obj = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": DIGEST, "size": 7},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST, "size": 3, "annotations": {"a": "b"}}],
        **extra,
    }
    return json.dumps(obj).encode()


def test_manifest_round_trip_keeps_unknown_fields() -> None:
    manifest = ImageManifest.from_bytes(_manifest(subject={"x": 1}, annotations={"k": "v"}))
    again = json.loads(manifest.to_bytes())
    assert again["subject"] == {"x": 1}
    assert again["annotations"] == {"k": "v"}
    assert again["layers"][0]["annotations"] == {"a": "b"}
    assert ImageManifest.from_bytes(manifest.to_bytes()) == manifest


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(schemaVersion=1), "schemaVersion"),
        (lambda m: m.update(layers={}), "layers"),
        (lambda m: m["layers"][0].update(size=-1), "negative size"),
        (lambda m: m["layers"][0].update(size=True), "size"),
        (lambda m: m["layers"][0].update(digest="sha256:zz"), "digest"),
        (lambda m: m["layers"][0].update(annotations={"a": 1}), "annotations"),
        (lambda m: m.update(mediaType=mt.OCI_INDEX), "not an image manifest"),
    ],
)
def test_malformed_manifest_names_the_field(mutate: object, message: str) -> None:
    obj = json.loads(_manifest())
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        ImageManifest.from_bytes(json.dumps(obj).encode())


def test_index_parses_platforms() -> None:
    data = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": DIGEST,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                }
            ],
        }
    ).encode()
    index = ImageIndex.from_bytes(data)
    platform = index.manifests[0].platform
    assert platform is not None
    assert (platform.os, platform.architecture, platform.variant) == ("linux", "arm64", "v8")
    assert ImageIndex.from_bytes(index.to_bytes()) == index


@pytest.mark.parametrize(
    ("plain", "encrypted"),
    [
        (mt.OCI_LAYER, mt.OCI_LAYER_ENC),
        (mt.OCI_LAYER_GZIP, mt.OCI_LAYER_GZIP_ENC),
        (mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_ZSTD_ENC),
        (mt.OCI_LAYER_ND_GZIP, mt.OCI_LAYER_ND_GZIP_ENC),
        (mt.OCI_LAYER_ND_ZSTD, mt.OCI_LAYER_ND_ZSTD_ENC),
    ],
)
def test_encrypted_media_types_round_trip(plain: str, encrypted: str) -> None:
    assert mt.encrypted_type(plain) == encrypted
    assert mt.decrypted_type(encrypted) == plain
    assert mt.is_encrypted(encrypted)
    assert not mt.is_encrypted(plain)


def test_docker_layer_becomes_oci_when_encrypted() -> None:
    assert mt.encrypted_type(mt.DOCKER_LAYER_GZIP) == mt.OCI_LAYER_GZIP_ENC


@pytest.mark.parametrize("bad", [mt.OCI_CONFIG, mt.OCI_LAYER_GZIP_ENC, "application/octet-stream"])
def test_not_encryptable(bad: str) -> None:
    with pytest.raises(ValueError, match="media type"):
        mt.encrypted_type(bad)


def test_compression_of() -> None:
    assert mt.compression_of(mt.OCI_LAYER_GZIP_ENC) == "gzip"
    assert mt.compression_of(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.compression_of(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.compression_of(mt.OCI_LAYER_ENC) == "none"


@given(st.binary(max_size=64))
def test_digest_parse_format_round_trip(data: bytes) -> None:
    digest = Digest.of_bytes(data)
    assert Digest.parse(str(digest)) == digest


@pytest.mark.parametrize("text", ["sha256", "md5:abcd", "sha256:ABCD", "sha256:" + "a" * 63, "sha256:" + "g" * 64])
def test_bad_digests(text: str) -> None:
    with pytest.raises(ValueError, match="digest"):
        Digest.parse(text)


def test_descriptor_with_changes_is_a_copy() -> None:
    desc = Descriptor(mt.OCI_LAYER, Digest.parse(DIGEST), 3)
    changed = desc.with_changes(size=4)
    assert (desc.size, changed.size) == (3, 4)
