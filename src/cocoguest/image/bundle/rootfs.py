"""The bundle rootfs as a kernel overlay mount of the stored layer directories.

``mount_overlay`` stacks read-only layer directories (given lowest first) under a fresh writable upper dir.
overlayfs lists ``lowerdir`` TOP first, so the order is reversed when the options are built. The layer
directories already hold overlay-form whiteouts (0:0 character devices, ``trusted.overlay.opaque``), so the
kernel applies them.

Paths go into the legacy ``mount(2)`` option string with ``\\``, ``:`` and ``,`` backslash-escaped
(overlayfs unescapes them). That string is limited to one page; when the real paths do not fit (many
layers, long paths) the layers are passed as ``/proc/self/fd/N`` of ``O_PATH`` descriptors held during
the call, which the kernel resolves like any path (short, and free of special characters).

Invariants:
    * Nothing is mounted unless ``mount(2)`` succeeded; on failure the upper/work dirs this call created
      are removed again.
    * A refused mount caused by the environment (not root, EPERM/EACCES, ENODEV, EINVAL from an upper
      filesystem overlay cannot use, option string too long) raises :class:`UnsupportedError`, so callers
      can fall back to a copy; other failures raise :class:`TransportError`.
    * The upper dir of a mount starts empty: a non-empty one is refused (it would leak an earlier
      container's writes into this one).
    * SECURITY: ``unmount`` never follows a symlink at the target (``UMOUNT_NOFOLLOW``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, TransportError, UnsupportedError

_logger = logging.getLogger(__name__)

UPPER_DIR: Final = "upper"
WORK_DIR: Final = "work"

_MNT_DETACH: Final = 0x2
_UMOUNT_NOFOLLOW: Final = 0x8
_UNSUPPORTED_ERRNOS: Final = frozenset({errno.EPERM, errno.EACCES, errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP})


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - defensive: a Linux process always has libc symbols
        return None
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    libc.umount2.restype = ctypes.c_int
    return libc


_LIBC: Final = _libc()


def _escape(path: str) -> str:
    """Escape a path for an overlayfs option value (the kernel unescapes ``\\\\``, ``\\:`` and ``\\,``)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # pragma: no cover - defensive: Linux always reports it
        return 4096


def _options(lower: Sequence[str], upper: Path, work: Path) -> str:
    lowerdir = ":".join(_escape(path) for path in lower)
    return f"lowerdir={lowerdir},upperdir={_escape(str(upper))},workdir={_escape(str(work))}"


@contextlib.contextmanager
def _fd_paths(dirs: Sequence[Path]) -> Iterator[list[str]]:
    """Hold ``O_PATH`` fds of ``dirs`` and yield their ``/proc/self/fd/N`` names."""
    fds: list[int] = []
    try:
        for directory in dirs:
            fds.append(os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        yield [f"/proc/self/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def _mount(data: str, target: Path) -> None:
    if _LIBC is None:
        msg = "overlay mount: not available on this platform"
        raise UnsupportedError(msg)
    if "\x00" in data:
        msg = f"overlay mount on {target}: a path contains a NUL character"
        raise ConfigError(msg)
    if _LIBC.mount(b"overlay", os.fsencode(target), b"overlay", 0, os.fsencode(data)) == 0:
        return
    err = ctypes.get_errno()
    text = f"overlay mount on {target}: {os.strerror(err)}"
    if err in _UNSUPPORTED_ERRNOS:
        raise UnsupportedError(text) from OSError(err, os.strerror(err))
    raise TransportError(text) from OSError(err, os.strerror(err))


def mount_overlay(lower_dirs: Sequence[Path], target: Path, work_root: Path) -> None:
    """Mount the layer directories as an overlay at ``target``, writable through ``work_root/upper``.

    Args:
        lower_dirs: Layer directories, lowest (base) layer first. May be empty (an empty lower dir is used).
        target: The mount point (created if missing).
        work_root: Per-bundle directory for the ``upper`` and ``work`` dirs (on a filesystem overlay can use
            as upper layer, e.g. not another overlay).

    Raises:
        UnsupportedError: overlay mounts are not possible here (not root, no permission, no overlayfs,
            unusable upper filesystem, too many layers for one mount).
        ConfigError: the upper dir under ``work_root`` is not empty.
        TransportError: another mount or filesystem failure.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        msg = f"overlay mount on {target}: needs root on Linux"
        raise UnsupportedError(msg)
    created: list[Path] = []
    try:
        if not work_root.exists():
            work_root.mkdir(parents=True, mode=0o700)
            created.append(work_root)
        upper, work = work_root / UPPER_DIR, work_root / WORK_DIR
        for directory in (upper, work):
            try:
                directory.mkdir(mode=0o755)
                created.append(directory)
            except FileExistsError:
                pass
        if any(upper.iterdir()):
            msg = f"overlay upper dir {upper}: not empty (already used by another mount?)"
            raise ConfigError(msg)
        if not lower_dirs:
            empty = work_root / "empty"
            empty.mkdir(mode=0o755, exist_ok=True)
            created.append(empty)
            lower_dirs = [empty]
        target.mkdir(mode=0o755, exist_ok=True)
        # overlayfs: the leftmost lowerdir is the TOP layer; our list is lowest first.
        top_first = [Path(os.path.abspath(d)) for d in reversed(lower_dirs)]
        limit = _page_size() - 1  # the kernel copies one page of options, NUL included
        data = _options([str(d) for d in top_first], upper.absolute(), work.absolute())
        if len(os.fsencode(data)) <= limit:
            _mount(data, target)
        else:
            with _fd_paths(top_first) as fd_paths:
                data = _options(fd_paths, upper.absolute(), work.absolute())
                if len(os.fsencode(data)) > limit:
                    msg = f"overlay mount on {target}: {len(lower_dirs)} layers do not fit in one mount"
                    raise UnsupportedError(msg)
                _mount(data, target)
    except BaseException:
        for directory in reversed(created):
            shutil.rmtree(directory, ignore_errors=True)
        raise
    _logger.debug("mounted overlay of %d layers at %s", len(lower_dirs), target)


def unmount(target: Path) -> None:
    """Unmount ``target`` (lazily, with a warning, if it is busy).

    Raises:
        TransportError: the unmount failed (e.g. ``target`` is not a mount point).
    """
    if _LIBC is None:
        msg = f"unmount {target}: not available on this platform"
        raise TransportError(msg)
    path = os.fsencode(target)
    # SECURITY: UMOUNT_NOFOLLOW: a symlink planted at the target cannot redirect the unmount.
    if _LIBC.umount2(path, _UMOUNT_NOFOLLOW) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY:
        _logger.warning("unmount %s: busy; detaching lazily", target)
        if _LIBC.umount2(path, _UMOUNT_NOFOLLOW | _MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
    msg = f"unmount {target}: {os.strerror(err)}"
    raise TransportError(msg) from OSError(err, os.strerror(err))


def overlay_available(probe_dir: Path) -> bool:
    """Probe whether an overlay can be mounted with its upper dir under ``probe_dir``.

    Mounts and unmounts a one-layer overlay in a temporary directory under ``probe_dir`` and removes it.

    Returns:
        True when the probe mount succeeded.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=probe_dir))
    except OSError:
        return False
    mounted = False
    try:
        lower, merged = root / "lower", root / "merged"
        lower.mkdir()
        mount_overlay([lower], merged, root / "overlay")
        mounted = True
        unmount(merged)
        mounted = False
    except (UnsupportedError, TransportError, ConfigError, OSError) as e:
        _logger.debug("overlay probe in %s failed: %s", probe_dir, e)
        return False
    finally:
        # Never delete through a mount that is still there.
        if not mounted:
            shutil.rmtree(root, ignore_errors=True)
    return True
