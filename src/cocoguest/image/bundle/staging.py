"""A bundle is built in a hidden sibling directory and renamed into place when it is complete.

The sibling is ``PARENT/.cocoguest-bundle-<name>-<random>`` (same parent, so the final ``rename`` is atomic and
never crosses a filesystem). While a process builds in it, it holds an exclusive ``flock`` on the sibling's
directory fd; a sibling nobody holds a lock on is the leftover of a killed build and is removed (unmounting a
rootfs mounted in it first) by the next build of the same bundle.

Invariants:
    * SECURITY: the sibling, and therefore the published bundle, is mode 0700 and owned by the caller: no other
      local user can reach the rootfs (an image's setuid-root binaries stay out of their reach).
    * The bundle path either does not exist, is the empty directory it was before, or is the complete bundle:
      ``rename(2)`` replaces an absent path or an empty directory atomically, and refuses a non-empty one.
    * Only siblings named for this bundle, owned by this user and not locked by a live builder are removed;
      nothing is ever deleted through a mount point.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, TransportError
from cocoguest.image.bundle.rootfs import unmount
from cocoguest.image.fs.safe_ops import DIR_FLAGS, remove_at

_logger = logging.getLogger(__name__)

TEMP_PREFIX: Final = ".cocoguest-bundle-"
_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")
_NAME_CHARS: Final = 96
"""Characters of the bundle name kept in the sibling's name (the whole name must fit in NAME_MAX)."""


def temp_prefix(bundle: Path) -> str:
    """The name prefix of ``bundle``'s build siblings: ``.cocoguest-bundle-<name>-``."""
    return f"{TEMP_PREFIX}{bundle.name[:_NAME_CHARS]}-"


class BundleStaging:
    """A locked, private (0700) sibling directory of ``bundle`` to build it in; see the module docstring."""

    def __init__(self, bundle: Path, path: Path, lock_fd: int) -> None:
        """Use :meth:`create`."""
        self.bundle = bundle
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, bundle: Path) -> BundleStaging:
        """Remove stale build siblings of ``bundle``, then create and lock a new one (the parent must exist).

        Raises:
            TransportError: the sibling cannot be created or locked.
        """
        remove_stale_siblings(bundle)
        try:
            # SECURITY: mkdtemp creates the directory 0700; it is published as the bundle with that mode.
            path = Path(tempfile.mkdtemp(prefix=temp_prefix(bundle), dir=bundle.parent))
        except OSError as e:
            msg = f"bundle {bundle}: cannot create a build directory in {bundle.parent}: {e.strerror}"
            raise TransportError(msg) from e
        try:
            fd = os.open(path, DIR_FLAGS)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            with contextlib.suppress(OSError):
                path.rmdir()
            msg = f"bundle {bundle}: cannot lock build directory {path}: {e.strerror}"
            raise TransportError(msg) from e
        return cls(bundle, path, fd)

    def publish(self) -> None:
        """Rename the finished sibling to the bundle path and release the lock.

        Raises:
            ConfigError: the bundle path appeared meanwhile and is not an empty directory (the sibling stays;
                the caller discards it).
            TransportError: the rename failed otherwise.
        """
        try:
            os.rename(self.path, self.bundle)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                msg = f"bundle {self.bundle}: directory exists and is not empty"
                raise ConfigError(msg) from e
            if e.errno == errno.ENOTDIR:
                msg = f"bundle {self.bundle}: exists and is not a directory"
                raise ConfigError(msg) from e
            msg = f"bundle {self.bundle}: cannot move {self.path} into place: {e.strerror}"
            raise TransportError(msg) from e
        with contextlib.suppress(OSError):
            parent_fd = os.open(self.bundle.parent, DIR_FLAGS)
            try:
                os.fsync(parent_fd)
            finally:
                os.close(parent_fd)
        self.path = self.bundle
        self.release()

    def release(self) -> None:
        """Drop the lock (idempotent); the directory stays where it is."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def remove_stale_siblings(bundle: Path) -> int:
    """Remove build siblings of ``bundle`` left by killed builds (unlocked, ours); returns how many.

    A sibling whose rootfs is still a mount point is unmounted first; one that stays mounted is left alone.
    Failures are logged, never raised: a leftover must not stop a new build.
    """
    prefix = temp_prefix(bundle)
    try:
        names = [name for name in os.listdir(bundle.parent) if name.startswith(prefix)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = bundle.parent / name
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError:
            continue  # vanished, or not a directory (a symlink is never followed)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live build holds it
            if _remove_sibling(path):
                removed += 1
        finally:
            os.close(fd)
    return removed


def _remove_sibling(path: Path) -> bool:
    for mount_point in sorted(mounts_under(path), key=lambda p: -len(p.parts)):
        try:
            unmount(mount_point)
        except TransportError as e:
            _logger.warning("stale bundle build %s: %s; leaving it in place", path, e)
            return False
    try:
        parent_fd = os.open(path.parent, DIR_FLAGS)
        try:
            remove_at(parent_fd, path.name)
        finally:
            os.close(parent_fd)
    except OSError as e:
        _logger.warning("stale bundle build %s: cannot remove: %s", path, e)
        return False
    _logger.info("removed stale bundle build %s", path)
    return True


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` (from ``/proc/self/mountinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    base = os.path.abspath(path)
    found: list[Path] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
        point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == base or point.startswith(base.rstrip("/") + "/"):
            found.append(Path(point))
    return found
