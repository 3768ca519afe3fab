"""Unpack one untrusted layer tar into a directory in overlay form (usable as an overlayfs lowerdir).

OCI changesets become overlayfs whiteouts (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque
directories"):

* ``TRUSTED`` (root, trusted xattrs, mknod): ``.wh.NAME`` -> a 0:0 character device ``NAME``;
  ``.wh..wh..opq`` -> ``trusted.overlay.opaque="y"`` on the directory.
* ``USER`` (overlayfs mounted with ``userxattr``; kernel >= 6.7 for xattr whiteouts in lower layers):
  ``.wh.NAME`` -> an empty regular file ``NAME`` with xattr ``user.overlay.whiteout`` (a "xwhiteout"); the
  kernel only looks for xwhiteouts in directories marked ``user.overlay.opaque="x"``, so their parent gets
  that mark unless it is opaque (``"y"``); ``.wh..wh..opq`` -> ``user.overlay.opaque="y"``. Char devices are
  not used because an unprivileged user cannot create them.

Semantics (OCI image-spec layer.md "Whiteouts"): whiteouts apply only to lower layers. A whiteout never
removes an entry of its own layer; if this layer also has a directory of that name, the directory becomes
opaque (the lower one is deleted, this layer's stays). Within the layer, later entries replace earlier ones
(a non-directory replacing a directory removes the tree; a directory over a directory updates metadata).
A 0:0 character device in the archive *is* an overlay whiteout, so it is unpacked as a whiteout.
Because each layer is unpacked on its own, a lower layer's symlink is never followed by a later layer's
path (umoci and Docker follow it inside the rootfs; overlayfs shows the later directory instead).

Cross-layer hardlinks (umoci and containerd accept them): a hardlink whose target is not in this layer is
resolved in the merged view of the committed lower layers (:mod:`~cocoguest.image.fs.lower_view`: the topmost
lower layer that has it wins; a whiteout or opaque directory above hides it, and then the link is refused like
an absent target). The target is copied up into this layer (:mod:`~cocoguest.image.fs.copy_up`), with the
metadata of the directories on its path that this layer does not have yet, as an overlay copy-up does, and
then linked. The layer's content then depends on its parents: :attr:`UnpackStats.copied_up` tells the caller,
which must key the layer by chain ID in the store.

Invariants:
    * SECURITY: nothing outside ``root`` is created, changed or followed: names are normalized lexically
      (``..`` above the root is refused), every directory is opened component by component with
      ``O_NOFOLLOW`` relative to a held fd (a symlink inside a path is refused), final components are
      created with ``*at`` calls that do not follow symlinks, and hardlinks may only name a non-directory
      this unpack created (``root`` must start empty) or, when the caller gives lower layers, a non-directory
      of the lower layers' merged view, which is first copied into ``root``.
    * SECURITY: overlay xattrs (``trusted.overlay.*``, ``user.overlay.*``) from the archive are dropped: only
      ``.wh.`` entries make whiteouts and opaque directories.
    * The stream is read to EOF (drained) before returning, so the caller's diff_id digest covers all bytes.
    * Memory is bounded: file data is streamed in chunks; directory metadata (applied at the end) is kept in
      memory up to ``limits.dir_meta_memory_entries`` records and spilled to a scratch file beside ``root``
      beyond that (:mod:`~cocoguest.image.fs.dir_meta`); the entry count is capped by the tar reader
      (``limits.max_tar_entries``). Whiteouts and opaque directories are still remembered in memory.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from cocoguest.errors import ProtocolError, TransportError, UnsafeArchiveError, UnsupportedError
from cocoguest.image.fs.copy_up import CopyUpBudget, copy_up_node
from cocoguest.image.fs.dir_meta import DirMeta, DirMetaLog
from cocoguest.image.fs.lower_view import LowerDirMeta, LowerView
from cocoguest.image.fs.safe_ops import (
    DIR_FLAGS,
    Components,
    DirCache,
    NotADirectoryInPathError,
    clean_member_path,
    lstat_at,
    open_dir_at,
    opened,
    proc_fd_path,
    remove_at,
)
from cocoguest.image.fs.tar_stream import EntryType, TarEntry, TarStream
from cocoguest.image.fs.whiteouts import OVERLAY_XATTR_PREFIXES, WhiteoutFormat
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_MARKER: Final = ".wh..wh..opq"
_RESERVED_PREFIX: Final = ".wh..wh."
_FILE_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SKIPPED_REPORTED: Final = 1000
_LINUX_MAJOR_LIMIT: Final = 1 << 12
_LINUX_MINOR_LIMIT: Final = 1 << 20
"""Linux device numbers: mknod(2) packs major (12 bits) and minor (20 bits) into 32 bits; larger values
would be truncated into another device's number."""
# Errors of the disk or the machine (TransportError); any other OSError is blamed on the entry.
_IO_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE})
_XATTR_SKIP_ERRNOS: Final = frozenset(
    {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.ENOSPC}
)


@dataclass(frozen=True, slots=True)
class UnpackStats:
    """What :func:`unpack_layer` did.

    Attributes:
        entries: Archive entries processed (whiteouts and directories included; PAX/GNU meta headers not).
        files: Regular files written.
        bytes: File content bytes written (holes of sparse files excluded).
        skipped: Human-readable notes on what was skipped (devices when not root, unsupported xattrs, ...),
            capped at 1000 notes plus a final count.
        copied_up: Lower-layer nodes copied into this layer for cross-layer hardlinks; non-zero means the
            layer's content depends on its parents.
    """

    entries: int
    files: int
    bytes: int
    skipped: tuple[str, ...]
    copied_up: int = 0


def unpack_layer(
    untrusted_tar: BinaryIO,
    root: Path,
    *,
    what: str,
    whiteouts: WhiteoutFormat,
    limits: Limits = DEFAULT_LIMITS,
    lowers: Callable[[], Sequence[Path]] | None = None,
) -> UnpackStats:
    """Unpack the uncompressed layer tar ``untrusted_tar`` into ``root`` in overlay form, then drain it.

    ``root`` becomes mode 0o755 unless the archive has an entry for ``.`` (then that entry's metadata).

    Args:
        untrusted_tar: The uncompressed tar stream (the caller hashes it for the diff_id).
        root: An existing, empty directory (the layer's staging directory).
        what: Names the layer in errors, e.g. ``"layer sha256:ab.. of docker://x"``.
        whiteouts: The overlay whiteout format to write.
        limits: Chunk size, tar caps and ``max_copy_up_bytes``.
        lowers: Gives the committed lower layers' directories (lowest first), called at the first hardlink
            whose target is not in this layer; it may raise
            :class:`~cocoguest.image.fs.lower_view.LowerLayersPendingError`, which propagates. ``None``: the
            layer has no lower layers (such a link is refused).

    Returns:
        Counts and the list of skipped items.

    Raises:
        UnsafeArchiveError: an entry tried to escape or corrupt the root (names the entry and layer).
        ProtocolError: the tar is malformed or an entry cannot be represented.
        UnsupportedError: the filesystem cannot store the whiteout format's xattrs.
        TransportError: a disk error (no space, read-only, ...).
        ValueError: ``root`` is not empty.
    """
    root_fd = os.open(root, DIR_FLAGS)
    if os.listdir(root_fd):
        os.close(root_fd)
        msg = f"unpack root {root} is not empty"
        raise ValueError(msg)
    # Directory metadata beyond the in-memory bound spills beside the root (never into it).
    pending_dirs = DirMetaLog(root.parent, memory_entries=limits.dir_meta_memory_entries)
    unpacker = _Unpacker(DirCache(root_fd), what=what, fmt=whiteouts, pending_dirs=pending_dirs)
    unpacker.lowers = _Lowers(lowers, CopyUpBudget(limits.max_copy_up_bytes), limits.stream_chunk_bytes)
    try:
        os.fchmod(root_fd, 0o755)
        tar = TarStream(untrusted_tar, what=what, limits=limits)
        for entry in tar:
            unpacker.apply(entry, tar.data_chunks())
        tar.drain()
        unpacker.finish()
    finally:
        unpacker.cache.close()
        pending_dirs.close()
    return unpacker.stats()


class _Unpacker:
    """The state of one layer unpack (see the module docstring)."""

    def __init__(self, cache: DirCache, *, what: str, fmt: WhiteoutFormat, pending_dirs: DirMetaLog) -> None:
        self.cache = cache
        self.what = what
        self.fmt = fmt
        self.is_root = os.geteuid() == 0
        self.pending_dirs = pending_dirs
        self.whiteouts: set[Components] = set()
        self.opaque: set[Components] = set()
        self.entries = 0
        self.files = 0
        self.bytes = 0
        self.skipped: list[str] = []
        self.skipped_count = 0
        self.name = ""
        self.lowers = _Lowers(None, CopyUpBudget(0), 1)

    # -- helpers ----------------------------------------------------------------------------------------------

    def stats(self) -> UnpackStats:
        notes = list(self.skipped)
        if self.skipped_count > len(notes):
            notes.append(f"... and {self.skipped_count - len(notes)} more")
        return UnpackStats(self.entries, self.files, self.bytes, tuple(notes), self.lowers.copied_up)

    def skip(self, note: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < _MAX_SKIPPED_REPORTED:
            self.skipped.append(note)
        _logger.debug("%s: skipped %s", self.what, note)

    def unsafe(self, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.what}: entry {self.name!r}: {reason}")

    def parent_fd(self, components: Components) -> int:
        """The fd of directory ``components``, creating missing directories (and replacing this layer's
        whiteouts on the way by opaque directories)."""
        while True:
            try:
                return self.cache.dir_fd(components, create=self.mkdir_implicit)
            except NotADirectoryInPathError as e:
                bad = e.components
                if bad not in self.whiteouts:
                    kind = "a symlink" if e.is_symlink else "not a directory"
                    # SECURITY: never follow (or replace) a non-directory in the middle of a path.
                    raise self.unsafe(f"path component {'/'.join(bad)!r} is {kind}") from e
                fd = self.cache.dir_fd(bad[:-1])
                os.unlink(bad[-1], dir_fd=fd)
                self.whiteouts.discard(bad)
                self.mkdir_implicit(fd, bad[-1], bad)
                self.set_opaque(bad)

    def mkdir_implicit(self, parent_fd: int, name: str, components: Components) -> None:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        self.pending_dirs.set(components, DirMeta(0o755, None, None, None))

    def set_opaque(self, components: Components, value: bytes = b"y") -> None:
        fd = self.cache.dir_fd(components)
        try:
            os.setxattr(fd, self.fmt.opaque_xattr, value)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                msg = (
                    f"{self.what}: entry {self.name!r}: cannot mark an opaque directory: "
                    f"the filesystem does not accept {self.fmt.opaque_xattr} xattrs"
                )
                raise UnsupportedError(msg) from e
            raise
        if value == b"y":
            self.opaque.add(components)

    def apply_xattrs(self, setter: Callable[[str, bytes], None], xattrs: Iterable[tuple[str, bytes]]) -> None:
        for key, value in xattrs:
            if key.startswith(OVERLAY_XATTR_PREFIXES):
                # SECURITY: an archive must not forge overlay whiteouts, opaque dirs or redirects.
                self.skip(f"{self.name} (overlay xattr {key} from the archive)")
                continue
            try:
                setter(key, value)
            except OSError as e:
                if e.errno not in _XATTR_SKIP_ERRNOS:
                    raise
                self.skip(f"{self.name} (xattr {key}: {os.strerror(e.errno or 0)})")

    def remove_existing(self, parent_fd: int, components: Components, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            self.cache.invalidate(components)
            self.pending_dirs.discard(components)
            self.opaque.discard(components)
            remove_at(parent_fd, components[-1])
        else:
            os.unlink(components[-1], dir_fd=parent_fd)
            self.whiteouts.discard(components)

    # -- entries ----------------------------------------------------------------------------------------------

    def apply(self, entry: TarEntry, data: Iterable[bytes]) -> None:
        self.entries += 1
        self.name = entry.unsafe_name
        components = clean_member_path(entry.unsafe_name, what=self.what)
        try:
            self._apply(entry, components, data)
        except OSError as e:
            reason = f"{self.what}: entry {entry.unsafe_name!r}: {e.strerror or e}"
            if e.errno in _IO_ERRNOS:
                raise TransportError(reason) from e
            raise ProtocolError(reason) from e

    def _apply(self, entry: TarEntry, components: Components, data: Iterable[bytes]) -> None:
        if not components:
            if entry.type is not EntryType.DIR:
                # SECURITY: the root must stay a directory (a symlink root would be followed later).
                raise self.unsafe(f"refusing to change the type of the layer root to {entry.type.value}")
            if entry.untrusted_xattrs:
                self.apply_xattrs(lambda k, v: os.setxattr(self.cache.root_fd, k, v), entry.untrusted_xattrs)
            self.pending_dirs.set((), self._dir_meta(entry))
            return
        parent, base = components[:-1], components[-1]
        # The substring test is a cheap filter: a component starting with the prefix implies it.
        if _RESERVED_PREFIX in entry.unsafe_name and any(part.startswith(_RESERVED_PREFIX) for part in parent):
            self.skip(f"{self.name} (inside a reserved whiteout directory)")  # aufs hardlink dir .wh..wh.plnk
            return
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base)
            return
        kind = entry.type
        if kind is EntryType.FILE:
            self._file(entry, self.parent_fd(parent), components, data)
            return
        if kind is EntryType.CHAR and entry.devmajor == 0 and entry.devminor == 0:
            self._whiteout_name(parent, base)  # a 0:0 char device is an overlay whiteout by definition
            return
        if kind is EntryType.HARDLINK:
            self._hardlink(entry, components)
            return
        parent_fd = self.parent_fd(parent)
        existing = lstat_at(parent_fd, base)
        if kind is EntryType.DIR:
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                self.pending_dirs.set(components, self._dir_meta(entry))  # dir over dir: metadata only
            else:
                was_whiteout = components in self.whiteouts
                if existing is not None:
                    self.remove_existing(parent_fd, components, existing)
                os.mkdir(base, 0o700, dir_fd=parent_fd)
                self.pending_dirs.set(components, self._dir_meta(entry))
                if was_whiteout:
                    # OCI: the whiteout deletes the lower directory; this layer's directory stays, alone.
                    self.set_opaque(components)
            if entry.untrusted_xattrs:
                fd = self.cache.dir_fd(components)
                self.apply_xattrs(lambda k, v: os.setxattr(fd, k, v), entry.untrusted_xattrs)
            return
        if existing is not None:
            self.remove_existing(parent_fd, components, existing)
        if kind is EntryType.SYMLINK:
            os.symlink(entry.unsafe_linkname, base, dir_fd=parent_fd)
            self._meta_by_name(entry, parent_fd, base, symlink=True)
        elif kind is EntryType.FIFO:
            os.mkfifo(base, 0o600, dir_fd=parent_fd)
            self._meta_by_name(entry, parent_fd, base, symlink=False)
        else:
            self._device(entry, parent_fd, base)

    def _dir_meta(self, entry: TarEntry) -> DirMeta:
        return DirMeta(entry.mode, entry.uid, entry.gid, entry.mtime_ns)

    def _whiteout(self, parent: Components, base: str) -> None:
        if base == OPAQUE_MARKER:
            self.parent_fd(parent)
            self.set_opaque(parent)
            return
        if base.startswith(_RESERVED_PREFIX):
            self.skip(f"{self.name} (reserved whiteout name)")  # aufs metadata such as .wh..wh.plnk
            return
        target = base.removeprefix(WHITEOUT_PREFIX)
        if target in ("", ".", ".."):
            # SECURITY: ".wh.." / ".wh..." would white out the directory itself or its parent.
            raise self.unsafe("whiteout names no entry")
        self._whiteout_name(parent, target)

    def _whiteout_name(self, parent: Components, target: str) -> None:
        parent_fd = self.parent_fd(parent)
        components = (*parent, target)
        existing = lstat_at(parent_fd, target)
        if existing is None:
            self._make_whiteout(parent_fd, target)
            self.whiteouts.add(components)
        elif components in self.whiteouts:
            pass
        elif stat.S_ISDIR(existing.st_mode):
            # OCI: whiteouts apply to lower layers only; this layer's directory stays, the lower one goes.
            self.set_opaque(components)
        # else: this layer's non-directory already hides every lower entry of that name.

    def _make_whiteout(self, parent_fd: int, name: str) -> None:
        if self.fmt.device_whiteouts:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
            return
        fd = os.open(name, _FILE_CREATE, 0o600, dir_fd=parent_fd)
        try:
            os.setxattr(fd, self.fmt.whiteout_xattr, b"y")
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                msg = (
                    f"{self.what}: entry {self.name!r}: cannot write a whiteout: "
                    f"the filesystem does not accept {self.fmt.whiteout_xattr} xattrs"
                )
                raise UnsupportedError(msg) from e
            raise
        finally:
            os.close(fd)

    def _file(self, entry: TarEntry, parent_fd: int, components: Components, data: Iterable[bytes]) -> None:
        base = components[-1]
        try:
            # O_EXCL never follows a symlink; the common case (a new name) costs no lstat.
            fd = os.open(base, _FILE_CREATE, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            existing = lstat_at(parent_fd, base)
            if existing is not None:
                self.remove_existing(parent_fd, components, existing)
            fd = os.open(base, _FILE_CREATE, 0o600, dir_fd=parent_fd)
        try:
            if entry.sparse_map is None:
                for chunk in data:  # sequential from offset 0 of a new file: plain writes
                    written = os.write(fd, chunk)
                    if written != len(chunk):
                        _write_all(fd, memoryview(chunk)[written:])
            else:
                _write_segments(fd, entry.sparse_map, data)
                os.ftruncate(fd, entry.size)
            if self.is_root:
                os.fchown(fd, entry.uid, entry.gid)  # before xattrs: chown drops security.capability
            if entry.untrusted_xattrs:
                self.apply_xattrs(lambda k, v: os.setxattr(fd, k, v), entry.untrusted_xattrs)
            os.fchmod(fd, entry.mode)  # after chown, which clears setuid/setgid
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        self.files += 1
        self.bytes += entry.stored_size

    def _meta_by_name(self, entry: TarEntry, parent_fd: int, base: str, *, symlink: bool) -> None:
        """Ownership, xattrs, mode and mtime of a node that cannot be opened (symlink, fifo, device)."""
        if self.is_root:
            os.chown(base, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
        if entry.untrusted_xattrs:
            path = proc_fd_path(parent_fd, base)
            self.apply_xattrs(lambda k, v: os.setxattr(path, k, v, follow_symlinks=False), entry.untrusted_xattrs)
        if not symlink:  # symlink modes are meaningless (and lchmod does not exist on Linux)
            os.chmod(base, entry.mode, dir_fd=parent_fd, follow_symlinks=False)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)

    def _device(self, entry: TarEntry, parent_fd: int, base: str) -> None:
        kind = stat.S_IFCHR if entry.type is EntryType.CHAR else stat.S_IFBLK
        note = f"{self.name} ({entry.type.value} device {entry.devmajor}:{entry.devminor}"
        if entry.devmajor >= _LINUX_MAJOR_LIMIT or entry.devminor >= _LINUX_MINOR_LIMIT:
            # SECURITY: never let mknod truncate a number into some other device (or os.makedev overflow).
            msg = (
                f"{self.what}: entry {self.name!r}: device number {entry.devmajor}:{entry.devminor} out of "
                f"range (major < {_LINUX_MAJOR_LIMIT}, minor < {_LINUX_MINOR_LIMIT})"
            )
            raise ProtocolError(msg)
        if not self.is_root:
            self.skip(note + ": not root)")
            return
        try:
            os.mknod(base, kind | 0o600, os.makedev(entry.devmajor, entry.devminor), dir_fd=parent_fd)
        except PermissionError:
            self.skip(note + ": mknod not permitted)")
            return
        self._meta_by_name(entry, parent_fd, base, symlink=False)

    def _hardlink(self, entry: TarEntry, components: Components) -> None:
        target = clean_member_path(entry.unsafe_linkname, what=self.what)
        if not target:
            raise self.unsafe("hardlink to the layer root")
        if target == components:
            return  # a link to itself: nothing to do
        if target in self.whiteouts:
            raise self.unsafe(f"hardlink to whiteout {entry.unsafe_linkname!r}")
        dst_parent = os.dup(self.parent_fd(components[:-1]))
        try:
            existing = lstat_at(dst_parent, components[-1])
            if existing is not None:
                self.remove_existing(dst_parent, components, existing)
            src_parent, st = self._link_target(entry, target)
            if st is None:
                self._copy_up(entry, target)  # a cross-layer link: the target is copied into this layer first
                src_parent, st = self._link_target(entry, target)
            if st is None:  # pragma: no cover - defensive: the copy-up created it
                raise self.unsafe(f"hardlink target {entry.unsafe_linkname!r} is not in this layer")
            if stat.S_ISDIR(st.st_mode):
                raise self.unsafe(f"hardlink to directory {entry.unsafe_linkname!r}")
            # SECURITY: linkat without AT_SYMLINK_FOLLOW links the entry itself (a symlink stays a symlink).
            os.link(target[-1], components[-1], src_dir_fd=src_parent, dst_dir_fd=dst_parent, follow_symlinks=False)
        finally:
            os.close(dst_parent)

    def _link_target(self, entry: TarEntry, target: Components) -> tuple[int, os.stat_result | None]:
        """The (borrowed) parent fd of ``target`` in this layer and its lstat; ``(-1, None)`` if it is not here."""
        try:
            src_parent = self.cache.dir_fd(target[:-1])
        except FileNotFoundError:
            return -1, None
        except NotADirectoryInPathError as e:
            # SECURITY: a link target is resolved inside the root without following symlinks.
            raise self.unsafe(f"hardlink target {entry.unsafe_linkname!r} goes through a non-directory") from e
        return src_parent, lstat_at(src_parent, target[-1])

    def _copy_up(self, entry: TarEntry, target: Components) -> None:
        """Copy ``target`` from the lower layers' merged view into this layer (see the module docstring).

        Raises:
            UnsafeArchiveError: no lower layers, the target is absent or hidden there, it is a directory, or
                the copy-up budget is spent.
            LowerLayersPendingError: from the ``lowers`` provider.
        """
        shown = repr(entry.unsafe_linkname)
        if self.lowers.provider is None:
            raise self.unsafe(f"hardlink target {shown} is not in this layer (and the layer has no lower layers)")
        for depth in range(1, len(target) + 1):
            # SECURITY: this layer's whiteouts and opaque directories hide the lower entries below them.
            if target[:depth] in self.whiteouts or (depth < len(target) and target[:depth] in self.opaque):
                raise self.unsafe(f"hardlink target {shown} is hidden by a whiteout or opaque directory of this layer")
        hit = self.lowers.view(self.fmt).lookup(target)
        if hit is None:
            raise self.unsafe(
                f"hardlink target {shown} is in neither this layer nor a lower one (or a whiteout hides it)"
            )
        with hit:
            if stat.S_ISDIR(hit.st.st_mode):
                raise self.unsafe(f"hardlink to directory {shown}")
            size = hit.st.st_size if stat.S_ISREG(hit.st.st_mode) else 0
            if not self.lowers.budget.charge(size):
                raise self.unsafe(f"hardlink target {shown}: copying it up exceeds the limit on bytes copied up")
            dirs = hit.dirs

            def make_dir(parent_fd: int, name: str, components: Components) -> None:
                self._mkdir_copied_up(parent_fd, name, components, dirs[len(components) - 1])

            try:
                parent_fd = self.cache.dir_fd(target[:-1], create=make_dir)
            except NotADirectoryInPathError as e:
                raise self.unsafe(f"hardlink target {shown} goes through a non-directory") from e
            copy_up_node(
                hit.parent_fd, hit.name, hit.st, parent_fd, target[-1], is_root=self.is_root, chunk=self.lowers.chunk
            )
        self.lowers.copied_up += 1

    def _mkdir_copied_up(self, parent_fd: int, name: str, components: Components, meta: LowerDirMeta) -> None:
        """Create a directory of this layer as an overlay copy-up does: the lower directory's metadata."""
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        with opened(open_dir_at(parent_fd, name)) as fd:
            self.apply_xattrs(lambda k, v: os.setxattr(fd, k, v), meta.xattrs)
        self.pending_dirs.set(components, DirMeta(meta.mode, meta.uid, meta.gid, meta.mtime_ns))

    # -- end of layer -----------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Fix whiteouts in opaque directories, mark xwhiteout parents, then set directory metadata."""
        marked: set[Components] = set()
        for components in sorted(self.whiteouts):
            parent = components[:-1]
            try:
                fd = self.cache.dir_fd(parent)
            except (FileNotFoundError, NotADirectoryInPathError):
                continue  # the directory was replaced later in the archive
            st = lstat_at(fd, components[-1])
            if st is None or not self.fmt.is_whiteout(fd, components[-1], st):
                continue
            if parent in self.opaque:
                # Redundant in an opaque directory (overlayfs.rst), and an xwhiteout would show there.
                os.unlink(components[-1], dir_fd=fd)
            elif not self.fmt.device_whiteouts and parent not in marked:
                self.set_opaque(parent, b"x")
                marked.add(parent)
        for components, meta in self.pending_dirs.deepest_first():
            try:
                fd = self.cache.dir_fd(components)
            except (FileNotFoundError, NotADirectoryInPathError):
                continue  # replaced later in the archive
            if self.is_root and meta.uid is not None and meta.gid is not None:
                os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            if meta.mtime_ns is not None:
                os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


class _Lowers:
    """The lower layers of one unpack (for cross-layer hardlinks): provider, view (made on first use), budget."""

    def __init__(self, provider: Callable[[], Sequence[Path]] | None, budget: CopyUpBudget, chunk: int) -> None:
        self.provider = provider
        self.budget = budget
        self.chunk = chunk
        self.copied_up = 0
        self._view: LowerView | None = None

    def view(self, fmt: WhiteoutFormat) -> LowerView:
        if self._view is None:
            assert self.provider is not None  # noqa: S101  (checked by the caller)
            self._view = LowerView(self.provider(), fmt)
        return self._view


def _write_all(fd: int, rest: memoryview) -> None:
    """Finish a short ``os.write``: write ``rest`` to ``fd``."""
    while rest:
        rest = rest[os.write(fd, rest) :]


def _write_segments(fd: int, segments: Iterable[tuple[int, int]], data: Iterable[bytes]) -> None:
    """Write the stored ``data`` stream into ``fd``: the first ``length`` bytes at ``offset``, and so on."""
    chunks = iter(data)
    buffer = memoryview(b"")
    for offset, length in segments:
        position = offset
        left = length
        while left > 0:
            if not buffer:
                chunk = next(chunks, None)
                if chunk is None:  # pragma: no cover - defensive: the reader checks the map against the size
                    msg = "sparse map covers more bytes than are stored"
                    raise ValueError(msg)
                buffer = memoryview(chunk)
            piece = buffer[:left]
            written = os.pwrite(fd, piece, position)
            position += written
            left -= written
            buffer = buffer[written:]
    for _ in chunks:  # pragma: no cover - defensive: the map covers exactly the stored bytes
        pass
