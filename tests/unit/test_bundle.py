"""Bundle writing (copy and overlay snapshotters; whole, or prepared, filled by the caller and finished),
refusal of non-empty bundles, cleanup on failure, and the kernel overlay mount itself (root only; skipped where
this sandbox cannot mount)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError, ProtocolError, TransportError, UnsupportedError
from cocoguest.image.bundle import rootfs as rootfs_module
from cocoguest.image.bundle import writer
from cocoguest.image.bundle.rootfs import mount_overlay, overlay_available, unmount
from cocoguest.image.bundle.writer import check_bundle, finish_bundle, prepare_bundle, write_bundle

IMAGE_CONFIG: dict[str, object] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "alice",
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve"],
        "Env": ["A=1"],
        "WorkingDir": "/srv",
        "Volumes": {"/data": {}},
        "Labels": {"com.example": "yes"},
    },
    "rootfs": {"type": "layers", "diff_ids": []},
}


def fake_merge(layer_dirs: Sequence[Path], target: Path) -> None:
    """A stand-in for image.fs.merge.merge_layers: copy trees lowest first (no whiteout handling)."""
    for layer in layer_dirs:
        shutil.copytree(layer, target, symlinks=True, dirs_exist_ok=True)


def _failing_merge(layer_dirs: Sequence[Path], target: Path) -> None:
    fake_merge(layer_dirs[:1], target)
    msg = "disk full"
    raise OSError(28, msg)


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    base = tmp_path / "layers" / "sha256:base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    (base / "etc" / "group").write_text("root:x:0:\nalice:x:1000:\nusers:x:100:alice\n")
    (base / "bin").mkdir()
    (base / "bin" / "app").write_text("#!/bin/sh\n")
    (base / "srv").mkdir()
    (base / "old").write_text("from base")
    top = tmp_path / "layers" / "sha256:top,x"
    (top / "srv").mkdir(parents=True)
    (top / "srv" / "new").write_text("from top")
    return [base, top]


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points a test created; unmounted at teardown even if the test failed."""
    created: list[Path] = []
    yield created
    for target in reversed(created):
        if os.path.ismount(target):
            unmount(target)


@pytest.fixture(scope="module")
def can_overlay(tmp_path_factory: pytest.TempPathFactory) -> bool:
    return overlay_available(tmp_path_factory.mktemp("probe"))


def _require_overlay(can_overlay: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay mounts need root")
    if not can_overlay:
        pytest.skip("this sandbox does not permit overlay mounts (probe mount failed)")


def _listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "<dir>") for p in sorted(root.rglob("*"))}


def test_copy_bundle(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "out" / "bundle"
    result = write_bundle(
        bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "work", merge=fake_merge
    )
    assert result.bundle == bundle
    assert result.rootfs == bundle / "rootfs"
    assert result.snapshotter == "copy"
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]  # no temp file left
    assert (bundle / "rootfs" / "srv" / "new").read_text() == "from top"
    assert (bundle / "rootfs" / "old").read_text() == "from base"
    config = json.loads((bundle / "config.json").read_text())
    assert config == result.config
    assert stat.S_IMODE((bundle / "config.json").stat().st_mode) == 0o644
    process = config["process"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 100]}
    assert process["args"] == ["/bin/app", "--serve"]
    assert process["cwd"] == "/srv"
    assert config["annotations"]["com.example"] == "yes"
    assert config["mounts"][-1]["destination"] == "/data"
    assert (bundle / "config.json").read_text().startswith('{\n  "ociVersion"')  # indent 2
    assert not (tmp_path / "work").exists()  # the copy snapshotter needs no overlay dirs


def test_caller_annotations(tmp_path: Path, layers: list[Path]) -> None:
    result = write_bundle(
        tmp_path / "b",
        layers,
        IMAGE_CONFIG,
        snapshotter="copy",
        work_root=tmp_path / "w",
        merge=fake_merge,
        annotations={"io.cocoguest.image": "x"},
    )
    annotations = result.config["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["io.cocoguest.image"] == "x"


def test_existing_empty_bundle_dir_is_used(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "w", merge=fake_merge)
    assert (bundle / "config.json").is_file()


def test_existing_non_empty_bundle_is_refused_and_untouched(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text("precious")
    before = _listing(bundle)
    calls: list[Path] = []

    def merge(layer_dirs: Sequence[Path], target: Path) -> None:
        calls.append(target)

    with pytest.raises(ConfigError, match=f"bundle {bundle}: directory exists and is not empty"):
        write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "w", merge=merge)
    assert _listing(bundle) == before
    assert calls == []


def test_bundle_path_that_is_a_file_is_refused(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "file"
    bundle.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "w", merge=fake_merge)
    assert bundle.read_text() == "x"


def test_malformed_config_creates_nothing(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    bad = {"os": "linux", "config": {"Cmd": "not-a-list"}}
    with pytest.raises(ProtocolError, match=r"Config\.Cmd"):
        write_bundle(bundle, layers, bad, snapshotter="copy", work_root=tmp_path / "w", merge=fake_merge)
    assert not bundle.exists()


def test_merge_failure_removes_created_bundle_and_parents(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "a" / "b" / "bundle"
    with pytest.raises(OSError, match="disk full"):
        write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "w", merge=_failing_merge)
    assert not (tmp_path / "a").exists()


def test_unknown_user_cleans_up_but_keeps_preexisting_empty_bundle(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = json.loads(json.dumps(IMAGE_CONFIG))
    config["config"]["User"] = "mallory"
    with pytest.raises(ConfigError, match="image user 'mallory': no such user"):
        write_bundle(bundle, layers, config, snapshotter="copy", work_root=tmp_path / "w", merge=fake_merge)
    assert bundle.is_dir()
    assert list(bundle.iterdir()) == []


def test_auto_falls_back_to_copy(
    tmp_path: Path, layers: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(lower_dirs: Sequence[Path], target: Path, work_root: Path) -> None:
        msg = f"overlay mount on {target}: Operation not permitted"
        raise UnsupportedError(msg)

    monkeypatch.setattr(writer, "mount_overlay", refuse)
    caplog.set_level("INFO", logger=writer.__name__)
    result = write_bundle(
        tmp_path / "bundle", layers, IMAGE_CONFIG, snapshotter="auto", work_root=tmp_path / "w", merge=fake_merge
    )
    assert result.snapshotter == "copy"
    assert (result.rootfs / "srv" / "new").is_file()
    assert "falling back to a merged copy" in caplog.text


def test_explicit_overlay_does_not_fall_back(
    tmp_path: Path, layers: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(lower_dirs: Sequence[Path], target: Path, work_root: Path) -> None:
        msg = "overlay mount: no overlayfs"
        raise UnsupportedError(msg)

    monkeypatch.setattr(writer, "mount_overlay", refuse)
    bundle = tmp_path / "bundle"
    with pytest.raises(UnsupportedError, match="no overlayfs"):
        write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="overlay", work_root=tmp_path / "w", merge=fake_merge)
    assert not bundle.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the refusal for non-root users")
def test_overlay_needs_root(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    with pytest.raises(UnsupportedError, match="needs root"):
        mount_overlay([tmp_path / "l"], tmp_path / "m", tmp_path / "w")
    assert not overlay_available(tmp_path)


# --- kernel overlay (root) -------------------------------------------------------------------------------


def test_overlay_mount_order_and_whiteouts(tmp_path: Path, can_overlay: bool, mounts: list[Path]) -> None:
    _require_overlay(can_overlay)
    low, high = tmp_path / "low:1", tmp_path / "high,2"
    (low / "dir").mkdir(parents=True)
    (low / "gone").write_text("hidden by a whiteout")
    (low / "same").write_text("low")
    (low / "keep").write_text("low keep")
    (low / "dir" / "x").write_text("hidden by opaque dir")
    (low / "dir2").mkdir()
    (low / "dir2" / "y").write_text("visible")
    high.mkdir()
    (high / "same").write_text("high")
    os.mknod(high / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # overlay whiteout
    (high / "dir").mkdir()
    os.setxattr(high / "dir", "trusted.overlay.opaque", b"y")
    (high / "dir" / "z").write_text("new")
    lows_before = _listing(low), _listing(high)

    target, work_root = tmp_path / "merged", tmp_path / "work"
    mounts.append(target)
    mount_overlay([low, high], target, work_root)
    assert os.path.ismount(target)
    view = _listing(target)
    assert view == {
        "dir": "<dir>",
        "dir/z": "new",
        "dir2": "<dir>",
        "dir2/y": "visible",
        "keep": "low keep",
        "same": "high",  # the LAST layer given is the top one
    }
    (target / "written").write_text("upper")
    (target / "keep").unlink()
    assert (work_root / "upper" / "written").read_text() == "upper"
    unmount(target)
    assert not os.path.ismount(target)
    assert (_listing(low), _listing(high)) == lows_before  # layers are never written


def test_overlay_upper_must_be_empty(tmp_path: Path, can_overlay: bool) -> None:
    _require_overlay(can_overlay)
    (tmp_path / "l").mkdir()
    (tmp_path / "w" / "upper").mkdir(parents=True)
    (tmp_path / "w" / "upper" / "leftover").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        mount_overlay([tmp_path / "l"], tmp_path / "m", tmp_path / "w")
    assert not os.path.ismount(tmp_path / "m")


def test_overlay_many_layers_use_fd_paths(
    tmp_path: Path, can_overlay: bool, mounts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_overlay(can_overlay)
    lowers = []
    for index in range(120):
        layer = tmp_path / f"layer-{index:03d}-{'x' * 40}"
        layer.mkdir()
        (layer / f"f{index}").write_text(str(index))
        (layer / "shared").write_text(str(index))
        lowers.append(layer)
    seen: list[str] = []
    real_mount = rootfs_module._mount

    def spy(data: str, target: Path) -> None:
        seen.append(data)
        real_mount(data, target)

    monkeypatch.setattr(rootfs_module, "_mount", spy)
    target = tmp_path / "merged"
    mounts.append(target)
    mount_overlay(lowers, target, tmp_path / "work")
    assert "/proc/self/fd/" in seen[0]
    assert (target / "shared").read_text() == "119"
    assert len(list(target.iterdir())) == 121
    unmount(target)


def test_overlay_bundle_and_cleanup_on_failure(
    tmp_path: Path, layers: list[Path], can_overlay: bool, mounts: list[Path]
) -> None:
    _require_overlay(can_overlay)
    bundle, work_root = tmp_path / "bundle", tmp_path / "work"
    mounts.append(bundle / "rootfs")
    merged: list[Path] = []

    def merge(layer_dirs: Sequence[Path], target: Path) -> None:
        merged.append(target)

    result = write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="auto", work_root=work_root, merge=merge)
    assert result.snapshotter == "overlay"
    assert merged == []
    assert os.path.ismount(result.rootfs)
    assert (result.rootfs / "srv" / "new").read_text() == "from top"
    process = result.config["process"]
    assert isinstance(process, dict)
    assert process["user"]["uid"] == 1000
    unmount(result.rootfs)

    # A failure after the mount (unknown user) unmounts and removes everything this call created.
    bundle2, work_root2 = tmp_path / "bundle2", tmp_path / "work2"
    mounts.append(bundle2 / "rootfs")
    config = json.loads(json.dumps(IMAGE_CONFIG))
    config["config"]["User"] = "mallory"
    with pytest.raises(ConfigError, match="mallory"):
        write_bundle(bundle2, layers, config, snapshotter="overlay", work_root=work_root2, merge=merge)
    assert not os.path.ismount(bundle2 / "rootfs")
    assert not bundle2.exists()
    assert not work_root2.exists()
    assert (layers[0] / "etc" / "passwd").is_file()  # the layers survive the cleanup


def test_unmount_not_mounted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("umount2 needs root")
    with pytest.raises(TransportError, match=f"unmount {tmp_path}"):
        unmount(tmp_path)


# --- prepare_bundle / finish_bundle: the caller fills the rootfs (the pull's incremental merge) ---


def test_prepare_fill_finish(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "out" / "bundle"
    prepared = prepare_bundle(bundle, IMAGE_CONFIG, annotations={"io.cocoguest.image": "x"})
    assert prepared.bundle == bundle
    # built beside the target, in a private hidden sibling; the bundle appears only when finished
    assert prepared.rootfs.parent.parent == bundle.parent
    assert prepared.rootfs.parent.name.startswith(".cocoguest-bundle-bundle-")
    assert stat.S_IMODE(prepared.rootfs.parent.stat().st_mode) == 0o700
    assert not bundle.exists()
    assert list(prepared.rootfs.iterdir()) == []
    for layer in layers:  # filled one layer at a time
        fake_merge([layer], prepared.rootfs)
    result = finish_bundle(prepared, IMAGE_CONFIG, annotations={"io.cocoguest.image": "x"})
    assert result.snapshotter == "copy"
    assert result.rootfs == bundle / "rootfs"
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]  # the sibling became the bundle
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]
    assert json.loads((bundle / "config.json").read_text()) == result.config
    process = result.config["process"]
    assert isinstance(process, dict)
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 100]}
    annotations = result.config["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["io.cocoguest.image"] == "x"
    prepared.discard()  # a finished bundle is not discarded any more
    assert (bundle / "config.json").is_file()
    with pytest.raises(ValueError, match="already finished or discarded"):
        finish_bundle(prepared, IMAGE_CONFIG)


def test_prepare_refuses_non_empty_bundle_and_bad_config_creating_nothing(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "precious").write_text("mine")
    with pytest.raises(ConfigError, match=f"bundle {bundle}: directory exists and is not empty"):
        prepare_bundle(bundle, IMAGE_CONFIG)
    with pytest.raises(ConfigError, match="not empty"):
        check_bundle(bundle, IMAGE_CONFIG)
    assert [p.name for p in bundle.iterdir()] == ["precious"]
    fresh = tmp_path / "a" / "fresh"
    bad = {"os": "linux", "config": {"Cmd": "not-a-list"}}
    with pytest.raises(ProtocolError, match=r"Config\.Cmd"):
        prepare_bundle(fresh, bad)
    with pytest.raises(ProtocolError, match=r"Config\.Cmd"):
        check_bundle(fresh, bad)
    check_bundle(fresh, IMAGE_CONFIG)  # fine, and creates nothing
    assert not (tmp_path / "a").exists()


def test_discard_removes_what_prepare_created(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "a" / "b" / "bundle"
    prepared = prepare_bundle(bundle, IMAGE_CONFIG)
    fake_merge(layers[:1], prepared.rootfs)  # half-filled
    prepared.discard()
    prepared.discard()  # idempotent
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="already finished or discarded"):
        finish_bundle(prepared, IMAGE_CONFIG)

    existing = tmp_path / "existing"
    existing.mkdir()
    prepared = prepare_bundle(existing, IMAGE_CONFIG)
    fake_merge(layers, prepared.rootfs)
    prepared.discard()
    assert existing.is_dir()
    assert list(existing.iterdir()) == []


def test_finish_failure_discards_but_keeps_preexisting_empty_bundle(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = json.loads(json.dumps(IMAGE_CONFIG))
    config["config"]["User"] = "mallory"
    prepared = prepare_bundle(bundle, config)
    fake_merge(layers, prepared.rootfs)
    with pytest.raises(ConfigError, match="image user 'mallory': no such user"):
        finish_bundle(prepared, config)
    assert bundle.is_dir()
    assert list(bundle.iterdir()) == []


# --- built beside the target, renamed into place; private to the owner -------------------------------------


def test_stale_build_siblings_are_removed_live_ones_kept(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    stale = tmp_path / ".cocoguest-bundle-bundle-stale"
    (stale / "rootfs" / "etc").mkdir(parents=True)  # a killed build: half a rootfs, no config.json
    live = tmp_path / ".cocoguest-bundle-bundle-live"
    live.mkdir()
    other = tmp_path / ".cocoguest-bundle-other-stale"  # another bundle's build: not ours to judge
    other.mkdir()
    live_fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(live_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a build in progress holds its lock
        write_bundle(bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=tmp_path / "w", merge=fake_merge)
    finally:
        os.close(live_fd)
    assert not stale.exists()
    assert live.is_dir()
    assert other.is_dir()
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]


def test_bundle_that_appears_meanwhile_is_refused_and_untouched(tmp_path: Path, layers: list[Path]) -> None:
    bundle = tmp_path / "bundle"
    prepared = prepare_bundle(bundle, IMAGE_CONFIG)
    fake_merge(layers, prepared.rootfs)
    bundle.mkdir()
    (bundle / "theirs").write_text("another pull won")
    with pytest.raises(ConfigError, match=f"bundle {bundle}: directory exists and is not empty"):
        finish_bundle(prepared, IMAGE_CONFIG)
    assert [p.name for p in tmp_path.iterdir() if p.name != "layers"] == ["bundle"]  # our build dir is gone
    assert [p.name for p in bundle.iterdir()] == ["theirs"]


def _nobody_can(path: Path) -> bool:
    """Whether user ``nobody`` (no groups) sees ``path`` exist (needs root and setpriv)."""
    probe = subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "test", "-e", str(path)],
        check=False,
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("switching to user nobody needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    path = Path(tempfile.mkdtemp(prefix="cocoguest-public-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_copy_bundle_is_private_to_its_owner(public_dir: Path, layers: list[Path]) -> None:
    bundle = public_dir / "bundle"
    result = write_bundle(
        bundle, layers, IMAGE_CONFIG, snapshotter="copy", work_root=public_dir / "w", merge=fake_merge
    )
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert _nobody_can(public_dir)  # the check itself works: nobody reaches the parent
    assert (result.rootfs / "bin" / "app").is_file()
    assert not _nobody_can(result.rootfs / "bin" / "app")


def test_overlay_bundle_is_private_to_its_owner(
    public_dir: Path, layers: list[Path], can_overlay: bool, mounts: list[Path]
) -> None:
    _require_overlay(can_overlay)
    bundle = public_dir / "bundle"
    mounts.append(bundle / "rootfs")
    result = write_bundle(
        bundle, layers, IMAGE_CONFIG, snapshotter="overlay", work_root=bundle / ".overlay", merge=fake_merge
    )
    assert result.snapshotter == "overlay"
    assert os.path.ismount(result.rootfs)
    assert (bundle / ".overlay" / "upper").is_dir()  # the overlay state moved into place with the bundle
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert _nobody_can(public_dir)
    assert (result.rootfs / "bin" / "app").is_file()
    assert not _nobody_can(result.rootfs / "bin" / "app")
