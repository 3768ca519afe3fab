"""``cocoguest fsck [--repair]``: a corrupt metadata DB is reported (by every command, with the way out) and
rebuilt from the verified layer directories; layers are then reused by the next pull, lost images are reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import run, store_layer_dirs
from tests.fixtures.images import layer_blobs
from tests.fixtures.oci_images import WrittenImage


def _pull(image: WrittenImage, bundle: Path, work_dir: Path) -> int:
    return run("pull", "--insecure-policy", "--json", "--work-dir", str(work_dir), "--snapshotter", "copy",
               f"oci:{image.path}:latest", str(bundle))  # fmt: skip


def test_corrupt_db_is_reported_and_rebuilt_from_the_layers(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pull(image, tmp_path / "b1", work_dir) == 0
    layers = store_layer_dirs(work_dir)
    assert len(layers) == 2
    assert run("fsck", "--work-dir", str(work_dir)) == 0
    capsys.readouterr()
    db = work_dir / "metadata.db"
    for side in ("metadata.db-wal", "metadata.db-shm"):
        (work_dir / side).unlink(missing_ok=True)
    db.write_bytes(b"\x8f garbage, not SQLite " * 300)

    # Every command fails with one line that names the file and the way out.
    assert run("images", "--work-dir", str(work_dir)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert str(db) in err[0]
    assert "cocoguest fsck --repair" in err[0]

    assert run("fsck", "--work-dir", str(work_dir)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(db) in err[0]
    assert "fsck --repair" in err[0]
    assert store_layer_dirs(work_dir) == layers  # a check changes nothing

    assert run("fsck", "--repair", "--work-dir", str(work_dir)) == 0
    out = capsys.readouterr().out
    assert "2 layers recovered" in out
    assert "image records are lost" in out
    assert store_layer_dirs(work_dir) == layers
    assert list(work_dir.glob("metadata.db.corrupt-*"))  # kept, not deleted
    assert run("fsck", "--work-dir", str(work_dir)) == 0
    capsys.readouterr()
    assert run("images", "--json", "--work-dir", str(work_dir)) == 0
    assert json.loads(capsys.readouterr().out) == []  # lost, not invented

    # The same image pulls again without fetching a layer blob: the recovered layers (and the blob sources
    # they were verified from) are used.
    for desc, _ in layer_blobs(image.path):
        (image.path / "blobs" / "sha256" / str(desc["digest"]).removeprefix("sha256:")).unlink()
    assert _pull(image, tmp_path / "b2", work_dir) == 0
    result = json.loads(capsys.readouterr().out)
    assert [layer["downloaded"] for layer in result["layers"]] == [False, False]
    assert (tmp_path / "b2" / "rootfs" / "data" / "new.txt").read_text() == "new\n"


def test_fsck_finds_and_repairs_rows_and_directories_that_disagree(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pull(image, tmp_path / "b1", work_dir) == 0
    capsys.readouterr()
    lost = store_layer_dirs(work_dir)[0]
    shutil.rmtree(lost)
    assert run("fsck", "--work-dir", str(work_dir)) == 1
    captured = capsys.readouterr()
    assert "is gone" in captured.out
    assert captured.err.startswith("error: ")
    assert run("fsck", "--repair", "--work-dir", str(work_dir)) == 0
    out = capsys.readouterr().out
    assert f"image {image.manifest_digest} is lost" in out
    assert run("fsck", "--work-dir", str(work_dir)) == 0
    capsys.readouterr()
    assert run("images", "--json", "--work-dir", str(work_dir)) == 0
    assert json.loads(capsys.readouterr().out) == []
