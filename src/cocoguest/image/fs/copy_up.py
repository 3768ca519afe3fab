"""Copy one lower-layer node up into the layer being unpacked (for a cross-layer hardlink), as containerd does.

The copy is a new inode in the layer directory with the lower node's type, content, mode (special bits
included), ownership (when root), mtime and non-overlay xattrs; the hardlink entry is then linked to it, so
both names share that inode in this layer (and in a rootfs merged from it).

Invariants:
    * SECURITY: the source is opened relative to its parent fd with ``O_NOFOLLOW`` and the copy created with
      ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a symlink is copied as a symlink, never followed); overlay xattrs are
      never copied.
    * The bytes copied are charged to a :class:`CopyUpBudget` before any is written (``Limits.max_copy_up_bytes``
      per layer), so a layer cannot make the unpack copy lower content without bound.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from cocoguest.image.fs.safe_ops import opened, proc_fd_path
from cocoguest.image.fs.whiteouts import OVERLAY_XATTR_PREFIXES

_FILE_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_SKIP_ERRNOS: Final = frozenset(
    {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.ENODATA}
)


class CopyUpBudget:
    """The bytes a layer may still copy up from its lower layers."""

    def __init__(self, max_bytes: int) -> None:
        """Allow ``max_bytes`` in total."""
        self.left = max_bytes

    def charge(self, size: int) -> bool:
        """Take ``size`` bytes from the budget; False (nothing taken) when they do not fit."""
        if size > self.left:
            return False
        self.left -= size
        return True


def copy_up_node(
    src_parent: int, name: str, st: os.stat_result, dst_parent: int, dst_name: str, *, is_root: bool, chunk: int
) -> None:
    """Copy the non-directory ``name`` of ``src_parent`` (lstat ``st``) to a new ``dst_name`` of ``dst_parent``.

    Raises:
        OSError: the copy failed (the caller names the entry); a device node needs root (EPERM).
        ValueError: ``st`` is a directory (a programming error: directories are never hardlinked).
    """
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        msg = f"copy_up_node: {name!r} is a directory"
        raise ValueError(msg)
    if stat.S_ISREG(st.st_mode):
        with (
            opened(os.open(name, _FILE_READ, dir_fd=src_parent)) as src,
            opened(os.open(dst_name, _FILE_CREATE, 0o600, dir_fd=dst_parent)) as dst,
        ):
            _copy_data(src, dst, st.st_size, chunk)
            if is_root:
                os.fchown(dst, st.st_uid, st.st_gid)  # before xattrs: chown drops security.capability
            copy_xattrs(src, dst)
            os.fchmod(dst, mode)  # after chown, which clears setuid/setgid
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_parent), dst_name, dir_fd=dst_parent)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst_name, 0o600, dir_fd=dst_parent)
    else:  # char or block device (a lower layer only has them when it was unpacked as root), or a socket
        os.mknod(dst_name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dst_parent)
    if is_root:
        os.chown(dst_name, st.st_uid, st.st_gid, dir_fd=dst_parent, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):  # symlink modes are meaningless (and lchmod does not exist on Linux)
        copy_xattrs(proc_fd_path(src_parent, name), proc_fd_path(dst_parent, dst_name))
        os.chmod(dst_name, mode, dir_fd=dst_parent, follow_symlinks=False)
    os.utime(dst_name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_parent, follow_symlinks=False)


def copy_xattrs(src: int | str, dst: int | str) -> None:
    """Copy the non-overlay xattrs of ``src`` to ``dst`` (fds, or ``/proc/self/fd`` paths never followed at the end).

    Raises:
        OSError: reading or writing an xattr failed for another reason than "not supported here".
    """
    follow = isinstance(src, int)  # fds cannot be combined with follow_symlinks=False
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as e:
        if e.errno in _XATTR_SKIP_ERRNOS:
            return
        raise
    for key in sorted(names):
        if key.startswith(OVERLAY_XATTR_PREFIXES):
            continue  # SECURITY: a lower layer's whiteout/opaque marks must not travel with a copy
        try:
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=follow), follow_symlinks=follow)
        except OSError as e:
            if e.errno not in _XATTR_SKIP_ERRNOS:
                raise


def _copy_data(src: int, dst: int, size: int, chunk: int) -> None:
    """Copy ``size`` bytes from ``src`` to ``dst`` in the kernel where possible, else in ``chunk``-sized reads."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, min(chunk, size - done))
            if n == 0:
                break
            done += n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
            raise
    while done < size:
        data = os.pread(src, min(chunk, size - done), done)
        if not data:
            break
        written = 0
        while written < len(data):
            written += os.pwrite(dst, memoryview(data)[written:], done + written)
        done += len(data)
