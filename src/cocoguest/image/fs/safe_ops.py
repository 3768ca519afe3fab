"""Filesystem operations relative to directory file descriptors, never following symlinks.

Invariants:
    * A path is walked one component at a time with ``openat(O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`` from a
      directory fd the caller holds; ``..`` never reaches the kernel (names are normalized lexically first by
      :func:`clean_member_path`), so nothing here can reach outside the starting directory.
    * A symlink (or any non-directory) in the middle of a path is refused, never followed.
    * Final components are acted on with ``*at`` calls and ``AT_SYMLINK_NOFOLLOW`` semantics
      (``follow_symlinks=False``), or through an fd opened with ``O_NOFOLLOW``.
    * Tree removal is iterative (no recursion limit) and fd-relative.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from cocoguest.errors import UnsafeArchiveError

DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_FLAGS: Final = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

Components = tuple[str, ...]


class NotADirectoryInPathError(Exception):
    """A path component exists but is not a directory (``is_symlink`` tells whether it is a symlink)."""

    def __init__(self, components: Components, *, is_symlink: bool) -> None:
        super().__init__("/".join(components))
        self.components = components
        self.is_symlink = is_symlink


def clean_member_path(unsafe_name: str, *, what: str) -> Components:
    """Normalize an archive member name to components relative to the root, as tar does.

    Leading ``/`` are stripped (absolute names stay inside the root); empty and ``.`` components are
    dropped; ``..`` removes the previous component.

    Returns:
        The components; ``()`` names the root itself.

    Raises:
        UnsafeArchiveError: a ``..`` would climb above the root, or the name contains a NUL byte.
    """
    if "\0" in unsafe_name:
        msg = f"{what}: entry {unsafe_name!r}: name contains a NUL byte"
        raise UnsafeArchiveError(msg)
    parts = unsafe_name.split("/")
    if "" not in parts and "." not in parts and ".." not in parts:
        return tuple(parts)  # already normal (the common case): nothing to drop or resolve
    return _clean_parts(parts, unsafe_name, what=what)


def _clean_parts(split: list[str], unsafe_name: str, *, what: str) -> Components:
    parts: list[str] = []
    for part in split:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                # SECURITY: refuse (do not clamp) a name that climbs above the root.
                msg = f"{what}: entry {unsafe_name!r} climbs above the layer root"
                raise UnsafeArchiveError(msg)
            parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def open_dir_at(dir_fd: int, name: str) -> int:
    """Open directory ``name`` in ``dir_fd`` without following a symlink.

    Raises:
        FileNotFoundError: no such entry.
        NotADirectoryInPathError: the entry is a symlink or another non-directory.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            st = lstat_at(dir_fd, name)
            raise NotADirectoryInPathError((name,), is_symlink=st is not None and stat.S_ISLNK(st.st_mode)) from e
        raise


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``fstatat(AT_SYMLINK_NOFOLLOW)``; ``None`` when the entry does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_at(dir_fd: int, name: str) -> bool:
    """Remove entry ``name`` of ``dir_fd`` (a whole tree if it is a directory), never following symlinks.

    Returns:
        Whether something was removed.
    """
    st = lstat_at(dir_fd, name)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True
    top = open_dir_at(dir_fd, name)
    # Iterative post-order removal: frames of (fd, names still to visit, own name in the parent frame).
    stack: list[tuple[int, list[str], str]] = [(top, _list_fd(top), name)]
    try:
        while stack:
            fd, names, _ = stack[-1]
            if names:
                child = names.pop()
                child_st = lstat_at(fd, child)
                if child_st is None:
                    continue
                if stat.S_ISDIR(child_st.st_mode):
                    child_fd = open_dir_at(fd, child)
                    stack.append((child_fd, _list_fd(child_fd), child))
                else:
                    os.unlink(child, dir_fd=fd)
                continue
            _, _, own_name = stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(own_name, dir_fd=stack[-1][0])
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
    return True


def _list_fd(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return [entry.name for entry in it]


@contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close ``fd`` when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


class DirCache:
    """Directory fds of one tree, opened component by component with ``O_NOFOLLOW`` and cached (LRU).

    The root fd is owned by the cache. Callers that remove or replace a directory must call
    :meth:`invalidate` for its components so that no stale fd (of a deleted directory) is reused.
    """

    def __init__(self, root_fd: int, *, size: int = 256) -> None:
        """Take ownership of ``root_fd``; keep at most ``size`` other fds open."""
        self.root_fd = root_fd
        self._size = size
        self._fds: OrderedDict[Components, int] = OrderedDict()
        # The most recently returned key and fd (consecutive entries mostly share a directory). Invariant:
        # _last is None, or () with the root fd, or the newest key of _fds (so never an evicted, closed fd).
        self._last: Components | None = None
        self._last_fd = -1

    def close(self) -> None:
        """Close every cached fd and the root fd."""
        self._last = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        os.close(self.root_fd)

    def invalidate(self, components: Components) -> None:
        """Forget ``components`` and everything below it."""
        self._last = None
        n = len(components)
        for key in [k for k in self._fds if k[:n] == components]:
            os.close(self._fds.pop(key))

    def dir_fd(self, components: Components, *, create: Callable[[int, str, Components], None] | None = None) -> int:
        """The fd of directory ``components`` (``()`` is the root).

        The fd is borrowed: do not close it, and do not use it after the next call of this cache (which may
        evict it); ``os.dup`` it to keep it longer.

        Args:
            components: Directory path below the root.
            create: Called as ``create(parent_fd, name, components_so_far)`` when a component is missing
                (it must create a directory there); ``None`` raises ``FileNotFoundError`` instead.

        Raises:
            NotADirectoryInPathError: a component is a symlink or another non-directory.
            FileNotFoundError: a component is missing and ``create`` is ``None``.
        """
        if components == self._last:
            return self._last_fd
        if not components:
            self._last, self._last_fd = (), self.root_fd
            return self.root_fd
        fd = self._fds.get(components)
        if fd is not None:
            self._fds.move_to_end(components)
            self._last, self._last_fd = components, fd
            return fd
        self._last = None  # the opens below may evict it
        start = len(components) - 1
        while start > 0 and components[:start] not in self._fds:
            start -= 1
        fd = self._fds[components[:start]] if start else self.root_fd
        for i in range(start, len(components)):
            name = components[i]
            try:
                child = open_dir_at(fd, name)
            except FileNotFoundError:
                if create is None:
                    raise
                create(fd, name, components[: i + 1])
                child = open_dir_at(fd, name)
            except NotADirectoryInPathError as e:
                raise NotADirectoryInPathError(components[: i + 1], is_symlink=e.is_symlink) from e
            self._put(components[: i + 1], child)
            fd = child
        self._last, self._last_fd = components, fd
        return fd

    def _put(self, key: Components, fd: int) -> None:
        old = self._fds.pop(key, None)
        if old is not None:  # pragma: no cover - defensive: keys are looked up before opening
            os.close(old)
        self._fds[key] = fd
        while len(self._fds) > self._size:
            # Evict the least recently used fd, but never one we are about to hand out (it is the newest).
            _, evicted = self._fds.popitem(last=False)
            os.close(evicted)


def proc_fd_path(dir_fd: int, name: str) -> str:
    """A path naming entry ``name`` of ``dir_fd`` through ``/proc/self/fd`` (for l*xattr on symlinks).

    The ``/proc/self/fd/N`` magic link resolves to the directory itself; the final ``name`` component is
    then acted on by the ``l*`` (no-follow) call.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"
