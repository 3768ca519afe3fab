"""The two ways a layer directory can spell overlayfs whiteouts and opaque directories (see
:mod:`~cocoguest.image.fs.unpack` for the semantics), and how to pick one for a directory.

* ``TRUSTED`` (root, trusted xattrs, mknod): whiteouts are 0:0 character devices, opaque directories carry
  ``trusted.overlay.opaque="y"``.
* ``USER`` (overlayfs mounted with ``userxattr``): whiteouts are empty regular files with
  ``user.overlay.whiteout``; their directories are marked ``user.overlay.opaque="x"``; opaque is ``"y"``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from cocoguest.image.fs.safe_ops import DIR_FLAGS, proc_fd_path

OVERLAY_XATTR_PREFIXES: Final = ("trusted.overlay.", "user.overlay.")
"""The xattr namespaces overlayfs reads; an archive's own xattrs there are dropped (SECURITY, unpack.py)."""


@dataclass(frozen=True, slots=True)
class WhiteoutFormat:
    """How whiteouts and opaque directories are written in a layer directory.

    Use :attr:`TRUSTED` or :attr:`USER` (see the module docstring); :func:`detect_whiteout_format` picks one.
    The overlay mount of ``USER`` layers needs the ``userxattr`` option.

    Attributes:
        name: ``"trusted"`` or ``"user"``.
        xattr_prefix: ``"trusted.overlay."`` or ``"user.overlay."``.
        device_whiteouts: Whiteouts are 0:0 char devices (else empty files with ``<prefix>whiteout``).
    """

    name: str
    xattr_prefix: str
    device_whiteouts: bool

    TRUSTED: ClassVar[WhiteoutFormat]
    USER: ClassVar[WhiteoutFormat]

    @property
    def opaque_xattr(self) -> str:
        """``<prefix>opaque``: ``"y"`` = opaque directory; ``"x"`` = (USER) holds xattr whiteouts."""
        return self.xattr_prefix + "opaque"

    @property
    def whiteout_xattr(self) -> str:
        """``<prefix>whiteout``: marks an empty regular file as a whiteout (USER)."""
        return self.xattr_prefix + "whiteout"

    def is_whiteout(self, dir_fd: int, name: str, st: os.stat_result) -> bool:
        """Whether entry ``name`` of ``dir_fd`` (with lstat result ``st``) is a whiteout in this format."""
        if self.device_whiteouts:
            return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
            return False
        try:
            os.getxattr(proc_fd_path(dir_fd, name), self.whiteout_xattr, follow_symlinks=False)
        except OSError:
            return False
        return True


WhiteoutFormat.TRUSTED = WhiteoutFormat("trusted", "trusted.overlay.", device_whiteouts=True)
WhiteoutFormat.USER = WhiteoutFormat("user", "user.overlay.", device_whiteouts=False)


def detect_whiteout_format(directory: Path) -> WhiteoutFormat:
    """Pick TRUSTED when we are root, trusted xattrs can be set and mknod works in ``directory``; else USER.

    Probes with uniquely named entries that are removed again.
    """
    if os.geteuid() != 0:
        return WhiteoutFormat.USER
    probe = f".cocoguest-probe-{uuid.uuid4().hex}"
    dir_fd = os.open(directory, DIR_FLAGS)
    try:
        try:
            os.mknod(probe, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=dir_fd)
            os.setxattr(proc_fd_path(dir_fd, probe), "trusted.overlay.cocoguest-probe", b"y", follow_symlinks=False)
        except OSError:
            return WhiteoutFormat.USER
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe, dir_fd=dir_fd)
        return WhiteoutFormat.TRUSTED
    finally:
        os.close(dir_fd)
