"""A canonical listing of a root filesystem, to compare two unpackers (cocoguest and umoci) in tests.

Invariants:
    * Symlinks are never followed; the walk is iterative and read-only.
    * One row per inode name, sorted by path; ``"."`` is the root itself.
    * Rows carry path, type (``"char:MAJ:MIN"`` / ``"block:MAJ:MIN"`` for devices), mode with the
      special bits, uid, gid, size (regular files only), symlink target and the sorted xattrs, except
      ``security.selinux`` (a property of the host, not of the image).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

ListingRow = tuple[str, str, int, int, int, int | None, str | None, tuple[tuple[str, bytes], ...]]

_IGNORED_XATTRS: Final = frozenset({"security.selinux"})


def _type(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return f"char:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if stat.S_ISBLK(mode):
        return f"block:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "unknown"  # pragma: no cover - defensive: no other file types exist on Linux


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in names:
        if name in _IGNORED_XATTRS:
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(sorted(out))


def rootfs_listing(root: Path) -> list[ListingRow]:
    """List every entry under ``root`` (and ``root`` itself as ``"."``).

    Returns:
        Rows ``(path, type, mode, uid, gid, size, link_target, xattrs)`` sorted by path.
    """
    rows: list[ListingRow] = []
    pending: list[tuple[Path, str]] = [(root, ".")]
    while pending:
        path, rel = pending.pop()
        st = os.lstat(path)
        kind = _type(st)
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        rows.append((rel, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, target, _xattrs(path)))
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as it:
                for entry in it:
                    child_rel = entry.name if rel == "." else f"{rel}/{entry.name}"
                    pending.append((path / entry.name, child_rel))
    rows.sort(key=lambda row: row[0])
    return rows
