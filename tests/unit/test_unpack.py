"""Tests of layer unpacking in overlay form and of the copy snapshotter (cocoguest.image.fs)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cocoguest.errors import ProtocolError, TransportError
from cocoguest.image.fs.listing import rootfs_listing
from cocoguest.image.fs.merge import IncrementalMerge, merge_layers
from cocoguest.image.fs.safe_ops import DIR_FLAGS, DirCache, NotADirectoryInPathError
from cocoguest.image.fs.unpack import UnpackStats, unpack_layer
from cocoguest.image.fs.whiteouts import WhiteoutFormat, detect_whiteout_format
from tests.fixtures.layers import SPARSE_SIZE, Member, TarBuilder, sparse_tar

TRUSTED = WhiteoutFormat.TRUSTED
USER = WhiteoutFormat.USER
FORMATS = pytest.mark.parametrize("fmt", [TRUSTED, USER], ids=["trusted", "user"])
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, trusted xattrs)")


class Layers:
    """Unpack tars into numbered layer dirs under tmp_path and merge them."""

    def __init__(self, base: Path, fmt: WhiteoutFormat) -> None:
        self.base = base
        self.fmt = fmt
        self.dirs: list[Path] = []
        self.stats: list[UnpackStats] = []

    def unpack(self, data: bytes) -> Path:
        root = self.base / f"layer{len(self.dirs)}"
        root.mkdir()
        self.stats.append(unpack_layer(io.BytesIO(data), root, what=f"layer {len(self.dirs)}", whiteouts=self.fmt))
        self.dirs.append(root)
        return root

    def merge(self) -> Path:
        target = self.base / "rootfs"
        target.mkdir()
        merge_layers(self.dirs, target, what="image test", whiteouts=self.fmt)
        return target


@pytest.fixture(params=[TRUSTED, USER], ids=["trusted", "user"])
def layers(request: pytest.FixtureRequest, tmp_path: Path) -> Layers:
    fmt: WhiteoutFormat = request.param
    if fmt is TRUSTED and os.geteuid() != 0:
        pytest.skip("trusted whiteouts need root")
    return Layers(tmp_path, fmt)


def is_whiteout(path: Path, fmt: WhiteoutFormat) -> bool:
    st = path.lstat()
    if fmt.device_whiteouts:
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and os.getxattr(path, "user.overlay.whiteout") == b"y"


def opaque_value(path: Path, fmt: WhiteoutFormat) -> bytes | None:
    try:
        return os.getxattr(path, fmt.opaque_xattr)
    except OSError:
        return None


def names(root: Path) -> list[str]:
    return [row[0] for row in rootfs_listing(root)]


# -- entry kinds -------------------------------------------------------------------------------------------------


@needs_root
def test_entry_kinds_and_metadata(layers: Layers) -> None:
    data = (
        TarBuilder()
        .dir("d", mode=0o1777, uid=10, gid=20, mtime=1_600_000_000)
        .file("d/suid", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000, mtime=1_500_000_000)
        .file("d/sgid", b"", mode=0o2711, uid=3, gid=4)
        .file("d/x", b"data", xattrs={"user.note": b"hello", "trusted.t": b"\x00\x01"})
        .symlink("d/link", "/nowhere/at/all", uid=5, gid=6, mtime=1_400_000_000)
        .hardlink("d/hard", "d/suid")
        .fifo("d/fifo", mode=0o620, uid=7, gid=8)
        .char("d/null", 1, 3, mode=0o666)
        .block("d/loop", 7, 0, mode=0o660)
        .build()
    )
    root = layers.unpack(data)
    d = root / "d"
    st = d.lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o1777, 10, 20, 1_600_000_000 * 10**9)
    st = (d / "suid").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1000)
    assert st.st_mtime_ns == 1_500_000_000 * 10**9
    assert (d / "suid").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((d / "sgid").lstat().st_mode) == 0o2711
    assert os.getxattr(d / "x", "user.note") == b"hello"
    assert os.getxattr(d / "x", "trusted.t") == b"\x00\x01"
    link = (d / "link").lstat()
    assert os.readlink(d / "link") == "/nowhere/at/all"
    assert (link.st_uid, link.st_gid, link.st_mtime_ns) == (5, 6, 1_400_000_000 * 10**9)
    assert (d / "hard").lstat().st_ino == (d / "suid").lstat().st_ino
    fifo = (d / "fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode)
    assert stat.S_IMODE(fifo.st_mode) == 0o620
    assert fifo.st_uid == 7
    null = (d / "null").lstat()
    assert stat.S_ISCHR(null.st_mode)
    assert null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK((d / "loop").lstat().st_mode)
    assert layers.stats[0].files == 3
    assert layers.stats[0].bytes == len(b"#!/bin/sh\n") + 4
    assert layers.stats[0].entries == 9


def test_root_entry_metadata_and_default_mode(tmp_path: Path) -> None:
    plain = Layers(tmp_path, USER)
    root = plain.unpack(TarBuilder().file("f").build())
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    with_dot = Layers(tmp_path / "b", USER)
    (tmp_path / "b").mkdir()
    root = with_dot.unpack(TarBuilder().dir("./", mode=0o750, mtime=1234).file("./f").build())
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
    assert root.stat().st_mtime_ns == 1234 * 10**9


def test_root_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "junk").touch()
    with pytest.raises(ValueError, match="not empty"):
        unpack_layer(io.BytesIO(b""), tmp_path, what="layer x", whiteouts=USER)


def test_nested_dir_mtimes_survive_children(layers: Layers) -> None:
    data = TarBuilder().dir("a", mtime=100).dir("a/b", mtime=200).file("a/b/c", b"1", mtime=300).build()
    root = layers.unpack(data)
    assert [(root / p).lstat().st_mtime_ns // 10**9 for p in ("a", "a/b", "a/b/c")] == [100, 200, 300]


def test_implicit_parents_and_long_names(layers: Layers) -> None:
    name = "x/" + "/".join(["segment" * 10] * 6) + "/file"
    root = layers.unpack(TarBuilder(long_names="gnu").file(name, b"deep").build())
    assert (root / name).read_bytes() == b"deep"
    assert stat.S_IMODE((root / "x").stat().st_mode) == 0o755


def test_tolerant_archive_ends_and_drain(layers: Layers) -> None:
    no_eof = TarBuilder().file("a", b"A" * 10).file("b", b"B" * 600).build(eof_blocks=0, final_padding=False)
    root = layers.unpack(no_eof)
    assert (root / "b").read_bytes() == b"B" * 600
    trailing = TarBuilder().file("c", b"C").build(trailing=b"\0" * 5000 + b"junk")
    stream = io.BytesIO(trailing)
    root = layers.base / "drained"
    root.mkdir()
    unpack_layer(stream, root, what="layer t", whiteouts=layers.fmt)
    assert stream.tell() == len(trailing)


def test_truncated_layer_is_a_protocol_error(layers: Layers) -> None:
    data = TarBuilder().file("a", b"A" * 2000).build()[:1200]
    with pytest.raises(ProtocolError, match=r"layer 0.*truncated"):
        layers.unpack(data)


@pytest.mark.parametrize(("fmt_name", "version"), [("gnu", None), ("posix", "1.0"), ("posix", "0.1")])
def test_sparse_file_keeps_holes(tmp_path: Path, fmt_name: str, version: str | None) -> None:
    archive, content = sparse_tar(tmp_path, fmt=fmt_name, version=version)
    lay = Layers(tmp_path, USER)
    root = lay.unpack(archive)
    out = root / "sparse.bin"
    assert out.read_bytes() == content
    assert out.stat().st_size == SPARSE_SIZE
    assert out.stat().st_blocks * 512 < SPARSE_SIZE // 2  # the holes stayed holes
    assert lay.stats[0].bytes < SPARSE_SIZE // 2
    merged = lay.merge() / "sparse.bin"
    assert merged.read_bytes() == content
    assert merged.stat().st_blocks * 512 < SPARSE_SIZE // 2


def test_overlay_xattrs_from_archive_are_dropped(layers: Layers) -> None:
    forged = {"trusted.overlay.opaque": b"y", "user.overlay.whiteout": b"y", "user.ok": b"1"}
    data = TarBuilder().dir("d", xattrs=forged).file("d/f", b"", xattrs=forged).build()
    root = layers.unpack(data)
    for path in (root / "d", root / "d" / "f"):
        assert os.listxattr(path) == ["user.ok"]
    assert sum("overlay xattr" in note for note in layers.stats[0].skipped) == 4


@needs_root
def test_detect_whiteout_format_as_root(tmp_path: Path) -> None:
    assert detect_whiteout_format(tmp_path) is TRUSTED
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_non_root_skips_devices_and_ownership(tmp_path: Path) -> None:
    """Run an unpack as ``nobody`` in a child process: devices are skipped and listed, chown is skipped."""
    data = TarBuilder().char("dev/null", 1, 3).file("f", b"x", uid=1234, mode=0o4755).whiteout("gone").build()
    (tmp_path / "layer.tar").write_bytes(data)
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 65534, 65534)
    script = (
        "import io, os, sys\n"
        "from pathlib import Path\n"
        "from cocoguest.image.fs.unpack import unpack_layer\n"
        "from cocoguest.image.fs.whiteouts import detect_whiteout_format\n"
        "root_fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "layer = open(sys.argv[2], 'rb')\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "os.fchdir(root_fd)  # the pytest tmp dir is not searchable by nobody\n"
        "root = Path('.')\n"
        "fmt = detect_whiteout_format(root)\n"
        "stats = unpack_layer(layer, root, what='layer nb', whiteouts=fmt)\n"
        "print(fmt.name); print(stats.skipped)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-c", script, str(root), str(tmp_path / "layer.tar")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": os.defpath},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fmt_name, skipped = result.stdout.splitlines()
    assert fmt_name == "user"
    assert "dev/null (char device 1:3: not root)" in skipped
    assert not (root / "dev" / "null").exists()
    st = (root / "f").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o4755)
    assert is_whiteout(root / "gone", USER)


# -- whiteouts within a layer -------------------------------------------------------------------------------------


def test_whiteout_and_opaque_forms(layers: Layers) -> None:
    fmt = layers.fmt
    data = TarBuilder().dir("a").whiteout("a/gone").dir("b").opaque("b").file("b/new", b"n").whiteout("top").build()
    root = layers.unpack(data)
    assert is_whiteout(root / "a" / "gone", fmt)
    assert is_whiteout(root / "top", fmt)
    assert opaque_value(root / "b", fmt) == b"y"
    if fmt is USER:
        # xattr whiteouts are only honoured in directories marked "x" (overlayfs.rst).
        assert opaque_value(root / "a", fmt) == b"x"
        assert opaque_value(root, fmt) == b"x"
    else:
        assert opaque_value(root / "a", fmt) is None
    assert sorted(names(root)) == [".", "a", "a/gone", "b", "b/new", "top"]


def test_whiteout_inside_opaque_dir_is_dropped(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().dir("d").whiteout("d/x").opaque("d").build())
    assert opaque_value(root / "d", layers.fmt) == b"y"
    assert not os.path.lexists(root / "d" / "x")


@pytest.mark.parametrize("order", ["whiteout-first", "dir-first"])
def test_whiteout_and_dir_of_same_layer_make_an_opaque_dir(layers: Layers, order: str) -> None:
    b = TarBuilder()
    if order == "whiteout-first":
        b.whiteout("d").dir("d").file("d/kept")
    else:
        b.dir("d").file("d/kept").whiteout("d")
    root = layers.unpack(b.build())
    assert (root / "d").is_dir()
    assert (root / "d" / "kept").exists()
    assert opaque_value(root / "d", layers.fmt) == b"y"


def test_whiteout_does_not_remove_a_file_of_its_own_layer(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().file("f", b"mine").whiteout("f").file("g", b"later").build())
    assert (root / "f").read_bytes() == b"mine"
    root2 = layers.unpack(TarBuilder().whiteout("f").file("f", b"after").build())
    assert (root2 / "f").read_bytes() == b"after"


def test_implicit_parent_through_a_whiteout(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().whiteout("d").file("d/x", b"1").build())
    assert (root / "d" / "x").read_bytes() == b"1"
    assert opaque_value(root / "d", layers.fmt) == b"y"


def test_zero_zero_char_device_is_a_whiteout(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().char("w", 0, 0).build())
    assert is_whiteout(root / "w", layers.fmt)


def test_reserved_whiteout_names_are_skipped(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().file(".wh..wh.plnk/123").file(".wh..wh.aufs").build())
    assert names(root) == ["."]
    assert any("reserved whiteout" in note for note in layers.stats[0].skipped)


# -- replacement within a layer -----------------------------------------------------------------------------------


def test_later_entries_replace_earlier_ones(layers: Layers) -> None:
    data = (
        TarBuilder()
        .dir("d", mode=0o700)
        .file("d/child", b"c")
        .file("d", b"now a file")  # file replaces dir tree
        .file("e", b"file")
        .dir("e", mode=0o711)  # dir replaces file
        .dir("f", mode=0o700)
        .file("f/keep", b"k")
        .dir("f", mode=0o751, mtime=77)  # dir over dir: metadata only
        .file("g", b"target")
        .hardlink("h", "g")
        .file("h", b"new h")  # replaces the link, g keeps its content
        .symlink("s", "g")
        .file("s", b"not through")  # replaces the symlink, does not write through it
        .build()
    )
    root = layers.unpack(data)
    assert (root / "d").read_bytes() == b"now a file"
    assert (root / "e").is_dir()
    assert stat.S_IMODE((root / "e").stat().st_mode) == 0o711
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o751
    assert (root / "f" / "keep").exists()
    assert (root / "f").stat().st_mtime_ns == 77 * 10**9
    assert (root / "g").read_bytes() == b"target"
    assert (root / "h").read_bytes() == b"new h"
    assert not (root / "s").is_symlink()
    assert (root / "s").read_bytes() == b"not through"


# -- merge (copy snapshotter) -------------------------------------------------------------------------------------


def test_merge_applies_whiteouts_opaque_and_replacements(layers: Layers) -> None:
    layers.unpack(
        TarBuilder()
        .dir("etc")
        .file("etc/hidden", b"h")
        .file("etc/kept", b"k")
        .dir("opq")
        .file("opq/old", b"o")
        .dir("opq/sub")
        .dir("d2f")
        .file("d2f/inner", b"i")
        .file("f2d", b"file")
        .symlink("s2d", "/etc")
        .dir("gone")
        .file("gone/deep", b"g")
        .build()
    )
    layers.unpack(
        TarBuilder()
        .whiteout("etc/hidden")
        .dir("opq")
        .opaque("opq")
        .file("opq/new", b"n")
        .file("d2f", b"was a dir")
        .dir("f2d")
        .file("f2d/child", b"c")
        .dir("s2d")
        .file("s2d/x", b"x")
        .whiteout("gone")
        .build()
    )
    layers.unpack(TarBuilder().file("etc/hidden", b"back").build())
    rootfs = layers.merge()
    assert sorted(names(rootfs)) == [
        ".",
        "d2f",
        "etc",
        "etc/hidden",
        "etc/kept",
        "f2d",
        "f2d/child",
        "opq",
        "opq/new",
        "s2d",
        "s2d/x",
    ]
    assert (rootfs / "etc" / "hidden").read_bytes() == b"back"
    assert (rootfs / "d2f").read_bytes() == b"was a dir"
    assert not (rootfs / "s2d").is_symlink()
    for _, _, _, _, _, _, _, xattrs in rootfs_listing(rootfs):
        assert not any(".overlay." in key for key, _ in xattrs)


@needs_root
def test_merge_preserves_metadata_and_hardlinks(layers: Layers) -> None:
    layers.unpack(
        TarBuilder()
        .dir("bin", mode=0o755, uid=1, gid=1, mtime=1000)
        .file("bin/su", b"su", mode=0o4755, uid=0, gid=0, mtime=2000, xattrs={"security.capability": b"\x01" * 20})
        .hardlink("bin/su2", "bin/su")
        .symlink("bin/sh", "busybox", uid=2, gid=3)
        .fifo("bin/fifo", mode=0o640)
        .char("bin/tty", 5, 0)
        .dir("tmp", mode=0o1777)
        .build()
    )
    layer_dir = layers.dirs[0]
    rootfs = layers.merge()
    assert rootfs_listing(rootfs)[1:] == rootfs_listing(layer_dir)[1:]
    assert (rootfs / "bin" / "su").stat().st_ino == (rootfs / "bin" / "su2").stat().st_ino
    assert (rootfs / "bin").stat().st_mtime_ns == 1000 * 10**9
    assert (rootfs / "bin" / "su").stat().st_mtime_ns == 2000 * 10**9


def test_merge_dir_metadata_from_the_top_layer(layers: Layers) -> None:
    layers.unpack(TarBuilder().dir("d", mode=0o700, xattrs={"user.a": b"1"}).file("d/lower").build())
    layers.unpack(TarBuilder().dir("d", mode=0o755, xattrs={"user.b": b"2"}).file("d/upper").build())
    rootfs = layers.merge()
    assert stat.S_IMODE((rootfs / "d").stat().st_mode) == 0o755
    assert os.listxattr(rootfs / "d") == ["user.b"]
    assert sorted(p.name for p in (rootfs / "d").iterdir()) == ["lower", "upper"]


def test_merge_target_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").touch()
    with pytest.raises(ValueError, match="not empty"):
        merge_layers([], tmp_path, what="image", whiteouts=USER)


@needs_root
@FORMATS
def test_merge_matches_a_kernel_overlay_mount(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    """The copy snapshotter shows what a real overlayfs mount of the same layer dirs shows."""
    lay = Layers(tmp_path, fmt)
    lay.unpack(
        TarBuilder()
        .dir("a")
        .file("a/x", b"1")
        .file("a/y", b"2")
        .dir("o")
        .file("o/old")
        .file("f")
        .dir("d")
        .file("d/in")
        .build()
    )
    lay.unpack(
        TarBuilder().whiteout("a/x").dir("o").opaque("o").file("o/new").dir("f").file("f/c").file("d", b"f").build()
    )
    merged = lay.merge()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(d) for d in reversed(lay.dirs))
    options = f"lowerdir={lower}" + (",userxattr" if fmt is USER else "")
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(mnt)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"overlay mount not available: {mounted.stderr.decode().strip()}")
    try:
        seen = [row[:7] for row in rootfs_listing(mnt)[1:]]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert seen == [row[:7] for row in rootfs_listing(merged)[1:]]
    assert [r[0] for r in seen] == ["a", "a/y", "d", "f", "f/c", "o", "o/new"]


def test_unknown_member_is_kept_as_data(layers: Layers) -> None:
    member = Member("plain", typeflag=b"7", data=b"contiguous")
    root = layers.unpack(TarBuilder().add(member).build())
    assert (root / "plain").read_bytes() == b"contiguous"


def test_incremental_merge_equals_merge_layers(layers: Layers) -> None:
    layers.unpack(TarBuilder().dir("d", mode=0o700).file("d/a", b"1").file("d/b").file("f", b"file").build())
    layers.unpack(TarBuilder().whiteout("d/a").dir("f").file("f/in").dir("d", mode=0o711).file("d/c").build())
    layers.unpack(TarBuilder().opaque("f").file("f/new").dir("d", mode=0o751).file("d/a", b"again").build())
    whole = layers.merge()
    target = layers.base / "incremental"
    target.mkdir()
    with IncrementalMerge(target, what="image test", whiteouts=layers.fmt) as merge:
        for layer in layers.dirs:
            merge.add(layer)
        assert merge.layers == 3
        merge.finish()
    assert rootfs_listing(target) == rootfs_listing(whole)
    assert stat.S_IMODE((target / "d").stat().st_mode) == 0o751  # directory metadata applied by finish
    assert (target / "d" / "a").read_bytes() == b"again"


def test_incremental_merge_state(tmp_path: Path) -> None:
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "f").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    with pytest.raises(ValueError, match="not empty"):
        IncrementalMerge(tmp_path / "full", what="image", whiteouts=USER)
    with pytest.raises(TransportError, match="image: merge target"):
        IncrementalMerge(tmp_path / "missing", what="image", whiteouts=USER)
    (tmp_path / "t").mkdir()
    merge = IncrementalMerge(tmp_path / "t", what="image", whiteouts=USER)
    merge.add(tmp_path / "layer")
    merge.finish()
    with pytest.raises(ValueError, match="image: merge is finished"):
        merge.add(tmp_path / "layer")
    merge.close()  # idempotent after finish
    (tmp_path / "t2").mkdir()
    with IncrementalMerge(tmp_path / "t2", what="image", whiteouts=USER) as closed:
        pass
    with pytest.raises(ValueError, match="image: merge is closed"):
        closed.finish()


def test_incremental_merge_failure_names_the_layer_and_refuses_more(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    merge = IncrementalMerge(tmp_path / "t", what="image x", whiteouts=USER)
    with pytest.raises(TransportError, match=r"image x: merging layer layer 3 \(sha256:ab\)"):
        merge.add(tmp_path / "no-such-layer", name="layer 3 (sha256:ab)")
    with pytest.raises(ValueError, match="merge is failed"):
        merge.add(tmp_path / "no-such-layer")
    merge.close()


# -- the directory fd cache --------------------------------------------------------------------------------------


def test_dir_cache_hands_out_the_right_directory_after_eviction_and_invalidation(tmp_path: Path) -> None:
    for name in ("a", "a/b", "c", "d"):
        (tmp_path / name).mkdir()
    cache = DirCache(os.open(tmp_path, DIR_FLAGS), size=2)

    def inode(components: tuple[str, ...]) -> int:
        return os.fstat(cache.dir_fd(components)).st_ino

    try:
        for path in [("a",), ("a",), ("a", "b"), ("c",), ("d",), ("a",), ("a",), ("a", "b"), (), ("c",), ("c",)]:
            assert inode(path) == (tmp_path.joinpath(*path)).stat().st_ino, path
        old = inode(("c",))
        cache.invalidate(("c",))
        (tmp_path / "new").mkdir()  # made while the old "c" exists: a different inode
        (tmp_path / "c").rmdir()
        (tmp_path / "new").rename(tmp_path / "c")
        assert inode(("c",)) == (tmp_path / "c").stat().st_ino != old
        (tmp_path / "d").rmdir()
        (tmp_path / "d").symlink_to("a")
        cache.invalidate(("d",))
        with pytest.raises(NotADirectoryInPathError):
            cache.dir_fd(("d",))
        assert inode(("a", "b")) == (tmp_path / "a" / "b").stat().st_ino
    finally:
        cache.close()


def test_dir_cache_after_a_failed_walk(tmp_path: Path) -> None:
    """A walk that opens (and so evicts) before it fails must not leave a closed fd to be handed out."""
    (tmp_path / "a").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "link").symlink_to("..")
    cache = DirCache(os.open(tmp_path, DIR_FLAGS), size=1)
    try:
        assert os.fstat(cache.dir_fd(("a",))).st_ino == (tmp_path / "a").stat().st_ino
        with pytest.raises(NotADirectoryInPathError):
            cache.dir_fd(("c", "link"))  # opens "c", evicting "a", then refuses the symlink
        assert os.fstat(cache.dir_fd(("a",))).st_ino == (tmp_path / "a").stat().st_ino
    finally:
        cache.close()


def test_more_directories_than_cached_fds(layers: Layers) -> None:
    """Files go to the right directories while the fd cache (256) evicts, and after a directory is replaced."""
    tar = TarBuilder()
    for i in range(300):
        tar.dir(f"d{i}")
    for i in (*range(0, 300, 7), *range(299, -1, -13)):
        tar.file(f"d{i}/f", str(i).encode())
    tar.file("d5", b"now a file").dir("d5").file("d5/g", b"new dir")
    root = layers.unpack(tar.build())
    for i in (*range(0, 300, 7), *range(299, -1, -13)):
        if i != 5:
            assert (root / f"d{i}" / "f").read_bytes() == str(i).encode()
    assert sorted(os.listdir(root / "d5")) == ["g"]


def test_merge_into_new_and_cleared_directories(layers: Layers) -> None:
    # Entries under a directory created by the same layer (or the first layer, or an opaque root) are created
    # without looking for an existing target entry; the result must still be the overlay view.
    big = os.urandom(300_000)
    layers.unpack(TarBuilder().file("x", b"lower x").dir("d").file("d/a", b"lower a").file("keep", b"k").build())
    layers.unpack(
        TarBuilder()
        .dir("x")  # a directory replaces the lower file x: created fresh by this layer
        .file("x/y", big, uid=0, gid=5)
        .whiteout("x/nothing")  # a whiteout in a fresh directory: nothing to delete
        .dir("d")  # an existing directory: its entries are looked up
        .file("d/a", b"upper a")
        .dir("d/new")
        .file("d/new/b", b"b", uid=7, gid=0)
        .build()
    )
    rootfs = layers.merge()
    assert (rootfs / "x" / "y").read_bytes() == big
    assert (rootfs / "d" / "a").read_bytes() == b"upper a"
    assert (rootfs / "d" / "new" / "b").read_bytes() == b"b"
    assert (rootfs / "keep").read_bytes() == b"k"
    assert sorted(p.name for p in (rootfs / "x").iterdir()) == ["y"]
    if os.geteuid() == 0:
        assert ((rootfs / "x" / "y").stat().st_uid, (rootfs / "x" / "y").stat().st_gid) == (0, 5)
        assert ((rootfs / "d" / "new" / "b").stat().st_uid, (rootfs / "d" / "new" / "b").stat().st_gid) == (7, 0)
    # An opaque root clears everything below; the layer's own entries are then created fresh.
    layers.unpack(TarBuilder().opaque(".").file("keep", b"top").dir("d").file("d/c", b"c").build())
    top = layers.base / "rootfs2"
    top.mkdir()
    merge_layers(layers.dirs, top, what="image test", whiteouts=layers.fmt)
    assert sorted(p.name for p in top.iterdir()) == ["d", "keep"]
    assert (top / "keep").read_bytes() == b"top"
    assert sorted(p.name for p in (top / "d").iterdir()) == ["c"]


@needs_root
def test_merge_into_a_setgid_target_keeps_owners(tmp_path: Path) -> None:
    # A setgid target hands its group (here the layer root's, 7) to new entries: the merge must chown even
    # files owned by 0:0.
    layers = Layers(tmp_path, USER)
    layers.unpack(
        TarBuilder().dir(".", uid=0, gid=7).file("f", b"f", uid=0, gid=0).dir("d", uid=0, gid=0).file("d/g").build()
    )
    target = tmp_path / "target"
    target.mkdir()
    os.chown(target, 0, 5)
    target.chmod(0o2755)
    merge_layers(layers.dirs, target, what="image test", whiteouts=USER)
    assert target.stat().st_gid == 7
    for path in (target / "f", target / "d", target / "d" / "g"):
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path


@pytest.mark.parametrize(("major", "minor"), [(4096, 0), (0, 1 << 20), (2**31, 2**31), (2**32 - 1, 0)])
def test_device_numbers_linux_cannot_hold_are_refused(layers: Layers, major: int, minor: int) -> None:
    # mknod(2) would truncate them into another device's number (os.makedev overflows above 2**31).
    data = TarBuilder().char("c", major, minor).build()
    with pytest.raises(ProtocolError, match=f"entry 'c': device number {major}:{minor} out of range"):
        layers.unpack(data)


def test_largest_linux_device_numbers_accepted(layers: Layers) -> None:
    root = layers.unpack(TarBuilder().char("c", 4095, (1 << 20) - 1).build())
    if os.geteuid() == 0:
        st = os.lstat(root / "c")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (4095, (1 << 20) - 1)
