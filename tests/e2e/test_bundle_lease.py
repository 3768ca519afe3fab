"""A bundle holds a lease on its layers: rmi + prune keep a live bundle's rootfs intact; `bundle rm` releases it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest

from cocoguest.image.bundle.rootfs import unmount
from tests.e2e.conftest import run, store_layer_dirs
from tests.fixtures.oci_images import WrittenImage


def _pull(image: WrittenImage, bundle: Path, work_dir: Path, snapshotter: str) -> int:
    return run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), "--snapshotter", snapshotter,
               f"oci:{image.path}:latest", str(bundle))  # fmt: skip


def _rootfs_is_intact(rootfs: Path) -> None:
    assert (rootfs / "data" / "keep.txt").read_text() == "keep\n"
    assert (rootfs / "data" / "new.txt").read_text() == "new\n"
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:")
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["upper.txt"]


def _rmi_and_prune(image: WrittenImage, work_dir: Path) -> None:
    assert run("rmi", "--work-dir", str(work_dir), f"oci:{image.path}:latest") == 0
    assert run("prune", "--work-dir", str(work_dir)) == 0


@pytest.mark.parametrize("snapshotter", ["copy", "overlay"])
def test_rmi_and_prune_keep_a_live_bundles_layers_until_bundle_rm(
    image: WrittenImage, tmp_path: Path, work_dir: Path, snapshotter: Literal["copy", "overlay"]
) -> None:
    if snapshotter == "overlay" and os.geteuid() != 0:
        pytest.skip("overlay mounts need root")
    bundle = tmp_path / "bundle"
    status = _pull(image, bundle, work_dir, snapshotter)
    if snapshotter == "overlay" and status != 0:
        pytest.skip("overlay mounts are not permitted here")
    assert status == 0
    rootfs = bundle / "rootfs"
    try:
        assert os.path.ismount(rootfs) == (snapshotter == "overlay")
        layers = store_layer_dirs(work_dir)
        assert len(layers) == 2
        _rmi_and_prune(image, work_dir)
        assert run("images", "--work-dir", str(work_dir)) == 0
        assert store_layer_dirs(work_dir) == layers  # the live bundle's lease kept them
        _rootfs_is_intact(rootfs)
        assert run("bundle", "rm", "--work-dir", str(work_dir), str(bundle)) == 0
        assert not os.path.ismount(rootfs)
        assert not bundle.exists()
        assert store_layer_dirs(work_dir) == layers  # bundle rm only releases; prune deletes
        assert run("prune", "--work-dir", str(work_dir)) == 0
        assert store_layer_dirs(work_dir) == []
    finally:
        if os.path.ismount(rootfs):
            unmount(rootfs)


def test_lease_of_a_bundle_deleted_by_hand_is_dropped_by_prune(
    image: WrittenImage, tmp_path: Path, work_dir: Path
) -> None:
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    assert _pull(image, kept, work_dir, "copy") == 0
    assert _pull(image, gone, work_dir, "copy") == 0
    _rmi_and_prune(image, work_dir)
    assert len(store_layer_dirs(work_dir)) == 2
    assert run("bundle", "rm", "--work-dir", str(work_dir), str(kept)) == 0
    assert run("prune", "--work-dir", str(work_dir)) == 0
    assert len(store_layer_dirs(work_dir)) == 2  # "gone" still uses them
    (gone / "config.json").unlink()
    os.rename(gone, tmp_path / "elsewhere")  # deleted by hand, as far as the store can tell
    assert run("prune", "--work-dir", str(work_dir)) == 0
    assert store_layer_dirs(work_dir) == []


def test_bundle_rm_refuses_what_is_not_a_bundle(
    tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    (precious / "rootfs").mkdir(parents=True)
    (precious / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run("bundle", "rm", "--work-dir", str(work_dir), str(precious)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: bundle {precious}: not a bundle")
    assert len(err.splitlines()) == 1
    assert (precious / "notes.txt").read_text() == "mine"
    assert run("bundle", "rm", "--work-dir", str(work_dir), str(tmp_path / "missing")) == 1
    assert f"error: bundle {tmp_path / 'missing'}: does not exist" in capsys.readouterr().err
