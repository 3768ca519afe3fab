"""Layer directories, staging, per-layer locks and tree removal for the content-addressed store.

Layout under the work dir::

    layers/<alg>/<hex>/diff/       a committed layer (overlay form); metadata files may sit beside ``diff``
    staging/<alg>-<hex>.<random>/  a layer being unpacked (``diff`` inside) or being deleted (``.trash-``)
    locks/<alg>-<hex>.lock         the per-layer lock file (flock)
    locks/gc.lock                  shared by pulls (Store.lease), exclusive for prune

Invariants:
    * Everything under ``layers/`` was verified before it got there: a layer directory appears only by an
      atomic ``rename`` of a finished staging directory, and leaves only by an atomic ``rename`` into
      ``staging/`` before it is deleted. A reader never sees a half-written or half-deleted layer.
    * A staging directory is created, committed and deleted only by the holder of its layer's lock, and its
      name starts with the layer's lock key: anyone who can take that lock knows the directory is abandoned.
    * The lock of a layer is an exclusive ``flock`` on its lock file plus a ``threading.Lock`` per key in this
      process. The kernel drops the flock when its holder dies (kill -9 included), so a lock never outlives
      its holder. A lock file is unlinked only by a holder; takers check that the file they locked is still
      the one at the path, so an unlink never lets two holders in.
    * Tree removal never follows a symlink, copes with read-only directories and device nodes (overlay
      whiteouts), and keeps at most ``_MAX_REMOVE_DEPTH`` directories open however deep the tree is.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.digest import Digest

_DIR_MODE: Final = 0o700
_MAX_REMOVE_DEPTH: Final = 64
_GC_LOCK_NAME: Final = "gc.lock"
_LOCK_SUFFIX: Final = ".lock"
_TRASH_MARK: Final = ".trash-"


@dataclass(frozen=True)
class LayerRecord:
    """A committed layer.

    Attributes:
        diff_id: the layer's store key: the digest of the uncompressed layer tar, or for a layer whose content
            depends on its parents (cross-layer hardlinks) its chain ID (see ``Store.acquire_layer``).
        size: the size recorded at commit (the uncompressed tar size).
        path: the layer's content directory (``layers/<alg>/<hex>/diff``), in overlay form.
    """

    diff_id: Digest
    size: int
    path: Path


def lock_key(diff_id: Digest) -> str:
    """The file-name key of a layer: ``<alg>-<hex>``."""
    return f"{diff_id.algorithm}-{diff_id.hex}"


def parse_key(name: str) -> Digest | None:
    """The diff_id a staging or lock name starts with, or None if the name is not ours."""
    key = name.split(".", 1)[0]
    algorithm, sep, hex_ = key.partition("-")
    if not sep:
        return None
    try:
        return Digest(algorithm, hex_)
    except ValueError:
        return None


class LayerLayout:
    """Paths of the layer store under a work dir."""

    def __init__(self, work_dir: Path) -> None:
        """Describe the layout under ``work_dir`` (nothing is created; see :meth:`create`)."""
        self.work_dir = work_dir
        self.layers_dir = work_dir / "layers"
        self.staging_dir = work_dir / "staging"
        self.locks_dir = work_dir / "locks"
        self.gc_lock_path = self.locks_dir / _GC_LOCK_NAME

    def create(self) -> None:
        """Create the directories, private to the owner.

        Raises:
            OSError: the directories cannot be created.
        """
        self.work_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        for directory in (self.layers_dir, self.staging_dir, self.locks_dir):
            directory.mkdir(mode=_DIR_MODE, exist_ok=True)
            # SECURITY: layers hold setuid binaries and device nodes from images; only the owner may reach them
            # (an unprivileged user could otherwise run a layer's setuid-root binary from the host).
            if stat.S_IMODE(directory.stat().st_mode) != _DIR_MODE:
                directory.chmod(_DIR_MODE)
        (self.layers_dir / "sha256").mkdir(mode=_DIR_MODE, exist_ok=True)

    def layer_dir(self, diff_id: Digest) -> Path:
        """``layers/<alg>/<hex>``."""
        return self.layers_dir / diff_id.algorithm / diff_id.hex

    def diff_dir(self, diff_id: Digest) -> Path:
        """``layers/<alg>/<hex>/diff``: the content."""
        return self.layer_dir(diff_id) / "diff"

    def is_committed(self, diff_id: Digest) -> bool:
        """Whether the layer's content directory exists (as a real directory, not a symlink)."""
        try:
            return stat.S_ISDIR(os.lstat(self.diff_dir(diff_id)).st_mode)
        except FileNotFoundError:
            return False

    def lock_path(self, diff_id: Digest) -> Path:
        """``locks/<alg>-<hex>.lock``."""
        return self.locks_dir / f"{lock_key(diff_id)}{_LOCK_SUFFIX}"

    def new_staging(self, diff_id: Digest) -> Path:
        """Create ``staging/<alg>-<hex>.<random>/diff`` (both private and empty); return the outer directory.

        Raises:
            OSError: cannot create it.
        """
        root = self.staging_dir / f"{lock_key(diff_id)}.{secrets.token_hex(8)}"
        root.mkdir(mode=_DIR_MODE)
        (root / "diff").mkdir(mode=_DIR_MODE)
        return root

    def trash_path(self, diff_id: Digest) -> Path:
        """A fresh name in ``staging/`` to move a layer directory to before deleting it."""
        return self.staging_dir / f"{lock_key(diff_id)}{_TRASH_MARK}{secrets.token_hex(8)}"

    def layer_lock_files(self) -> Iterator[tuple[Digest, Path]]:
        """Lock files of layers (``gc.lock`` and foreign names are skipped)."""
        for name in sorted(os.listdir(self.locks_dir)):
            if name == _GC_LOCK_NAME or not name.endswith(_LOCK_SUFFIX):
                continue
            digest = parse_key(name[: -len(_LOCK_SUFFIX)])
            if digest is not None:
                yield digest, self.locks_dir / name


# -- locks ------------------------------------------------------------------------------------------------------

_registry_mutex = threading.Lock()
_thread_locks: dict[str, tuple[threading.Lock, int]] = {}


def _take_thread_lock(path: str) -> threading.Lock:
    with _registry_mutex:
        lock, users = _thread_locks.get(path, (threading.Lock(), 0))
        _thread_locks[path] = (lock, users + 1)
        return lock


def _drop_thread_lock(path: str) -> None:
    with _registry_mutex:
        lock, users = _thread_locks[path]
        if users <= 1:
            del _thread_locks[path]
        else:
            _thread_locks[path] = (lock, users - 1)


def _flock_file(path: str, *, blocking: bool) -> int | None:
    """Open and exclusively flock ``path``; None if busy and not blocking."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder may have unlinked the file while we waited: then our lock is on a dead inode and
        # a newcomer could lock a new file at the same path. Only a lock on the file at the path counts.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            os.close(fd)
            continue
        mine = os.fstat(fd)
        if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


class HeldLock:
    """A held per-layer lock (see :func:`hold_layer_lock`)."""

    def __init__(self, path: str, fd: int) -> None:
        """Wrap a locked file descriptor."""
        self.path = path
        self.fd = fd
        self.unlink_on_release = False


@contextlib.contextmanager
def hold_layer_lock(path: Path, *, blocking: bool = True) -> Iterator[HeldLock | None]:
    """Hold the lock at ``path`` exclusively against other threads and processes.

    Yields the held lock, or None when ``blocking`` is False and someone else holds it. Set
    ``unlink_on_release`` on the held lock to remove the lock file as it is released.

    Raises:
        OSError: the lock file cannot be opened or locked.
    """
    key = os.fspath(path)
    thread_lock = _take_thread_lock(key)
    try:
        if not thread_lock.acquire(blocking=blocking):
            yield None
            return
        try:
            fd = _flock_file(key, blocking=blocking)
            if fd is None:
                yield None
                return
            held = HeldLock(key, fd)
            try:
                yield held
            finally:
                if held.unlink_on_release:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(key)
                os.close(fd)
        finally:
            thread_lock.release()
    finally:
        _drop_thread_lock(key)


@contextlib.contextmanager
def hold_shared_file_lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold a shared (or exclusive) flock on a file that is never unlinked (``gc.lock``); blocks.

    Raises:
        OSError: the lock file cannot be opened or locked.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


# -- durability -------------------------------------------------------------------------------------------------


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover — defensive: no C library to load (not Linux)
        return None
    function = getattr(libc, "syncfs", None)
    if function is None:  # pragma: no cover — defensive: libc without syncfs (very old glibc, musl < 1.1.?)
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_syncfs = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one ``syncfs``, else ``sync``).

    One syscall instead of an fsync per unpacked file: the data has to reach the disk either way.

    Raises:
        OSError: the flush failed.
    """
    if _syncfs is None:  # pragma: no cover — defensive: see _load_syncfs
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fspath(path))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename into or out of it) durable.

    Raises:
        OSError: the fsync failed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(layout: LayerLayout, diff_id: Digest, staging_root: Path, *, durable: bool) -> Path:
    """Atomically move a finished staging directory to ``layers/<alg>/<hex>``; return that path.

    The caller holds the layer's lock and has removed any stale directory at the target.

    Raises:
        OSError: the flush or the rename failed (the staging directory is then still in place).
    """
    target = layout.layer_dir(diff_id)
    target.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
    if durable:
        # Content first, then the rename that makes it visible: after a power loss a layer directory is
        # either absent or complete.
        sync_filesystem(staging_root)
    os.rename(staging_root, target)
    if durable:
        fsync_dir(target.parent)
        fsync_dir(staging_root.parent)
    return target


# -- removal ----------------------------------------------------------------------------------------------------


def _is_missing(e: OSError) -> bool:
    return e.errno == errno.ENOENT


def _empty_dir(dir_fd: int, root_fd: int, depth: int) -> int:
    """Delete everything in the open directory; return the bytes freed (blocks of last links)."""
    freed = 0
    while True:
        names = os.listdir(dir_fd)
        if not names:
            return freed
        for name in names:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                # Files, symlinks, fifos, sockets and device nodes (overlay whiteouts are 0:0 char devices):
                # unlink never follows a symlink. Count the blocks when the last link goes.
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                if st.st_nlink <= 1:
                    freed += st.st_blocks * 512
                continue
            if depth >= _MAX_REMOVE_DEPTH:
                # Too deep to keep a descriptor per level: hoist the subtree to the top and take it from there.
                hoisted = f".rm-{secrets.token_hex(8)}"
                os.rename(name, hoisted, src_dir_fd=dir_fd, dst_dir_fd=root_fd)
                continue
            if st.st_mode & 0o700 != 0o700:
                # SECURITY: stat said directory without following links, and the tree is private to us, so the
                # chmod (which follows links) hits this directory; open() below refuses a symlink anyway.
                os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dir_fd)
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            try:
                freed += _empty_dir(child, root_fd, depth + 1)
            finally:
                os.close(child)
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            freed += st.st_blocks * 512


def remove_tree(path: Path) -> int:
    """Delete ``path`` (a file or a directory tree) if it exists; return the bytes freed.

    Works on trees with read-only directories, device nodes and any depth; never follows a symlink; tolerates
    a concurrent remover of the same tree.

    Raises:
        OSError: something could not be deleted (e.g. an immutable file).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return st.st_blocks * 512 if st.st_nlink <= 1 else 0
    if st.st_mode & 0o700 != 0o700:
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        freed = _empty_dir(fd, fd, 1)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return freed
    return freed + st.st_blocks * 512


class LayerSlot:
    """What :meth:`Store.acquire_layer` yields: an existing layer, or an empty staging directory to fill.

    Attributes:
        existing: the layer, already committed: nothing to do.
        staging: an empty private directory to unpack into, when ``existing`` is None.
    """

    def __init__(
        self,
        diff_id: Digest,
        existing: LayerRecord | None,
        staging: Path | None,
        publisher: Callable[[int, Callable[[], None] | None, bool], LayerRecord] | None,
    ) -> None:
        """Build a slot; the store does this."""
        self.diff_id = diff_id
        self.existing = existing
        self.staging = staging
        self._publisher = publisher
        self._committed: LayerRecord | None = None

    @property
    def committed(self) -> LayerRecord | None:
        """The record made by :meth:`commit`, if it was called and succeeded."""
        return self._committed

    def commit(self, size: int, *, parent_dependent: bool = False) -> LayerRecord:
        """Publish the staging directory as the layer and record it; call only after every check passed.

        Args:
            size: the layer's uncompressed size in bytes.
            parent_dependent: the content depends on the lower layers (cross-layer hardlinks were copied up):
                the layer is stored under the chain ID given to ``acquire_layer``, not its diff_id.

        Raises:
            ValueError: the slot has no staging directory, was committed already, or ``size`` is negative.
            TransportError: the rename or the DB write failed (nothing is left under ``layers/``).
        """
        return self._commit(size, parent_dependent=parent_dependent)

    def _commit(
        self, size: int, *, after_rename: Callable[[], None] | None = None, parent_dependent: bool = False
    ) -> LayerRecord:
        """:meth:`commit`, with a hook run between the rename and the DB write (crash tests)."""
        if self._publisher is None:
            msg = f"layer {self.diff_id}: this slot has nothing to commit (the layer exists)"
            raise ValueError(msg)
        if self._committed is not None:
            msg = f"layer {self.diff_id}: already committed"
            raise ValueError(msg)
        if size < 0:
            msg = f"layer {self.diff_id}: negative size {size}"
            raise ValueError(msg)
        self._committed = self._publisher(size, after_rename, parent_dependent)
        return self._committed
