"""Hostile layer archives: no entry may create, change or follow anything outside the unpack root.

Every test unpacks into ``work/root`` next to a canary file and an ``outside`` directory, and compares a
listing of everything outside the root (paths, types, modes, owners, sizes, link targets, xattrs, inode
numbers, mtimes and the canary's bytes) before and after.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cocoguest.errors import CocoError, ProtocolError, UnsafeArchiveError
from cocoguest.image.fs.listing import rootfs_listing
from cocoguest.image.fs.unpack import unpack_layer
from cocoguest.image.fs.whiteouts import WhiteoutFormat
from tests.fixtures.layers import Member, TarBuilder

FORMATS = [WhiteoutFormat.TRUSTED, WhiteoutFormat.USER] if os.geteuid() == 0 else [WhiteoutFormat.USER]
CANARY = b"canary: must never change\n"


def snapshot(base: Path, root: Path) -> list[tuple[object, ...]]:
    """Everything under ``base`` except ``root`` and below, with inode numbers and mtimes."""
    rows: list[tuple[object, ...]] = []
    for row in rootfs_listing(base):
        rel = row[0]
        if rel == root.name or rel.startswith(root.name + "/"):
            continue
        st_ = os.lstat(base / rel)
        content = (base / rel).read_bytes() if stat.S_ISREG(st_.st_mode) else None
        rows.append((*row, st_.st_ino, st_.st_mtime_ns if rel != "." else None, content))
    return rows


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.root.mkdir()
        (base / "canary").write_bytes(CANARY)
        (base / "outside").mkdir()
        (base / "outside" / "file").write_bytes(CANARY)
        self.before = snapshot(base, self.root)

    def unpack(self, data: bytes, fmt: WhiteoutFormat) -> None:
        unpack_layer(io.BytesIO(data), self.root, what="layer hostile", whiteouts=fmt)

    def check_untouched(self) -> None:
        assert snapshot(self.base, self.root) == self.before
        assert (self.base / "canary").read_bytes() == CANARY


@pytest.fixture(params=FORMATS, ids=lambda f: f.name)
def fmt(request: pytest.FixtureRequest) -> WhiteoutFormat:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def _case(name: str, build: Callable[[Path], TarBuilder], match: str) -> object:
    return pytest.param(build, match, id=name)


REFUSED = [
    _case("dotdot", lambda b: TarBuilder().file("../canary", b"evil"), "climbs above"),
    _case("dotdot-dir", lambda b: TarBuilder().dir("../outside/newdir"), "climbs above"),
    _case("a-dotdot-dotdot", lambda b: TarBuilder().file("a/../../canary", b"evil"), "climbs above"),
    _case("deep-dotdot", lambda b: TarBuilder().file("a/b/../../../outside/x", b"evil"), "climbs above"),
    _case(
        "symlink-root-then-write",
        lambda b: TarBuilder().symlink("l", "/").file(f"l{b}/outside/evil", b"evil"),
        "component 'l' is a symlink",
    ),
    _case(
        "symlink-dotdot-then-write",
        lambda b: TarBuilder().symlink("l", "..").file("l/canary", b"evil"),
        "component 'l' is a symlink",
    ),
    _case(
        "symlink-deep-then-write",
        lambda b: TarBuilder().dir("d").symlink("d/l", "../../outside").file("d/l/x", b"evil"),
        "component 'd/l' is a symlink",
    ),
    _case(
        "symlink-absolute-dir-then-mkdir",
        lambda b: TarBuilder().symlink("l", str(b / "outside")).dir("l/made"),
        "is a symlink",
    ),
    _case("hardlink-etc-passwd", lambda b: TarBuilder().hardlink("h", "/etc/passwd"), "not in this layer"),
    _case("hardlink-dotdot", lambda b: TarBuilder().hardlink("h", "../canary"), "climbs above"),
    _case(
        "hardlink-through-symlink",
        lambda b: TarBuilder().symlink("l", "..").hardlink("h", "l/canary"),
        "goes through a non-directory",
    ),
    _case("hardlink-to-dir", lambda b: TarBuilder().dir("d").hardlink("h", "d"), "hardlink to directory"),
    _case("hardlink-to-root", lambda b: TarBuilder().hardlink("h", "./"), "hardlink to the layer root"),
    _case("hardlink-to-whiteout", lambda b: TarBuilder().whiteout("w").hardlink("h", "w"), "hardlink to whiteout"),
    _case("root-as-symlink", lambda b: TarBuilder().symlink(".", str(b)), "type of the layer root"),
    _case("root-as-symlink-slash", lambda b: TarBuilder().symlink("./", "/"), "type of the layer root"),
    _case("root-as-file", lambda b: TarBuilder().file(".", b"x"), "type of the layer root"),
    _case("root-as-hardlink", lambda b: TarBuilder().file("f").hardlink("/", "f"), "type of the layer root"),
    _case("whiteout-dot", lambda b: TarBuilder().file(".wh..", b""), "whiteout names no entry"),
    _case("whiteout-dotdot", lambda b: TarBuilder().file(".wh...", b""), "whiteout names no entry"),
    _case("whiteout-empty", lambda b: TarBuilder().file("d/.wh.", b""), "whiteout names no entry"),
    _case("whiteout-climb", lambda b: TarBuilder().file("../.wh.canary", b""), "climbs above"),
    _case(
        "whiteout-through-symlink",
        lambda b: TarBuilder().symlink("l", "..").file("l/.wh.canary", b""),
        "is a symlink",
    ),
    _case(
        "opaque-through-symlink",
        lambda b: TarBuilder().symlink("l", "../outside").file("l/.wh..wh..opq", b""),
        "is a symlink",
    ),
    _case(
        "device-into-symlinked-dir",
        lambda b: TarBuilder().symlink("dev", "../outside").char("dev/evil", 1, 3),
        "component 'dev' is a symlink",
    ),
    _case(
        "fifo-into-symlinked-dir",
        lambda b: TarBuilder().symlink("d", str(b)).fifo("d/evil"),
        "component 'd' is a symlink",
    ),
    _case("file-under-file", lambda b: TarBuilder().file("f", b"1").file("f/x", b"2"), "is not a directory"),
]


@pytest.mark.parametrize(("build", "match"), REFUSED)
def test_refused(sandbox: Sandbox, fmt: WhiteoutFormat, build: Callable[[Path], TarBuilder], match: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=match) as info:
        sandbox.unpack(build(sandbox.base).build(), fmt)
    assert "layer hostile" in str(info.value)
    assert "entry " in str(info.value)
    sandbox.check_untouched()


def test_absolute_names_stay_inside(sandbox: Sandbox, fmt: WhiteoutFormat) -> None:
    unique = f"cocoguest-hostile-{uuid.uuid4().hex}"
    data = (
        TarBuilder()
        .file(f"/etc/{unique}", b"inside")
        .file(f"{sandbox.base}/canary", b"inside too")
        .symlink(f"//{unique}-link", "/etc/passwd")
        .build()
    )
    sandbox.unpack(data, fmt)
    assert (sandbox.root / "etc" / unique).read_bytes() == b"inside"
    assert (sandbox.root / str(sandbox.base).lstrip("/") / "canary").read_bytes() == b"inside too"
    assert os.readlink(sandbox.root / f"{unique}-link") == "/etc/passwd"
    assert not os.path.lexists(f"/etc/{unique}")
    sandbox.check_untouched()


def test_symlinks_are_replaced_not_written_through(sandbox: Sandbox, fmt: WhiteoutFormat) -> None:
    data = (
        TarBuilder()
        .symlink("f", str(sandbox.base / "canary"))
        .file("f", b"replaces the link")
        .symlink("d", "../outside")
        .dir("d", mode=0o700)  # a directory entry replaces the symlink, it does not chmod the target
        .file("d/x", b"inside")
        .symlink("s", str(sandbox.base / "outside"))
        .add(Member("s", typeflag=b"5", mode=0o777, xattrs={"user.evil": b"1"}))
        .build()
    )
    sandbox.unpack(data, fmt)
    assert (sandbox.root / "f").read_bytes() == b"replaces the link"
    assert (sandbox.root / "d").is_dir()
    assert not (sandbox.root / "d").is_symlink()
    assert (sandbox.root / "d" / "x").read_bytes() == b"inside"
    sandbox.check_untouched()


def test_hardlink_to_a_symlink_links_the_symlink(sandbox: Sandbox, fmt: WhiteoutFormat) -> None:
    data = TarBuilder().symlink("s", "/etc/passwd").hardlink("h", "s").build()
    sandbox.unpack(data, fmt)
    h = sandbox.root / "h"
    assert h.is_symlink()
    assert os.readlink(h) == "/etc/passwd"
    assert h.lstat().st_ino == (sandbox.root / "s").lstat().st_ino
    sandbox.check_untouched()


def test_nul_in_pax_name_is_refused(sandbox: Sandbox, fmt: WhiteoutFormat) -> None:
    data = TarBuilder().add(Member("x", pax={"path": b"a\0/../../canary"})).build()
    with pytest.raises(ProtocolError, match="NUL"):
        sandbox.unpack(data, fmt)
    sandbox.check_untouched()


def test_overlay_xattr_cannot_forge_a_whiteout(sandbox: Sandbox, fmt: WhiteoutFormat) -> None:
    data = TarBuilder().file("w", b"", xattrs={fmt.whiteout_xattr: b"y", fmt.opaque_xattr: b"y"}).build()
    sandbox.unpack(data, fmt)
    assert os.listxattr(sandbox.root / "w") == []
    sandbox.check_untouched()


# -- property: whatever the names, nothing outside the root changes ------------------------------------------------

_PARTS = st.sampled_from(["l", "l", "..", ".", "a", "canary", ".wh.a", ".wh..wh..opq", ".wh.."])
_NAMES = st.lists(_PARTS, min_size=1, max_size=3).map("/".join) | st.sampled_from(["/", "./", "/..", "l/x", "//l/a/"])
# "@" is replaced by the sandbox's absolute path: symlinks that point at the canary's directory.
_TARGETS = st.sampled_from(["..", "../..", "/", "@", "@/outside", "@/canary", "../canary", "l"]) | _NAMES
_KINDS = st.sampled_from(["file", "dir", "symlink", "symlink", "hardlink", "fifo", "char"])
_ENTRIES = st.lists(st.tuples(_KINDS, _NAMES, _TARGETS), min_size=1, max_size=6)


def _archive(entries: list[tuple[str, str, str]], base: Path) -> bytes:
    b = TarBuilder()
    for kind, name, target in entries:
        link = target.replace("@", str(base))
        if kind == "file":
            b.file(name, b"payload")
        elif kind == "dir":
            b.dir(name, mode=0o777)
        elif kind == "symlink":
            b.symlink(name, link)
        elif kind == "hardlink":
            b.hardlink(name, link)
        elif kind == "fifo":
            b.fifo(name)
        else:
            b.char(name, 1, 3)
    return b.build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=_ENTRIES)
@example(entries=[("symlink", "l", ".."), ("file", "l/canary", "")])
@example(entries=[("symlink", "l", "@"), ("dir", "l/outside", ""), ("fifo", "l/outside/f", "")])
@example(entries=[("symlink", "a", "@/outside"), ("hardlink", "a/x", "l"), ("char", "./a/y", "")])
@example(entries=[("symlink", "l", "/"), ("symlink", "l/l", ".."), ("file", "l/l/a", "")])
def test_property_no_inode_outside_root(entries: list[tuple[str, str, str]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="cocoguest-hostile-"))
    try:
        box = Sandbox(base)
        for fmt in FORMATS:
            root = box.root
            shutil.rmtree(root)
            root.mkdir()
            with contextlib.suppress(CocoError):
                box.unpack(_archive(entries, base), fmt)
            box.check_untouched()
    finally:
        shutil.rmtree(base)
