"""The copy snapshotter: merge overlay-form layer directories into one plain directory tree.

The result is what an overlayfs mount of the layers would show (lowest layer first in ``layer_dirs``):
whiteouts delete, opaque directories (``<prefix>overlay.opaque="y"``) hide lower content, a directory
replaces a lower non-directory and vice versa, and the top-most layer's metadata wins for directories
present in several layers. :class:`IncrementalMerge` takes the layers one at a time (so a pull can merge
layer i while higher layers still download); :func:`merge_layers` is it applied to a whole list.

Invariants:
    * Every path of ``target`` is reached from its fd component by component with ``O_NOFOLLOW``; no symlink
      (from any layer) is ever followed, in the layers or in ``target``.
    * Type, mode (special bits included), ownership (when root), mtime and xattrs are preserved; overlay xattrs
      (``trusted.overlay.*``, ``user.overlay.*``) are not copied. Directory modes and mtimes are set last,
      deepest first.
    * Hardlinks within one layer stay hardlinks; file data is shared by reflink where the filesystem can,
      else copied in the kernel (``copy_file_range``): in one go when the file is fully allocated, else data
      segment by data segment, keeping holes.
    * Layers are applied strictly in the order they are added; adding them one by one gives the same tree as
      merging the list at once (directory metadata is applied once, by ``finish``, after the last layer).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from cocoguest.errors import TransportError
from cocoguest.image.fs.dir_meta import DirMeta, DirMetaLog
from cocoguest.image.fs.safe_ops import (
    DIR_FLAGS,
    Components,
    DirCache,
    NotADirectoryInPathError,
    lstat_at,
    open_dir_at,
    opened,
    proc_fd_path,
    remove_at,
)
from cocoguest.image.fs.whiteouts import OVERLAY_XATTR_PREFIXES, WhiteoutFormat
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

_FICLONE: Final = 0x40049409  # linux/fs.h _IOW(0x94, 9, int)
_FILE_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_FAST_COPY: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY, errno.EBADF})
_XATTR_SKIP_ERRNOS: Final = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL})


def merge_layers(
    layer_dirs: Sequence[Path],
    target: Path,
    *,
    what: str,
    whiteouts: WhiteoutFormat,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Apply the overlay-form ``layer_dirs`` (lowest first) onto ``target``: :class:`IncrementalMerge` in one go.

    Args:
        layer_dirs: Layer directories written by :func:`~cocoguest.image.fs.unpack.unpack_layer`.
        target: An existing, empty directory (the bundle's rootfs).
        what: Names the image in errors.
        whiteouts: The whiteout format the layers were unpacked with.
        limits: ``dir_meta_memory_entries`` bounds the bookkeeping.

    Raises:
        TransportError: a filesystem operation failed (names the layer and path).
        ValueError: ``target`` is not empty.
    """
    with IncrementalMerge(target, what=what, whiteouts=whiteouts, limits=limits) as merge:
        for layer in layer_dirs:
            merge.add(layer)
        merge.finish()


class IncrementalMerge:
    """Merge layers into ``target`` one at a time, lowest first, as they become available.

    ``add`` each layer in order, then ``finish`` once (directory modes and mtimes, deepest first); ``close``
    (or leaving the ``with`` block) releases the directory fds either way. The result equals
    :func:`merge_layers` of the same layers. Not thread-safe: one thread drives it. After a failed ``add`` or
    ``finish`` the target is half-merged and the object refuses further use; the caller removes the target.
    """

    def __init__(self, target: Path, *, what: str, whiteouts: WhiteoutFormat, limits: Limits = DEFAULT_LIMITS) -> None:
        """Open ``target``, which must be an existing, empty directory.

        Args:
            target: The directory to merge into (the bundle's rootfs).
            what: Names the image in errors.
            whiteouts: The whiteout format the layers were unpacked with.
            limits: ``dir_meta_memory_entries`` bounds the directory bookkeeping; beyond it, records spill
                to a scratch file beside ``target`` (in its parent directory, deleted by ``close``).

        Raises:
            TransportError: ``target`` cannot be opened.
            ValueError: ``target`` is not empty.
        """
        self._what = what
        try:
            target_fd = os.open(target, DIR_FLAGS)
        except OSError as e:
            msg = f"{what}: merge target {target}: {e.strerror or e}"
            raise TransportError(msg) from e
        try:
            if os.listdir(target_fd):
                msg = f"merge target {target} is not empty"
                raise ValueError(msg)
        except BaseException:
            os.close(target_fd)
            raise
        log = DirMetaLog(target.parent, memory_entries=limits.dir_meta_memory_entries)
        self._merger = _Merger(
            DirCache(target_fd), fmt=whiteouts, dir_meta=log, fresh_max=limits.dir_meta_memory_entries
        )
        self._state: Literal["open", "finished", "failed"] = "open"
        self._closed = False
        self.layers = 0
        """How many layers were added."""

    def _check_open(self) -> None:
        if self._state != "open" or self._closed:
            msg = f"{self._what}: merge is {'closed' if self._state == 'open' else self._state}"
            raise ValueError(msg)

    def add(self, layer_dir: Path, *, name: str | None = None) -> None:
        """Apply one layer on top of those added before.

        Args:
            layer_dir: A layer directory written by :func:`~cocoguest.image.fs.unpack.unpack_layer`.
            name: Names the layer in errors (default: the directory name).

        Raises:
            TransportError: a filesystem operation failed (names the layer and path).
            ValueError: the merge is finished, failed or closed.
        """
        self._check_open()
        try:
            with opened(os.open(layer_dir, DIR_FLAGS)) as layer_fd:
                self._merger.merge_layer(layer_fd)
        except OSError as e:
            self._state = "failed"
            path = "/".join(self._merger.current) or "."
            msg = f"{self._what}: merging layer {name or layer_dir.name}: {path}: {e.strerror or e}"
            raise TransportError(msg) from e
        except BaseException:
            self._state = "failed"
            raise
        self.layers += 1

    def finish(self) -> None:
        """Set the directory modes and mtimes (deepest first) and release the fds.

        Raises:
            TransportError: a filesystem operation failed.
            ValueError: the merge is finished, failed or closed.
        """
        self._check_open()
        try:
            self._merger.finish()
        except OSError as e:
            self._state = "failed"
            path = "/".join(self._merger.current) or "."
            msg = f"{self._what}: merging layers: {path}: {e.strerror or e}"
            raise TransportError(msg) from e
        except BaseException:
            self._state = "failed"
            raise
        self._state = "finished"
        self.close()

    def close(self) -> None:
        """Release the directory fds (idempotent); an unfinished merge can no longer be finished."""
        if not self._closed:
            self._closed = True
            self._merger.cache.close()
            self._merger.dir_meta.close()

    def __enter__(self) -> IncrementalMerge:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Merger:
    def __init__(self, cache: DirCache, *, fmt: WhiteoutFormat, dir_meta: DirMetaLog, fresh_max: int) -> None:
        self.cache = cache
        self.fmt = fmt
        self.is_root = os.geteuid() == 0
        self.dir_meta = dir_meta  # mode and mtime_ns of every target directory, applied by finish
        self.fresh_max = fresh_max
        self.try_reflink = True
        self.current: Components = ()
        self.layers = 0
        # Directories of the target known to have no entries but those the current layer put there: the
        # target's root for the first layer (the target starts empty) or after an opaque root cleared it, and
        # every directory this layer created. Their children need no lookup of an existing target entry
        # (names within one layer directory are unique). Only an optimisation: capped at ``fresh_max``.
        self.fresh: set[Components] = set()

    def merge_layer(self, layer_fd: int) -> None:
        links: dict[tuple[int, int], Components] = {}
        root_st = os.fstat(layer_fd)
        self.fresh = {()} if self.layers == 0 else set()
        if self._is_opaque(layer_fd):
            self._clear(self.cache.root_fd, ())
            self.fresh = {()}
        self._dir_metadata(layer_fd, self.cache.root_fd, (), root_st)
        # Iterative depth-first walk: frames of (fd of the layer directory, its components, names left, last
        # first). A subdirectory is entered as soon as it is met, so open fds and name lists are bounded by the
        # depth of the tree, not by its width.
        stack: list[tuple[int, Components, list[str]]] = []
        try:
            root_dup = os.dup(layer_fd)
            stack.append((root_dup, (), _names_last_first(root_dup)))
            while stack:
                src_fd, components, names = stack[-1]
                if not names:
                    stack.pop()
                    os.close(src_fd)
                    continue
                child = self._entry(src_fd, components, names.pop(), links)
                if child is not None:
                    child_fd, child_components = child
                    try:
                        child_names = _names_last_first(child_fd)
                    except BaseException:
                        os.close(child_fd)
                        raise
                    stack.append((child_fd, child_components, child_names))
        finally:
            for fd, _, _ in stack:
                os.close(fd)
            self.fresh = set()
        self.layers += 1

    def _is_opaque(self, dir_fd: int) -> bool:
        try:
            return os.getxattr(dir_fd, self.fmt.opaque_xattr) == b"y"
        except OSError:
            return False

    def _clear(self, dir_fd: int, components: Components) -> None:
        with os.scandir(dir_fd) as it:
            names = [entry.name for entry in it]
        for name in names:
            self.cache.invalidate((*components, name))
            remove_at(dir_fd, name)

    def _remove(self, parent_fd: int, components: Components) -> None:
        self.cache.invalidate(components)
        remove_at(parent_fd, components[-1])

    def _entry(
        self, src_fd: int, parent: Components, name: str, links: dict[tuple[int, int], Components]
    ) -> tuple[int, Components] | None:
        components = (*parent, name)
        self.current = components
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        dst_parent = self.cache.dir_fd(parent)
        existing = None if parent in self.fresh else lstat_at(dst_parent, name)
        if self.fmt.is_whiteout(src_fd, name, st):
            if existing is not None:
                self._remove(dst_parent, components)
            return None
        if stat.S_ISDIR(st.st_mode):
            child_src = open_dir_at(src_fd, name)
            try:
                if existing is not None and (not stat.S_ISDIR(existing.st_mode) or self._is_opaque(child_src)):
                    self._remove(dst_parent, components)
                    existing = None
                if existing is None:
                    os.mkdir(name, 0o700, dir_fd=dst_parent)
                    if len(self.fresh) < self.fresh_max:
                        self.fresh.add(components)
                self._dir_metadata(child_src, self.cache.dir_fd(components), components, st)
            except BaseException:
                os.close(child_src)
                raise
            return child_src, components
        if existing is not None:
            self._remove(dst_parent, components)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = links.get(key)
            if first is not None:
                with opened(os.dup(dst_parent)) as dst_dup:
                    src_parent = self.cache.dir_fd(first[:-1])
                    os.link(first[-1], name, src_dir_fd=src_parent, dst_dir_fd=dst_dup, follow_symlinks=False)
                return None
            links[key] = components
        self._copy_node(src_fd, dst_parent, name, st)
        return None

    def _dir_metadata(self, src_fd: int, dst_fd: int, components: Components, st: os.stat_result) -> None:
        if self.is_root:
            os.fchown(dst_fd, st.st_uid, st.st_gid)
        self._copy_xattrs(src_fd, dst_fd, replace=True)
        self.dir_meta.set(components, DirMeta(stat.S_IMODE(st.st_mode), None, None, st.st_mtime_ns))

    def _copy_xattrs(self, src_ref: int | str, dst_ref: int | str, *, replace: bool) -> None:
        """Copy non-overlay xattrs between two fds, or two paths acted on without following a symlink."""
        follow = isinstance(src_ref, int)  # fds cannot be combined with follow_symlinks=False
        try:
            names = os.listxattr(src_ref, follow_symlinks=follow)
        except OSError as e:
            if e.errno in _XATTR_SKIP_ERRNOS:
                return
            raise
        wanted = {n for n in names if not n.startswith(OVERLAY_XATTR_PREFIXES)}
        if replace:
            for old in os.listxattr(dst_ref, follow_symlinks=follow):
                if old not in wanted and not old.startswith(OVERLAY_XATTR_PREFIXES):
                    os.removexattr(dst_ref, old, follow_symlinks=follow)
        for key in sorted(wanted):
            try:
                os.setxattr(dst_ref, key, os.getxattr(src_ref, key, follow_symlinks=follow), follow_symlinks=follow)
            except OSError as e:
                if e.errno not in _XATTR_SKIP_ERRNOS:
                    raise
                _logger.debug("xattr %s not copied to %s: %s", key, "/".join(self.current), e.strerror)

    def _copy_node(self, src_parent: int, dst_parent: int, name: str, st: os.stat_result) -> None:
        mode = stat.S_IMODE(st.st_mode)
        ns = (st.st_atime_ns, st.st_mtime_ns)
        if stat.S_ISREG(st.st_mode):
            with (
                opened(os.open(name, _FILE_READ, dir_fd=src_parent)) as src,
                opened(os.open(name, _FILE_CREATE, 0o600, dir_fd=dst_parent)) as dst,
            ):
                self._copy_data(src, dst, st)
                if self.is_root:
                    os.fchown(dst, st.st_uid, st.st_gid)  # before xattrs: chown drops security.capability
                self._copy_xattrs(src, dst, replace=False)
                os.fchmod(dst, mode)  # after chown, which clears setuid/setgid
                os.utime(dst, ns=ns)
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_parent), name, dir_fd=dst_parent)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(name, 0o600, dir_fd=dst_parent)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            try:
                os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dst_parent)
            except PermissionError:
                _logger.warning("device %s not copied: mknod not permitted", "/".join(self.current))
                return
        else:
            _logger.warning("%s not copied: unsupported file type", "/".join(self.current))
            return
        if self.is_root:
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_parent, follow_symlinks=False)
        self._copy_xattrs(proc_fd_path(src_parent, name), proc_fd_path(dst_parent, name), replace=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, mode, dir_fd=dst_parent, follow_symlinks=False)
        os.utime(name, ns=ns, dir_fd=dst_parent, follow_symlinks=False)

    def _copy_data(self, src: int, dst: int, st: os.stat_result) -> None:
        size = st.st_size
        if size == 0:
            return
        if self.try_reflink:
            try:
                fcntl.ioctl(dst, _FICLONE, src)
            except OSError as e:
                if e.errno not in _NO_FAST_COPY:
                    raise
                self.try_reflink = False
            else:
                return
        if st.st_blocks * 512 >= size:
            # Fully allocated (no holes): one copy, no hole probing, no truncate.
            _copy_range(src, dst, 0, size)
            return
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break  # only a hole is left
                data = offset
                hole = size
            else:
                hole = os.lseek(src, data, os.SEEK_HOLE)
            _copy_range(src, dst, data, min(hole, size) - data)
            offset = hole
        os.ftruncate(dst, size)

    def finish(self) -> None:
        for components, meta in self.dir_meta.deepest_first():
            self.current = components
            try:
                fd = self.cache.dir_fd(components)
            except (FileNotFoundError, NotADirectoryInPathError):
                continue  # removed or replaced by a later layer
            os.fchmod(fd, meta.mode)
            if meta.mtime_ns is not None:
                os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def _names_last_first(dir_fd: int) -> list[str]:
    """The entry names of ``dir_fd``, sorted descending (``pop()`` hands them out in ascending order)."""
    with os.scandir(dir_fd) as it:
        return sorted((entry.name for entry in it), reverse=True)


_FALLBACK_COPY_CHUNK_BYTES: Final = 1 << 20
"""Buffer of the read/write copy used where copy_file_range is refused (an IO size, not a limit)."""


def _copy_range(src: int, dst: int, position: int, length: int) -> None:
    end = position + length
    try:
        while position < end:
            copied = os.copy_file_range(src, dst, end - position, position, position)
            if copied == 0:
                return  # the source shrank
            position += copied
    except OSError as e:
        if e.errno not in _NO_FAST_COPY:
            raise
        chunk = _FALLBACK_COPY_CHUNK_BYTES
        while position < end:
            data = os.pread(src, min(chunk, end - position), position)
            if not data:
                return
            view = memoryview(data)
            while view:
                written = os.pwrite(dst, view, position)
                position += written
                view = view[written:]
