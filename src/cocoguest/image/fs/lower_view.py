"""A read-only overlay view of the committed lower layers of a layer, to resolve cross-layer hardlink targets.

A layer's hardlink may name a file of a lower layer (umoci and containerd accept it; containerd copies the
target up into the layer being applied, then links). :class:`LowerView` finds which lower file a path names in
the merged view of the lower layers, exactly as an overlay mount of them would show it:

* the topmost lower layer that has the path wins;
* a whiteout of the path, or of one of its parent directories, in a layer above hides it (absent);
* an opaque directory (``<prefix>overlay.opaque="y"``) on the path in a layer hides the layers below it;
* a non-directory on the path (a file where a lower layer has a directory) hides the lower directory.

It also returns the metadata of each directory on the path, taken from the topmost lower layer that has it
(what an overlay copy-up gives the directories it creates in the upper layer).

Invariants:
    * SECURITY: read-only; every lower layer directory is walked component by component from its root fd with
      ``O_NOFOLLOW`` (:func:`~cocoguest.image.fs.safe_ops.open_dir_at`); a symlink on the path is never
      followed (it counts as a non-directory: the path is absent), and nothing outside the layer
      directories is reached (names are already normalized by ``clean_member_path``).
    * Overlay xattrs (``trusted.overlay.*``, ``user.overlay.*``) are read only to recognise whiteouts and
      opaque directories, and never reported as directory metadata.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from cocoguest.image.fs.safe_ops import DIR_FLAGS, Components, NotADirectoryInPathError, lstat_at, open_dir_at
from cocoguest.image.fs.whiteouts import OVERLAY_XATTR_PREFIXES, WhiteoutFormat

_XATTR_SKIP_ERRNOS: Final = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA})


class LowerLayersPendingError(Exception):
    """The lower layers of a layer are not committed yet: raised by a lower-layer provider that must not wait.

    Internal control flow of the layer pipeline (the caller releases its locks, waits, and retries); never
    shown to a user.
    """


@dataclass(frozen=True, slots=True)
class LowerDirMeta:
    """A lower directory's metadata (from the topmost lower layer that has it).

    Attributes:
        mode: permission bits, special bits included.
        uid: owner.
        gid: group.
        mtime_ns: modification time.
        xattrs: its non-overlay extended attributes.
    """

    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]


class LowerHit:
    """A path found in a lower layer: an open fd of its parent directory (owned, closed by :meth:`close`).

    Attributes:
        layer: index of the lower layer that has it (0 = lowest).
        parent_fd: fd of its parent directory in that layer.
        name: its name in ``parent_fd``.
        st: its lstat result.
        dirs: metadata of each parent directory on the path (``dirs[k]`` for ``path[: k + 1]``).
    """

    def __init__(
        self, layer: int, parent_fd: int, name: str, st: os.stat_result, dirs: tuple[LowerDirMeta, ...]
    ) -> None:
        """Take ownership of ``parent_fd``."""
        self.layer = layer
        self.parent_fd = parent_fd
        self.name = name
        self.st = st
        self.dirs = dirs

    def close(self) -> None:
        """Close the parent fd."""
        if self.parent_fd >= 0:
            os.close(self.parent_fd)
            self.parent_fd = -1

    def __enter__(self) -> LowerHit:
        """Use as a context manager that closes the fd."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the fd."""
        self.close()


class LowerView:
    """The merged view of committed lower layer directories (lowest first), for lookups only."""

    def __init__(self, layer_dirs: Sequence[Path], fmt: WhiteoutFormat) -> None:
        """Describe the view; nothing is opened until :meth:`lookup`.

        Args:
            layer_dirs: the lower layers' overlay-form directories (the store's ``diff`` dirs), lowest first.
            fmt: the whiteout format they were unpacked with.
        """
        self.layer_dirs = tuple(layer_dirs)
        self.fmt = fmt

    def lookup(self, path: Components) -> LowerHit | None:
        """The lower entry ``path`` names in the merged view, or None when it is absent or hidden.

        Raises:
            OSError: a lower layer directory cannot be read.
        """
        if not path:
            return None
        dirs: list[LowerDirMeta | None] = [None] * (len(path) - 1)
        for layer in range(len(self.layer_dirs) - 1, -1, -1):
            root_fd = os.open(self.layer_dirs[layer], DIR_FLAGS)
            hit, blocked = self._walk(layer, root_fd, path, dirs)
            if hit is not None:
                complete = tuple(d for d in dirs if d is not None)
                if len(complete) != len(dirs):  # pragma: no cover - defensive: the walk fills every level
                    hit.close()
                    return None
                hit.dirs = complete
                return hit
            if blocked:
                return None
        return None

    def _walk(
        self, layer: int, fd: int, path: Components, dirs: list[LowerDirMeta | None]
    ) -> tuple[LowerHit | None, bool]:
        """Walk ``path`` in one layer from its root ``fd`` (consumed).

        Returns:
            ``(hit, False)`` when found; ``(None, True)`` when this layer hides the path from the layers below
            (a whiteout, a non-directory on the path, an opaque directory); ``(None, False)`` to look lower.
        """
        try:
            blocked = self._is_opaque(fd)
            for depth, name in enumerate(path):
                st = lstat_at(fd, name)
                if st is None:
                    return None, blocked
                if self.fmt.is_whiteout(fd, name, st):
                    return None, True  # SECURITY: a whiteout hides the lower entry: refuse like an absent one
                if depth == len(path) - 1:
                    hit = LowerHit(layer, fd, name, st, ())
                    fd = -1  # owned by the hit now
                    return hit, False
                if not stat.S_ISDIR(st.st_mode):
                    return None, True  # a non-directory (a symlink too: never followed) hides lower dirs
                try:
                    child = open_dir_at(fd, name)
                except NotADirectoryInPathError:  # pragma: no cover - raced: lstat said directory
                    return None, True
                os.close(fd)
                fd = child
                if dirs[depth] is None:
                    dirs[depth] = _dir_meta(fd, st)
                # An opaque directory hides the lower layers' content below it, at any depth under it.
                blocked = blocked or self._is_opaque(fd)
            return None, blocked  # pragma: no cover - the loop returns at the last component
        finally:
            if fd >= 0:
                os.close(fd)

    def _is_opaque(self, dir_fd: int) -> bool:
        try:
            return os.getxattr(dir_fd, self.fmt.opaque_xattr) == b"y"
        except OSError:
            return False


def _dir_meta(dir_fd: int, st: os.stat_result) -> LowerDirMeta:
    xattrs: list[tuple[str, bytes]] = []
    with contextlib.suppress(OSError):
        for key in sorted(os.listxattr(dir_fd)):
            if key.startswith(OVERLAY_XATTR_PREFIXES):
                continue
            try:
                xattrs.append((key, os.getxattr(dir_fd, key)))
            except OSError as e:
                if e.errno not in _XATTR_SKIP_ERRNOS:
                    raise
    return LowerDirMeta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, tuple(xattrs))
