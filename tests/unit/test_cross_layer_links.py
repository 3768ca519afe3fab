"""Cross-layer hardlinks (issue 7, weak spot): a layer's hardlink to a file of a LOWER layer is applied as
containerd does: the target is copied up into this layer (content, metadata, and the metadata of the directories
on its path that this layer lacks), then linked. Hidden or absent targets are still refused.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from cocoguest.errors import UnsafeArchiveError
from cocoguest.image.fs.lower_view import LowerLayersPendingError
from cocoguest.image.fs.merge import merge_layers
from cocoguest.image.fs.unpack import UnpackStats, unpack_layer
from cocoguest.image.fs.whiteouts import WhiteoutFormat, detect_whiteout_format
from cocoguest.limits import Limits
from tests.fixtures.layers import TarBuilder

FORMATS = pytest.mark.parametrize("fmt", [WhiteoutFormat.TRUSTED, WhiteoutFormat.USER], ids=["trusted", "user"])


def _fmt_or_skip(fmt: WhiteoutFormat, tmp_path: Path) -> WhiteoutFormat:
    if fmt is WhiteoutFormat.TRUSTED and detect_whiteout_format(tmp_path) is not WhiteoutFormat.TRUSTED:
        pytest.skip("trusted overlay whiteouts need root")
    return fmt


class Stack:
    """Unpack tars as consecutive layers, each seeing the ones below as its lower layers."""

    def __init__(self, base: Path, fmt: WhiteoutFormat) -> None:
        self.base = base
        self.fmt = fmt
        self.dirs: list[Path] = []
        self.made = 0

    def add(self, builder: TarBuilder, *, limits: Limits | None = None) -> UnpackStats:
        root = self.base / f"layer{self.made}"
        self.made += 1
        root.mkdir()
        lowers: Sequence[Path] = tuple(self.dirs)
        stats = unpack_layer(
            io.BytesIO(builder.build()),
            root,
            what=f"layer {len(self.dirs)}",
            whiteouts=self.fmt,
            limits=limits or Limits(),
            lowers=(lambda: lowers) if lowers else None,
        )
        self.dirs.append(root)
        return stats

    def merged(self) -> Path:
        rootfs = self.base / "rootfs"
        rootfs.mkdir()
        merge_layers(self.dirs, rootfs, what="image", whiteouts=self.fmt)
        return rootfs


def _base() -> TarBuilder:
    return (
        TarBuilder()
        .dir("usr", mode=0o751, uid=3, gid=4)
        .dir("usr/bin", mode=0o705)
        .file("usr/bin/tool", b"the tool\n", mode=0o4755, uid=0, gid=0, xattrs={"user.origin": b"base"})
        .symlink("usr/bin/alias", "tool")
    )


@FORMATS
def test_link_to_lower_file_copies_it_up_and_links(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    stats = stack.add(TarBuilder().dir("opt").hardlink("opt/tool-link", "usr/bin/tool"))
    assert stats.copied_up == 1
    upper = stack.dirs[1]
    copy, link = upper / "usr/bin/tool", upper / "opt/tool-link"
    assert copy.read_bytes() == link.read_bytes() == b"the tool\n"
    assert copy.stat().st_ino == link.stat().st_ino
    assert copy.stat().st_nlink == 2
    lower = stack.dirs[0] / "usr/bin/tool"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o4755
    assert copy.stat().st_mtime_ns == lower.stat().st_mtime_ns
    assert os.getxattr(copy, "user.origin") == b"base"
    # The directories copied up carry the lower directories' metadata (as an overlay copy-up).
    for rel in ("usr", "usr/bin"):
        assert stat.S_IMODE((upper / rel).stat().st_mode) == stat.S_IMODE((stack.dirs[0] / rel).stat().st_mode)
        assert (upper / rel).stat().st_mtime_ns == (stack.dirs[0] / rel).stat().st_mtime_ns
        if os.geteuid() == 0:
            assert (upper / rel).stat().st_uid == (stack.dirs[0] / rel).stat().st_uid
    # The lower layer is untouched: a new inode was made in the upper one.
    assert lower.stat().st_nlink == 1
    rootfs = stack.merged()
    assert (rootfs / "opt/tool-link").stat().st_ino == (rootfs / "usr/bin/tool").stat().st_ino
    assert (rootfs / "usr/bin/alias").is_symlink()  # the rest of the lower directory still shows


@FORMATS
def test_link_to_lower_symlink_links_the_symlink(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    stack.add(TarBuilder().hardlink("alias2", "usr/bin/alias"))
    link = stack.dirs[1] / "alias2"
    assert link.is_symlink()
    assert os.readlink(link) == "tool"
    assert link.lstat().st_ino == (stack.dirs[1] / "usr/bin/alias").lstat().st_ino


@FORMATS
def test_topmost_lower_layer_wins(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(TarBuilder().file("f", b"bottom"))
    stack.add(TarBuilder().file("f", b"middle"))
    stack.add(TarBuilder().hardlink("g", "f"))
    assert (stack.dirs[2] / "g").read_bytes() == b"middle"


@FORMATS
@pytest.mark.parametrize(
    "middle",
    [
        pytest.param(lambda: TarBuilder().whiteout("usr/bin/tool"), id="whiteout-of-file"),
        pytest.param(lambda: TarBuilder().whiteout("usr"), id="whiteout-of-parent-dir"),
        pytest.param(lambda: TarBuilder().dir("usr").dir("usr/bin").opaque("usr/bin"), id="opaque-parent"),
        pytest.param(lambda: TarBuilder().dir("usr").opaque("usr").dir("usr/bin"), id="opaque-grandparent"),
        pytest.param(lambda: TarBuilder().file("usr", b"now a file"), id="file-over-parent-dir"),
        pytest.param(lambda: TarBuilder().dir("usr").symlink("usr/bin", "/"), id="symlink-over-parent-dir"),
    ],
)
def test_target_hidden_by_a_middle_layer_is_refused(tmp_path: Path, fmt: WhiteoutFormat, middle: object) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    assert callable(middle)
    stack.add(middle())
    with pytest.raises(UnsafeArchiveError) as info:
        stack.add(TarBuilder().hardlink("stolen", "usr/bin/tool"))
    message = str(info.value)
    assert "layer 2" in message
    assert "'stolen'" in message
    assert "usr/bin/tool" in message
    assert not (tmp_path / "layer2" / "usr").exists()


@FORMATS
def test_target_absent_from_every_lower_layer_is_refused(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    with pytest.raises(UnsafeArchiveError, match=r"layer 1: entry 'h'.*'usr/bin/nothing'.*neither"):
        stack.add(TarBuilder().hardlink("h", "usr/bin/nothing"))


@FORMATS
def test_target_hidden_by_this_layers_own_whiteout_or_opaque_dir(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    with pytest.raises(UnsafeArchiveError, match="hidden"):
        stack.add(TarBuilder().dir("usr").dir("usr/bin").opaque("usr/bin").hardlink("h", "usr/bin/tool"))
    with pytest.raises(UnsafeArchiveError, match=r"hidden|goes through a non-directory"):
        stack.add(TarBuilder().dir("usr").whiteout("usr/bin").hardlink("h", "usr/bin/tool"))


@FORMATS
def test_link_to_lower_directory_is_refused(tmp_path: Path, fmt: WhiteoutFormat) -> None:
    stack = Stack(tmp_path, _fmt_or_skip(fmt, tmp_path))
    stack.add(_base())
    with pytest.raises(UnsafeArchiveError, match="hardlink to directory 'usr/bin'"):
        stack.add(TarBuilder().hardlink("h", "usr/bin"))


def test_without_lower_layers_the_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    with pytest.raises(UnsafeArchiveError, match="not in this layer"):
        unpack_layer(io.BytesIO(TarBuilder().hardlink("h", "f").build()), root, what="layer 0",
                     whiteouts=WhiteoutFormat.USER)  # fmt: skip


def test_copy_up_budget_is_a_limit(tmp_path: Path) -> None:
    stack = Stack(tmp_path, WhiteoutFormat.USER)
    stack.add(TarBuilder().file("big", b"x" * 1000))
    with pytest.raises(UnsafeArchiveError, match="limit on bytes copied up"):
        stack.add(TarBuilder().hardlink("h", "big"), limits=Limits(max_copy_up_bytes=999))


def test_the_provider_is_asked_only_for_a_cross_layer_link(tmp_path: Path) -> None:
    def pending() -> Sequence[Path]:
        raise LowerLayersPendingError

    root = tmp_path / "self-contained"
    root.mkdir()
    tar = TarBuilder().file("f", b"f").hardlink("g", "f").build()
    stats = unpack_layer(io.BytesIO(tar), root, what="layer 1", whiteouts=WhiteoutFormat.USER, lowers=pending)
    assert stats.copied_up == 0
    root = tmp_path / "cross"
    root.mkdir()
    with pytest.raises(LowerLayersPendingError):
        unpack_layer(io.BytesIO(TarBuilder().hardlink("g", "f").build()), root, what="layer 1",
                     whiteouts=WhiteoutFormat.USER, lowers=pending)  # fmt: skip
