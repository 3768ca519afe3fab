"""The rootfs of unpack_layer + merge_layers matches what ``umoci unpack`` makes of the same image.

Images are built at test time with tests/fixtures/umoci.py (layers, the umoci run, the comparison) and
tests/fixtures/oci_images.py (gzip layers), unpacked by umoci (as root, or ``--rootless`` otherwise) and by
cocoguest, and compared with :func:`tests.fixtures.umoci.assert_same_rootfs` (the listing of
:func:`cocoguest.image.fs.listing.rootfs_listing`: path, type, mode, uid/gid, size, link target, xattrs; file
bytes; hardlink sets).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from cocoguest.image.fs.listing import rootfs_listing
from cocoguest.image.fs.merge import merge_layers
from cocoguest.image.fs.unpack import unpack_layer
from cocoguest.image.fs.whiteouts import WhiteoutFormat, detect_whiteout_format
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import write_image_layout
from tests.fixtures.umoci import (
    assert_same_rootfs,
    base_layer,
    comparable,
    hardlink_groups,
    middle_layer,
    skip_without_umoci,
    umoci_layers,
    umoci_unpack,
)

pytestmark = [pytest.mark.interop, skip_without_umoci]


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


@pytest.mark.parametrize("fmt", [WhiteoutFormat.TRUSTED, WhiteoutFormat.USER], ids=["trusted", "user"])
def test_rootfs_matches_umoci(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    if fmt is WhiteoutFormat.TRUSTED and detect_whiteout_format(tmp_path) is not WhiteoutFormat.TRUSTED:
        pytest.skip("trusted overlay whiteouts need root")
    layers = umoci_layers()
    image = write_image_layout(tmp_path / "layout", layers, compression="gzip")
    theirs = umoci_unpack(image.path, tmp_path / "bundle")
    ours = cocoguest_unpack(layers, tmp_path / "ours", fmt)
    # Listing, every file's bytes, and the hardlink sets (not in the listing).
    assert_same_rootfs(ours, theirs)
    assert ["bin/busybox", "bin/ls"] in hardlink_groups(ours)
    assert ["usr/lib/libc.so", "usr/lib/libc.so.6"] in hardlink_groups(ours)


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
