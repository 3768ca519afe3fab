"""Cross-layer hardlinks end to end (issue 7, weak spot): a layer whose hardlink names a file of a lower layer
pulls (the target is copied up into the layer, then linked, as containerd does), and such a layer is stored by
chain ID, so the same layer blob over different parents is stored (and reused) once per parent chain.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cocoguest.image.bundle.rootfs import overlay_available, unmount
from tests.e2e.conftest import run, store_layer_dirs
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout


def _base(content: bytes) -> bytes:
    return (
        TarBuilder().dir("etc", mode=0o750).file("etc/file", content, mode=0o640).file("etc/other", b"other\n").build()
    )


# The shared upper layer: a hardlink to a file only its lower layer has.
LINK_LAYER = TarBuilder().dir("srv").hardlink("srv/link", "etc/file").file("srv/own", b"own\n").build()


def _image(tmp_path: Path, name: str, base: bytes) -> WrittenImage:
    return write_image_layout(tmp_path / name, [base, LINK_LAYER], config_extra={"Cmd": ["/bin/true"]})


def _pull(image: WrittenImage, bundle: Path, work_dir: Path, *extra: str) -> int:
    return run("pull", "--insecure-policy", "--json", "--work-dir", str(work_dir), *extra,
               f"oci:{image.path}:latest", str(bundle))  # fmt: skip


def _chain_id(diff_ids: tuple[str, ...]) -> str:
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def test_link_to_lower_file_pulls_with_both_names_on_one_inode(tmp_path: Path) -> None:
    image = _image(tmp_path, "image", _base(b"from the base\n"))
    work_dir = tmp_path / "work"
    bundle = tmp_path / "bundle"
    assert _pull(image, bundle, work_dir, "--snapshotter", "copy") == 0
    rootfs = bundle / "rootfs"
    assert (rootfs / "srv/link").read_bytes() == (rootfs / "etc/file").read_bytes() == b"from the base\n"
    assert (rootfs / "srv/link").stat().st_ino == (rootfs / "etc/file").stat().st_ino
    assert (rootfs / "etc/other").read_bytes() == b"other\n"
    assert (rootfs / "etc/file").stat().st_mode & 0o7777 == 0o640
    assert (rootfs / "etc").stat().st_mode & 0o7777 == 0o750
    # The base layer is keyed by diff_id as always; the linking layer by its chain ID, never its diff_id.
    names = {d.name for d in store_layer_dirs(work_dir)}
    assert names == {_hex(image.diff_ids[0]), _hex(_chain_id(image.diff_ids))}


def test_same_layer_over_two_parent_chains_is_stored_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _image(tmp_path, "first", _base(b"first parent\n"))
    second = _image(tmp_path, "second", _base(b"second parent\n"))
    assert first.diff_ids[1] == second.diff_ids[1]  # the same layer blob
    work_dir = tmp_path / "work"
    assert _pull(first, tmp_path / "b1", work_dir, "--snapshotter", "copy") == 0
    assert _pull(second, tmp_path / "b2", work_dir, "--snapshotter", "copy") == 0
    capsys.readouterr()
    # Each bundle sees its own parent's file through the link.
    assert (tmp_path / "b1/rootfs/srv/link").read_bytes() == b"first parent\n"
    assert (tmp_path / "b2/rootfs/srv/link").read_bytes() == b"second parent\n"
    names = {d.name for d in store_layer_dirs(work_dir)}
    assert names == {
        _hex(first.diff_ids[0]),
        _hex(second.diff_ids[0]),
        _hex(_chain_id(first.diff_ids)),
        _hex(_chain_id(second.diff_ids)),
    }
    # Pulled again over the first parents, the chain-keyed layer is reused (not downloaded) and still right.
    assert _pull(first, tmp_path / "b3", work_dir, "--snapshotter", "copy") == 0
    result = json.loads(capsys.readouterr().out)
    assert [layer["downloaded"] for layer in result["layers"]] == [False, False]
    assert (tmp_path / "b3/rootfs/srv/link").read_bytes() == b"first parent\n"
    assert run("images", "--json", "--work-dir", str(work_dir)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(tuple(i["layers"]) for i in listed) == sorted(
        (f.diff_ids[0], _chain_id(f.diff_ids)) for f in (first, second)
    )


@pytest.mark.parametrize("extra_layers", [0, 3], ids=["2-layers", "5-layers"])
def test_parallel_layers_wait_for_their_lower_layers(tmp_path: Path, extra_layers: int) -> None:
    """Several layers at once (the linking layer may meet its link before its lower layers are committed)."""
    big = os.urandom(4 << 20)  # a slow-ish base (incompressible), so upper layers tend to get there first
    base = TarBuilder().dir("etc").file("etc/file", big).build()
    layers = [base]
    for i in range(extra_layers):
        layers.append(TarBuilder().dir(f"l{i}").hardlink(f"l{i}/link", "etc/file").build())
    layers.append(LINK_LAYER)
    image = write_image_layout(tmp_path / "image", layers, config_extra={"Cmd": ["/bin/true"]})
    bundle = tmp_path / "bundle"
    args = ("--snapshotter", "copy", "--max-concurrent-downloads", "3")
    assert _pull(image, bundle, tmp_path / "work", *args) == 0
    rootfs = bundle / "rootfs"
    inode = (rootfs / "srv/link").stat().st_ino
    assert (rootfs / "etc/file").stat().st_ino == inode
    assert (rootfs / "srv/link").read_bytes() == big
    # A lower layer's own copy-up of the same file is an older inode, hidden by the top layer's.
    for i in range(extra_layers):
        assert (rootfs / f"l{i}/link").read_bytes() == big


def test_link_to_a_name_in_no_lower_layer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = TarBuilder().hardlink("srv/link", "etc/missing").build()
    image = write_image_layout(tmp_path / "image", [_base(b"x"), bad], config_extra={"Cmd": ["/bin/true"]})
    bundle = tmp_path / "bundle"
    assert _pull(image, bundle, tmp_path / "work", "--snapshotter", "copy") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert "layer 1" in err[0]
    assert "'srv/link'" in err[0]
    assert "'etc/missing'" in err[0]
    assert not bundle.exists()


def test_link_to_a_file_whited_out_in_a_middle_layer_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    middle = TarBuilder().dir("etc").whiteout("etc/file").build()
    image = write_image_layout(
        tmp_path / "image", [_base(b"x"), middle, LINK_LAYER], config_extra={"Cmd": ["/bin/true"]}
    )
    assert _pull(image, tmp_path / "bundle", tmp_path / "work", "--snapshotter", "copy") == 1
    err = capsys.readouterr().err
    assert "layer 2" in err
    assert "'srv/link'" in err
    assert "whiteout" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")
def test_overlay_snapshotter_shows_the_link(tmp_path: Path) -> None:
    image = _image(tmp_path, "image", _base(b"from the base\n"))
    bundle = tmp_path / "bundle"
    probe = tmp_path / "probe"
    probe.mkdir()
    if not overlay_available(probe):
        pytest.skip("overlay mounts are not permitted here")
    assert _pull(image, bundle, tmp_path / "work", "--snapshotter", "overlay") == 0
    rootfs = bundle / "rootfs"
    try:
        assert os.path.ismount(rootfs)
        assert (rootfs / "srv/link").read_bytes() == (rootfs / "etc/file").read_bytes() == b"from the base\n"
        assert (rootfs / "srv/link").stat().st_ino == (rootfs / "etc/file").stat().st_ino
        assert (rootfs / "etc/other").read_bytes() == b"other\n"
    finally:
        unmount(rootfs)
