"""`cocoguest pull oci:...`: bundle contents, config.json, cache hits, store commands, encryption, failures;
the copy snapshotter's incremental merge (in layer order, while layers download; cleanup on failure)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Literal

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import CocoError, ConfigError, ProtocolError
from cocoguest.image.bundle.rootfs import unmount
from cocoguest.image.fs.listing import rootfs_listing
from cocoguest.image.fs.merge import IncrementalMerge, merge_layers
from cocoguest.image.fs.whiteouts import detect_whiteout_format
from cocoguest.image.layer.fetch import pull_layer
from cocoguest.image.layout import OciLayoutImageSource
from cocoguest.image.pull import LAYER_SWITCH_INTERVAL_S, PullOptions, pull_image
from cocoguest.image.sources import OpenedSource
from cocoguest.oci.descriptor import Descriptor
from cocoguest.oci.image_name import LayoutImageName
from cocoguest.signature.request import InsecureAcceptAnything
from tests.e2e.conftest import read_config, run, store_layer_dirs
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout

_CMD = {"Cmd": ["/a.txt"]}  # an image without a command is refused before its layers are pulled


def _pull(image: WrittenImage, bundle: Path, work_dir: Path, *extra: str) -> int:
    return run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), *extra, f"oci:{image.path}:latest",
               str(bundle))  # fmt: skip


def test_pull_copy_snapshotter_applies_the_changeset(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    assert _pull(image, bundle, work_dir, "--snapshotter", "copy") == 0
    rootfs = bundle / "rootfs"
    assert (rootfs / "data" / "keep.txt").read_text() == "keep\n"
    assert not (rootfs / "data" / "old.txt").exists()  # whiteout
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["upper.txt"]  # opaque dir
    assert os.stat(rootfs / "data" / "new.txt").st_ino == os.stat(rootfs / "data" / "new-link.txt").st_ino
    assert os.readlink(rootfs / "bin" / "sh-link") == "tool"
    assert os.stat(rootfs / "bin" / "tool").st_mode & 0o7777 == 0o4755
    config = read_config(bundle)
    process = config["process"]
    assert isinstance(process, dict)
    assert process["args"] == ["/bin/tool", "--help"]
    assert process["cwd"] == "/data"
    assert process["user"]["uid"] == 1000
    assert process["user"]["gid"] == 1000
    assert 2000 in process["user"]["additionalGids"]
    assert config["root"] == {"path": "rootfs", "readonly": False}


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")
def test_pull_overlay_snapshotter(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    status = _pull(image, bundle, work_dir, "--snapshotter", "overlay")
    if status != 0:
        pytest.skip("overlay mounts are not permitted here")
    second = tmp_path / "second"
    try:
        rootfs = bundle / "rootfs"
        assert os.path.ismount(rootfs)
        assert not (rootfs / "data" / "old.txt").exists()
        assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["upper.txt"]
        assert _pull(image, second, work_dir, "--snapshotter", "overlay") == 0
        (rootfs / "scratch").write_text("written by the container")  # goes to the upper dir, not the store
        assert not any((d / "diff" / "scratch").exists() for d in store_layer_dirs(work_dir))
        # SECURITY: each bundle has its own writable layer: nothing leaks into another container
        assert not (second / "rootfs" / "scratch").exists()
    finally:
        unmount(bundle / "rootfs")
        if os.path.ismount(second / "rootfs"):
            unmount(second / "rootfs")


def test_second_pull_uses_the_store_and_store_commands(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pull(image, tmp_path / "b1", work_dir, "--snapshotter", "copy") == 0
    layers_before = store_layer_dirs(work_dir)
    assert len(layers_before) == 2
    capsys.readouterr()
    assert run("pull", "--insecure-policy", "--json", "--work-dir", str(work_dir), "--snapshotter", "copy",
               f"oci:{image.path}:latest", str(tmp_path / "b2")) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert [layer["downloaded"] for layer in result["layers"]] == [False, False]
    assert result["manifest_digest"] == image.manifest_digest
    assert result["config_digest"] == image.config_digest
    assert store_layer_dirs(work_dir) == layers_before
    assert run("images", "--json", "--work-dir", str(work_dir)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["manifest_digest"] for i in listed] == [image.manifest_digest]
    assert run("rmi", "--work-dir", str(work_dir), listed[0]["references"][0]) == 0
    assert run("prune", "--work-dir", str(work_dir)) == 0
    assert store_layer_dirs(work_dir) == layers_before  # the bundles still use them
    for bundle in ("b1", "b2"):
        assert run("bundle", "rm", "--work-dir", str(work_dir), str(tmp_path / bundle)) == 0
    assert run("prune", "--work-dir", str(work_dir)) == 0
    assert store_layer_dirs(work_dir) == []


def test_existing_bundle_is_refused(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "precious").write_text("mine")
    assert _pull(image, bundle, work_dir) == 1
    assert [p.name for p in bundle.iterdir()] == ["precious"]


def test_policy_is_required(
    image: WrittenImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cocoguest.cli.pull._DEFAULT_POLICY", tmp_path / "no-policy.json")
    assert run("pull", "--work-dir", str(tmp_path / "w"), f"oci:{image.path}", str(tmp_path / "b")) == 1
    assert "--insecure-policy" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "w").exists()


def _keypair(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


def test_encrypted_image(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _keypair(tmp_path)
    enc = tmp_path / "enc"
    assert run("copy", "-q", "--encryption-key", f"jwe:{public}", f"oci:{image.path}:latest", f"oci:{enc}:latest") == 0
    # without the key: a clear error and nothing new in the store
    assert run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), f"oci:{enc}", str(tmp_path / "b0")) == 1
    assert "missing private key" in capsys.readouterr().err
    assert store_layer_dirs(work_dir) == []
    key_args = ["--decryption-key", str(private), "--snapshotter", "copy"]
    assert run("pull", "--insecure-policy", "-q", "--require-encryption", "--work-dir", str(work_dir), *key_args,
               f"oci:{enc}", str(tmp_path / "b1")) == 0  # fmt: skip
    assert (tmp_path / "b1" / "rootfs" / "data" / "new.txt").read_text() == "new\n"
    # the plain image's layers are shared with the encrypted one (same diff_ids), but a cache hit still
    # needs the key for the encrypted image
    assert run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), f"oci:{enc}", str(tmp_path / "b2")) == 1
    # and an unencrypted image is refused when encryption is required
    assert run("pull", "--insecure-policy", "-q", "--require-encryption", "--work-dir", str(work_dir),
               f"oci:{image.path}", str(tmp_path / "b3")) == 1  # fmt: skip
    assert "encryption is required" in capsys.readouterr().err


def _with_wrong_diff_id(tmp_path: Path) -> WrittenImage:
    good = TarBuilder().file("a.txt", b"a").build()
    other = TarBuilder().file("b.txt", b"b").build()
    written = write_image_layout(tmp_path / "bad", [good], config_extra=_CMD)
    # Swap the blob for another valid gzip tar and fix the manifest, so only the diff_id can catch it.
    from tests.fixtures.oci_images import compress, sha256_digest  # noqa: PLC0415

    blob = compress(other, "gzip")
    (tmp_path / "bad" / "blobs" / "sha256" / sha256_digest(blob).split(":")[1]).write_bytes(blob)
    manifest_path = tmp_path / "bad" / "blobs" / "sha256" / written.manifest_digest.split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0].update(digest=sha256_digest(blob), size=len(blob))
    data = json.dumps(manifest).encode()
    new_path = tmp_path / "bad" / "blobs" / "sha256" / sha256_digest(data).split(":")[1]
    new_path.write_bytes(data)
    index = json.loads((tmp_path / "bad" / "index.json").read_text())
    index["manifests"][0].update(digest=sha256_digest(data), size=len(data))
    (tmp_path / "bad" / "index.json").write_text(json.dumps(index))
    return written


def test_diff_id_mismatch_commits_nothing(tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _with_wrong_diff_id(tmp_path)
    assert _pull(bad, tmp_path / "bundle", work_dir) == 1
    assert "diff_id" in capsys.readouterr().err
    assert store_layer_dirs(work_dir) == []
    assert not (tmp_path / "bundle").exists()


def test_hostile_layer_is_refused(tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    hostile = TarBuilder().symlink("escape", str(tmp_path)).file("escape/canary", b"overwritten").build()
    image = write_image_layout(tmp_path / "hostile", [hostile], config_extra=_CMD)
    assert _pull(image, tmp_path / "bundle", work_dir) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "escape" in err
    assert canary.read_text() == "untouched"
    assert store_layer_dirs(work_dir) == []


# --- the copy snapshotter merges incrementally: layer i as soon as 0..i are committed, while others download ---


class _GatedSource:
    """An OCI layout source whose layer blobs can wait for an event first, or come back corrupted."""

    def __init__(self, image: WrittenImage) -> None:
        self.inner = OciLayoutImageSource(LayoutImageName.parse(f"oci:{image.path}:latest"))
        self.gates: dict[str, threading.Event] = {}
        self.corrupt: set[str] = set()
        self.opened: list[str] = []  # layer blobs only (the config is a blob too)
        self._layers = set(image.layer_digests)
        self.timed_out: list[str] = []

    def describe(self) -> str:
        return self.inner.describe()

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        return self.inner.get_manifest(digest)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        digest = str(desc.digest)
        if digest in self._layers:
            self.opened.append(digest)
        gate = self.gates.get(digest)
        if gate is not None and not gate.wait(timeout=10):
            self.timed_out.append(digest)
        if digest in self.corrupt:
            with self.inner.open_blob(desc) as stream:
                data = bytearray(stream.read())
            data[len(data) // 2] ^= 0xFF
            return io.BytesIO(bytes(data))
        return self.inner.open_blob(desc)

    def close(self) -> None:
        self.inner.close()


def _options(work_dir: Path, snapshotter: Literal["overlay", "copy", "auto"] = "copy") -> PullOptions:
    return PullOptions(work_dir=work_dir, policy=InsecureAcceptAnything(), max_concurrent=4, snapshotter=snapshotter)


class _Merged:
    """The layers IncrementalMerge.add merged (``layer N (digest)``), in order, and an event per layer."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())


@pytest.fixture
def merged(monkeypatch: pytest.MonkeyPatch) -> _Merged:
    seen = _Merged()
    original = IncrementalMerge.add

    def add(self: IncrementalMerge, layer_dir: Path, *, name: str | None = None) -> None:
        assert threading.current_thread() is threading.main_thread()  # never in a layer thread
        original(self, layer_dir, name=name)
        seen.order.append(str(name))
        seen.event(str(name)).set()

    monkeypatch.setattr(IncrementalMerge, "add", add)
    return seen


def _four_layers() -> list[bytes]:
    """Layers whose merge depends on their order: overwrites, whiteouts, opaque dirs, type changes."""
    return [
        TarBuilder().dir("etc").file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").dir("a", mode=0o750)
        .file("a/x", b"x0").file("a/y", b"y0").file("b", b"b is a file").dir("c").dir("c/deep")
        .file("c/deep/f", b"f0").symlink("a/link", "x").build(),
        TarBuilder().file("a/x", b"x1", mode=0o600).whiteout("a/y").dir("b").file("b/inner", b"now a dir")
        .opaque("c").file("c/new", b"new").dir("a", mode=0o700).build(),
        TarBuilder().whiteout("b").symlink("b", "a/x").file("a/x", b"x2").hardlink("a/x2", "a/x").dir("d")
        .file("d/gone", b"g").fifo("a/pipe").build(),
        TarBuilder().whiteout("d").file("a/y", b"y3").file("c/deep2", b"z" * 5000).build(),
    ]  # fmt: skip


def _layer_names(image: WrittenImage) -> list[str]:
    return [f"layer {i} ({d})" for i, d in enumerate(image.layer_digests)]


def _dir_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}


def test_incremental_merge_matches_merge_layers(
    tmp_path: Path, work_dir: Path, merged: _Merged, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_image_layout(tmp_path / "img", _four_layers(), config_extra=_CMD)
    names = _layer_names(image)
    source = _GatedSource(image)
    # Layer 0 arrives last, so 1..3 wait committed for it; layer 3 is only served once 0..2 are merged, which
    # can only happen if the merge runs while layers are still being pulled.
    source.gates[image.layer_digests[0]] = gate0 = threading.Event()
    source.gates[image.layer_digests[3]] = merged.event(names[2])
    monkeypatch.setattr("cocoguest.image.pull.overlay_available", lambda _probe: False)  # auto -> copy
    threading.Timer(0.3, gate0.set).start()
    bundle = tmp_path / "bundle"
    result = pull_image(OpenedSource(source, LayoutImageName(image.path, "latest")), bundle, _options(work_dir, "auto"))
    assert result.snapshotter == "copy"
    assert source.timed_out == []
    assert merged.order == names  # strictly in layer order
    # The same layers merged in one go after the fact give the same tree.
    reference = tmp_path / "reference"
    reference.mkdir()
    layer_dirs = [work_dir / "layers" / "sha256" / d.split(":")[1] / "diff" for d in image.diff_ids]
    merge_layers(layer_dirs, reference, what="reference", whiteouts=detect_whiteout_format(work_dir))
    rootfs = bundle / "rootfs"
    assert rootfs_listing(rootfs) == rootfs_listing(reference)
    assert _dir_mtimes(rootfs) == _dir_mtimes(reference)
    assert (rootfs / "a" / "y").read_bytes() == b"y3"
    assert os.readlink(rootfs / "b") == "a/x"
    assert not (rootfs / "d").exists()
    assert sorted(p.name for p in (rootfs / "c").iterdir()) == ["deep2", "new"]
    assert (rootfs / "a" / "x2").stat().st_ino == (rootfs / "a" / "x").stat().st_ino
    assert stat.S_ISFIFO((rootfs / "a" / "pipe").lstat().st_mode)
    assert (bundle / "config.json").is_file()


@pytest.mark.parametrize("preexisting", [False, True], ids=["new-bundle", "empty-bundle-dir"])
def test_failure_in_a_later_layer_removes_the_half_merged_bundle(
    tmp_path: Path, work_dir: Path, merged: _Merged, preexisting: bool
) -> None:
    image = write_image_layout(tmp_path / "img", _four_layers()[:2], config_extra=_CMD)
    names = _layer_names(image)
    source = _GatedSource(image)
    # Layer 1 is served (corrupted) only after layer 0 has been merged into the rootfs.
    source.gates[image.layer_digests[1]] = merged.event(names[0])
    source.corrupt.add(image.layer_digests[1])
    bundle = tmp_path / "parent" / "bundle"
    if preexisting:
        bundle.mkdir(parents=True)
    with pytest.raises(CocoError, match="layer 1"):
        pull_image(OpenedSource(source, LayoutImageName(image.path, "latest")), bundle, _options(work_dir))
    assert source.timed_out == []
    assert merged.order == names[:1]  # layer 0 was merged before layer 1 failed
    if preexisting:
        assert list(bundle.iterdir()) == []
    else:
        assert not (tmp_path / "parent").exists()
    # Only the verified layer is in the store.
    assert [p.name for p in store_layer_dirs(work_dir)] == [image.diff_ids[0].split(":")[1]]


@pytest.mark.parametrize("snapshotter", ["copy", "overlay", "auto"])
def test_non_empty_bundle_is_refused_before_any_layer(
    image: WrittenImage, tmp_path: Path, work_dir: Path, snapshotter: Literal["overlay", "copy", "auto"]
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "precious").write_text("mine")
    source = _GatedSource(image)
    with pytest.raises(ConfigError, match="not empty"):
        pull_image(OpenedSource(source, LayoutImageName(image.path, "latest")), bundle, _options(work_dir, snapshotter))
    assert source.opened == []
    assert store_layer_dirs(work_dir) == []
    assert [p.name for p in bundle.iterdir()] == ["precious"]
    assert (bundle / "precious").read_text() == "mine"


def test_image_without_a_command_is_refused_before_any_layer(tmp_path: Path, work_dir: Path) -> None:
    image = write_image_layout(tmp_path / "img", _four_layers()[:1])
    source = _GatedSource(image)
    with pytest.raises(ProtocolError, match="no command"):
        pull_image(OpenedSource(source, LayoutImageName(image.path, "latest")), tmp_path / "bundle", _options(work_dir))
    assert source.opened == []
    assert store_layer_dirs(work_dir) == []
    assert not (tmp_path / "bundle").exists()


def test_layer_threads_run_with_a_short_switch_interval(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_image_layout(tmp_path / "img", _four_layers()[:2], config_extra=_CMD)
    seen: list[float] = []

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(sys.getswitchinterval())
        return pull_layer(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("cocoguest.image.pull.pull_layer", recording)
    before = sys.getswitchinterval()
    assert before > LAYER_SWITCH_INTERVAL_S
    source = OciLayoutImageSource(LayoutImageName.parse(f"oci:{image.path}:latest"))
    pull_image(OpenedSource(source, LayoutImageName(image.path, "latest")), tmp_path / "bundle", _options(work_dir))
    assert seen == [LAYER_SWITCH_INTERVAL_S] * 2  # lowered while the layers are pulled and merged
    assert sys.getswitchinterval() == before  # and restored afterwards
