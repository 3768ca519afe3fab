"""The rootfs of unpack_layer + merge_layers matches what ``umoci unpack`` makes of the same image.

Images are built at test time with tests/fixtures/layers.py and tests/fixtures/oci_images.py (gzip layers),
unpacked by umoci (as root, or ``--rootless`` otherwise) and by cocoguest, and compared with
:func:`cocoguest.image.fs.listing.rootfs_listing` (path, type, mode, uid/gid, size, link target, xattrs).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cocoguest.image.fs.listing import ListingRow, rootfs_listing
from cocoguest.image.fs.merge import merge_layers
from cocoguest.image.fs.unpack import WhiteoutFormat, detect_whiteout_format, unpack_layer
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import write_image_layout

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed"),
]
IS_ROOT = os.geteuid() == 0


def base_layer() -> bytes:
    b = (
        TarBuilder()
        .dir("bin", mode=0o755)
        .file("bin/busybox", b"\x7fELF busybox" * 100, mode=0o755)
        .hardlink("bin/ls", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .file("bin/su", b"su", mode=0o4755)
        .file("bin/wall", b"wall", mode=0o2755, gid=5)
        .dir("etc", mode=0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file("etc/shadow", b"root:*::0:::::\n", mode=0o640, gid=42)
        .symlink("etc/mtab", "/proc/self/mounts")
        .dir("home", mode=0o755)
        .dir("home/user", mode=0o700, uid=1000, gid=1000)
        .file("home/user/.profile", b"export PS1='$ '\n", uid=1000, gid=1000, xattrs={"user.origin": b"base"})
        .dir("tmp", mode=0o1777)
        .dir("opq", mode=0o755, xattrs={"user.dir": b"lower"})
        .file("opq/old1", b"1")
        .dir("opq/olddir")
        .file("opq/olddir/x", b"x")
        .dir("gone")
        .file("gone/deep", b"d")
        .dir("d2f")
        .file("d2f/child", b"c")
        .file("f2d", b"plain file")
        .dir("var")
        .dir("var/run")
        .fifo("var/run/initctl", mode=0o600)
    )
    if IS_ROOT:
        b.dir("dev", mode=0o755).char("dev/null", 1, 3, mode=0o666).char("dev/tty", 5, 0, mode=0o666)
        b.block("dev/loop0", 7, 0, mode=0o660, gid=6)
    return b.build()


def middle_layer() -> bytes:
    return (
        TarBuilder()
        .dir("etc", mode=0o755)
        .whiteout("etc/hosts")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", mode=0o644)
        .dir("opq", mode=0o750, xattrs={"user.dir": b"upper"})
        .opaque("opq")
        .file("opq/new", b"new")
        .whiteout("gone")
        .file("d2f", b"now a file")
        .dir("f2d", mode=0o711)
        .file("f2d/inner", b"inner")
        .dir("usr")
        .dir("usr/lib")
        .file("usr/lib/libc.so", bytes(range(256)) * 64, mode=0o755)
        .hardlink("usr/lib/libc.so.6", "usr/lib/libc.so")
        .file("usr/lib/cap", b"cap", xattrs={"user.cap": b"\x00\x01binary\xff"})
        .build()
    )


def top_layer() -> bytes:
    return (
        TarBuilder(long_names="gnu")
        .dir("etc", mode=0o755)
        .file("etc/hosts", b"10.0.0.1 back\n", uid=7, gid=8)
        .dir("srv")
        .file("srv/" + "long-name-" * 20, b"gnu long name")
        .symlink("srv/" + "l" * 120, "/" + "t" * 150)
        .whiteout("bin/su")
        .dir("tmp", mode=0o1777)
        .file("tmp/.keep", b"")
        .build()
    )


def umoci_unpack(layout: Path, bundle: Path) -> Path:
    cmd = ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)]
    if not IS_ROOT:
        cmd.insert(2, "--rootless")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def cocoguest_unpack(layers: list[bytes], base: Path, fmt: WhiteoutFormat) -> Path:
    dirs = []
    for i, blob in enumerate(layers):
        layer_dir = base / f"layer{i}"
        layer_dir.mkdir(parents=True)
        # The test decompresses itself, as the lead's layer pipeline does before calling unpack_layer.
        lowers = tuple(dirs)
        unpack_layer(
            io.BytesIO(gzip.decompress(gzip.compress(blob))),
            layer_dir,
            what=f"layer {i}",
            whiteouts=fmt,
            lowers=(lambda lowers=lowers: lowers) if lowers else None,
        )
        dirs.append(layer_dir)
    rootfs = base / "rootfs"
    rootfs.mkdir()
    merge_layers(dirs, rootfs, what="image umoci-compare", whiteouts=fmt)
    return rootfs


def comparable(rows: list[ListingRow]) -> list[ListingRow]:
    # umoci's choice: the rootfs directory itself is created by umoci (mode 0755, or kept from an existing
    # bundle), not from an image entry, so "." is not compared.
    return [row for row in rows if row[0] != "."]


@pytest.mark.parametrize("fmt", [WhiteoutFormat.TRUSTED, WhiteoutFormat.USER], ids=["trusted", "user"])
def test_rootfs_matches_umoci(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    if fmt is WhiteoutFormat.TRUSTED and detect_whiteout_format(tmp_path) is not WhiteoutFormat.TRUSTED:
        pytest.skip("trusted overlay whiteouts need root")
    layers = [base_layer(), middle_layer(), top_layer()]
    image = write_image_layout(tmp_path / "layout", layers, compression="gzip")
    theirs = umoci_unpack(image.path, tmp_path / "bundle")
    ours = cocoguest_unpack(layers, tmp_path / "ours", fmt)
    assert comparable(rootfs_listing(ours)) == comparable(rootfs_listing(theirs))
    # Hardlinks are not in the listing: check them on both sides.
    for tree in (ours, theirs):
        assert (tree / "bin/ls").stat().st_ino == (tree / "bin/busybox").stat().st_ino
        assert (tree / "usr/lib/libc.so.6").stat().st_ino == (tree / "usr/lib/libc.so").stat().st_ino
    # Content, not only sizes.
    for rel in ("etc/passwd", "etc/hosts", "d2f", "usr/lib/libc.so", "opq/new"):
        assert (ours / rel).read_bytes() == (theirs / rel).read_bytes()


def test_single_layer_with_root_entry_matches_umoci(tmp_path: Path) -> None:
    layer = TarBuilder().dir("./", mode=0o755).dir("./a", mode=0o700).file("./a/f", b"f", mode=0o600).build()
    image = write_image_layout(tmp_path / "layout", [layer])
    theirs = umoci_unpack(image.path, tmp_path / "bundle")
    ours = cocoguest_unpack([layer], tmp_path / "ours", WhiteoutFormat.USER)
    assert rootfs_listing(ours) == rootfs_listing(theirs)


def cross_link_layer() -> bytes:
    """Hardlinks to files only lower layers have (one under a directory this layer lacks, one in a directory it
    has, one to a lower symlink), as umoci and containerd accept them."""
    return (
        TarBuilder()
        .hardlink("usr/lib/libc-link.so", "usr/lib/libc.so")
        .dir("etc", mode=0o755)
        .hardlink("etc/passwd-link", "etc/passwd")
        .hardlink("mtab-link", "etc/mtab")
        .build()
    )


@pytest.mark.parametrize("fmt", [WhiteoutFormat.TRUSTED, WhiteoutFormat.USER], ids=["trusted", "user"])
def test_cross_layer_hardlinks_match_umoci(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    if fmt is WhiteoutFormat.TRUSTED and detect_whiteout_format(tmp_path) is not WhiteoutFormat.TRUSTED:
        pytest.skip("trusted overlay whiteouts need root")
    layers = [base_layer(), middle_layer(), cross_link_layer()]
    image = write_image_layout(tmp_path / "layout", layers, compression="gzip")
    theirs = umoci_unpack(image.path, tmp_path / "bundle")
    ours = cocoguest_unpack(layers, tmp_path / "ours", fmt)
    assert comparable(rootfs_listing(ours)) == comparable(rootfs_listing(theirs))
    for tree in (ours, theirs):
        for link, target in (("usr/lib/libc-link.so", "usr/lib/libc.so"), ("etc/passwd-link", "etc/passwd")):
            assert (tree / link).stat().st_ino == (tree / target).stat().st_ino
            assert (tree / link).read_bytes() == (tree / target).read_bytes()
    # A hardlinked symlink: the same inode in our layer (the copy snapshotter's merge keeps only regular files'
    # hardlinks); the listing above already compares its type and target with umoci's.
    upper = tmp_path / "ours" / "layer2"
    assert (upper / "mtab-link").lstat().st_ino == (upper / "etc/mtab").lstat().st_ino
    assert (ours / "etc/passwd-link").read_bytes() == (theirs / "etc/passwd").read_bytes()
