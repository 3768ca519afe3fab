"""The one OCI-layout builder (cocoguest.image.build): used by the demo and, through thin wrappers, the tests."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from cocoguest.image.build import (
    DEFAULT_ENV,
    build_layout,
    sha256_digest,
    tar_directory,
    write_image,
)
from cocoguest.oci import media_types
from cocoguest.oci.annotations import REF_NAME
from cocoguest.oci.descriptor import ImageIndex, ImageManifest
from tests.fixtures import images, oci_images


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o700)
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_bytes(b"hi\n")
    (root / "etc" / "motd").chmod(0o600)
    os.symlink("../bin/tool", root / "etc" / "link")
    return root


def test_tar_directory_is_normalised_and_deterministic(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    data = tar_directory(root, {"extra.bin": b"xyz"})
    assert data == tar_directory(root, {"extra.bin": b"xyz"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["bin", "bin/tool", "etc", "etc/link", "etc/motd", "extra.bin"]
    assert (members["bin"].mode, members["bin/tool"].mode, members["etc/motd"].mode) == (0o755, 0o755, 0o644)
    assert members["etc/link"].issym()
    assert members["etc/link"].linkname == "../bin/tool"
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())


def test_write_image_records_digests_diff_ids_and_annotations(tmp_path: Path) -> None:
    layers = [b"a" * 1024, b"b" * 2048]
    written = write_image(
        tmp_path / "l",
        layers,
        compression="zstd",
        config={"Cmd": ["/x"]},
        layer_annotations=[None, {"k": "v"}],
        manifest_annotations={"m": "n"},
    )
    manifest_bytes = _blob(written.path, written.manifest_digest)
    manifest = ImageManifest.from_bytes(manifest_bytes)
    # containers/image field order: cocoguest re-serialises the manifest to the same bytes (and digest)
    assert manifest.to_bytes() == manifest_bytes
    assert [str(layer.digest) for layer in manifest.layers] == list(written.layer_digests)
    assert {layer.media_type for layer in manifest.layers} == {media_types.OCI_LAYER_ZSTD}
    assert [dict(layer.annotations) for layer in manifest.layers] == [{}, {"k": "v"}]
    assert dict(manifest.annotations) == {"m": "n"}
    config = json.loads(_blob(written.path, written.config_digest))
    assert config["rootfs"]["diff_ids"] == [sha256_digest(layer) for layer in layers] == list(written.diff_ids)
    assert config["config"] == {"Cmd": ["/x"]}


def test_an_existing_layout_gains_an_image_and_a_ref_is_replaced(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    first = write_image(layout, [b"1"], ref="one")
    write_image(layout, [b"2"], ref="two")
    second = write_image(layout, [b"3"], ref="two", architecture="arm64")
    index = ImageIndex.from_bytes((layout / "index.json").read_bytes())
    entries = {m.annotations[REF_NAME]: m for m in index.manifests}
    assert {name: str(m.digest) for name, m in entries.items()} == {
        "one": first.manifest_digest,
        "two": second.manifest_digest,
    }
    platform = entries["two"].platform
    assert platform is not None
    assert platform.architecture == "arm64"


def test_the_demo_builder_and_the_test_fixtures_use_the_one_builder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    demo = build_layout(tmp_path / "demo", [root], extra_layer_annotations={"a": "b"})
    direct = write_image(
        tmp_path / "direct",
        [tar_directory(root)],
        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        layer_annotations=[{"a": "b"}],
    )
    assert demo == direct.manifest_digest

    fixture = oci_images.write_image_layout(tmp_path / "fixture", [b"layer"], config_extra={"Cmd": ["/c"]})
    same = write_image(tmp_path / "same", [b"layer"], config={"Env": [DEFAULT_ENV], "Cmd": ["/c"]})
    assert fixture.manifest_digest == same.manifest_digest

    built = images.build_layout(tmp_path / "rootfs", layer_dirs=("base",), filler_bytes=0)
    manifest = images.manifest(built)
    expected = write_image(
        tmp_path / "expected",
        [tar_directory(images.ROOTFS / "base")],
        config={"Cmd": ["/usr/local/bin/hello"]},
        layer_annotations=[{images.NOTE: "layer base"}],
        manifest_annotations={"org.opencontainers.image.title": "cocoguest-fixture"},
    )
    assert sha256_digest(json.dumps(manifest, separators=(",", ":")).encode()) == expected.manifest_digest
