"""Resolve an image's ``Config.User`` against the ``/etc/passwd`` and ``/etc/group`` of its rootfs.

Spec forms (as containerd's ``WithUser`` + ``WithAdditionalGIDs`` read them):

=================  ==========================================================================================
``""``             uid 0; gid and groups of the passwd entry for uid 0 if any, else gid 0
``name``           uid and primary gid from the passwd entry named ``name`` (missing -> :class:`ConfigError`)
``uid``            that uid; gid from its passwd entry if there is one, else 0 (a missing entry is allowed)
``user:group``     user as above; gid = ``group`` if numeric, else the gid of that /etc/group entry
=================  ==========================================================================================

``additional_gids`` = the process gid, then every /etc/group entry that lists the user's name as a member
(file order, no duplicates). Listing the primary gid is what containerd does since GHSA-hmfx-3pcx-653p
(CVE-2023-25173), so the supplementary list is always set explicitly. Unlike the "SHOULD NOT" of the
image-spec conversion.md, the groups are also resolved for a numeric uid and with an explicit group, as
containerd does (Docker/Kubernetes users expect it).

Invariants:
    * SECURITY: /etc/passwd and /etc/group are untrusted files INSIDE the rootfs. They are opened relative
      to a directory fd of the rootfs with every symlink resolved inside it (``openat2`` with
      ``RESOLVE_IN_ROOT``; where that syscall is missing, a component walk with ``O_NOFOLLOW`` that resolves
      symlinks itself, ``..`` clamped at the root, at most ``Limits.max_symlink_hops`` links). An absolute or
      ``..`` link never reaches a host file.
    * SECURITY: only regular files are read (checked on an ``O_PATH`` descriptor before any open that could
      have side effects, e.g. on a device or a FIFO), and at most ``Limits.max_user_db_bytes`` bytes.
    * Malformed lines are skipped (as libc does); ids outside ``0..2**32-2`` are never produced.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, TransportError
from cocoguest.image.bundle.runtime_config import ProcessUser
from cocoguest.limits import DEFAULT_LIMITS, Limits, MiB

_logger = logging.getLogger(__name__)

MAX_ID: Final = 2**32 - 2
"""Largest valid uid/gid (``(uid_t)-1`` means "no change" to the kernel)."""

PASSWD_PATH: Final = "/etc/passwd"  # noqa: S105  (a path, not a password)
GROUP_PATH: Final = "/etc/group"

_ID_RE: Final = re.compile(r"[0-9]{1,10}")

# openat2(2): same number on every Linux architecture (unified syscall table since 5.1).
_SYS_OPENAT2: Final = 437
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_IN_ROOT: Final = 0x10
_OPENAT2_UNAVAILABLE: Final = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG})


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


@dataclass(frozen=True, slots=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


class _Openat2UnavailableError(Exception):
    """openat2 is not usable here (old kernel, seccomp): use the component walk."""


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - defensive: a Linux process always has libc symbols
        return None


_LIBC: Final = _libc()


def _openat2(root_fd: int, path: str, flags: int) -> int:
    """``openat2(root_fd, path, {flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS})``.

    Raises:
        _Openat2UnavailableError: the syscall is not available.
        OSError: resolution failed (ENOENT, ELOOP, ...).
    """
    if _LIBC is None:
        raise _Openat2UnavailableError
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    syscall = _LIBC.syscall
    syscall.restype = ctypes.c_long
    fd = int(
        syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(root_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        if err in _OPENAT2_UNAVAILABLE:
            raise _Openat2UnavailableError
        raise OSError(err, os.strerror(err), path)
    return fd


def _walk(root_fd: int, path: str, max_hops: int) -> tuple[int, str | None]:
    """Resolve ``path`` inside the root without following any link out of it.

    Returns:
        ``(dir_fd, name)``: a new fd of the directory holding the final component and its name (never a
        symlink), or ``(dir_fd, None)`` when the path resolves to a directory itself.

    Raises:
        OSError: ENOENT/ENOTDIR for a missing component, ELOOP after too many symlinks.
    """
    stack = [os.dup(root_fd)]  # directory fds from the root down; stack[0] is the root
    pending = deque(path.split("/"))
    hops = 0
    try:
        while pending:
            name = pending.popleft()
            if name in {"", "."}:
                continue
            if name == "..":
                # SECURITY: ".." at the root stays at the root (chroot semantics, like RESOLVE_IN_ROOT).
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            current = stack[-1]
            st = os.stat(name, dir_fd=current, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > max_hops:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=current)
                if target.startswith("/"):
                    # SECURITY: an absolute link restarts at the rootfs, never at the host's "/".
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extendleft(reversed(target.split("/")))
                continue
            if not any(part not in {"", "."} for part in pending):
                return os.dup(current), name
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            # O_NOFOLLOW: if the entry was swapped for a link since the stat, the open fails.
            flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            stack.append(os.open(name, flags, dir_fd=current))
        return os.dup(stack[-1]), None
    finally:
        for fd in stack:
            os.close(fd)


def _read_capped(fd: int, path: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(limit + 1 - total, 1 * MiB))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            # SECURITY: a hostile image cannot make us buffer an unbounded file.
            msg = f"image file {path}: larger than {limit} bytes"
            raise ConfigError(msg)
    return b"".join(chunks)


def _check_regular(st: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        msg = f"image file {path}: not a regular file"
        raise ConfigError(msg)


_READ_FLAGS: Final = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC


def _open_with_openat2(root_fd: int, path: str) -> int:
    path_fd = _openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC)
    try:
        # SECURITY: check the type on an O_PATH fd: opening a device or FIFO can have side effects.
        expected = os.fstat(path_fd)
    finally:
        os.close(path_fd)
    _check_regular(expected, path)
    fd = _openat2(root_fd, path, _READ_FLAGS)
    _check_same(fd, expected, path)
    return fd


def _open_with_walk(root_fd: int, path: str, max_hops: int) -> int:
    dir_fd, name = _walk(root_fd, path, max_hops)
    try:
        if name is None:
            msg = f"image file {path}: not a regular file"
            raise ConfigError(msg)
        expected = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        _check_regular(expected, path)
        fd = os.open(name, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    _check_same(fd, expected, path)
    return fd


def _check_same(fd: int, expected: os.stat_result, path: str) -> None:
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        msg = f"image file {path}: changed while it was being opened"
        raise ConfigError(msg)


def read_file_in_root(
    root: Path, path: str, *, limits: Limits = DEFAULT_LIMITS, use_openat2: bool = True
) -> bytes | None:
    """Read a regular file of an untrusted tree, resolving every symlink inside ``root``.

    Args:
        root: The root directory (the rootfs).
        path: The path inside the root, e.g. ``/etc/passwd``.
        limits: ``max_user_db_bytes`` (largest file accepted) and ``max_symlink_hops`` (for the walk).
        use_openat2: Try ``openat2(RESOLVE_IN_ROOT)`` first (tests turn it off to exercise the walk).

    Returns:
        The content, or None when the path does not exist inside the root.

    Raises:
        ConfigError: not a regular file, too large, or a symlink loop.
        TransportError: the root cannot be opened or another IO error.
    """
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        msg = f"rootfs {root}: cannot open: {e.strerror}"
        raise TransportError(msg) from e
    try:
        try:
            if not use_openat2:
                raise _Openat2UnavailableError
            fd = _open_with_openat2(root_fd, path)
        except _Openat2UnavailableError:
            fd = _open_with_walk(root_fd, path, limits.max_symlink_hops)
    except OSError as e:
        if e.errno in {errno.ENOENT, errno.ENOTDIR}:
            return None
        if e.errno == errno.ELOOP:
            msg = f"image file {path}: too many levels of symbolic links"
            raise ConfigError(msg) from e
        msg = f"image file {path}: cannot open: {e.strerror}"
        raise TransportError(msg) from e
    finally:
        os.close(root_fd)
    try:
        return _read_capped(fd, path, limits.max_user_db_bytes)
    except OSError as e:
        msg = f"image file {path}: cannot read: {e.strerror}"
        raise TransportError(msg) from e
    finally:
        os.close(fd)


def _parse_id(text: str) -> int | None:
    if _ID_RE.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _parse_passwd(untrusted_text: str) -> list[_PasswdEntry]:
    entries: list[_PasswdEntry] = []
    for line in untrusted_text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 4 or not fields[0]:
            continue
        uid, gid = _parse_id(fields[2]), _parse_id(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(_PasswdEntry(fields[0], uid, gid))
    return entries


def _parse_group(untrusted_text: str) -> list[_GroupEntry]:
    entries: list[_GroupEntry] = []
    for line in untrusted_text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 3 or not fields[0]:
            continue
        gid = _parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(_GroupEntry(fields[0], gid, members))
    return entries


def _load(rootfs: Path, path: str, *, limits: Limits, use_openat2: bool) -> str | None:
    data = read_file_in_root(rootfs, path, limits=limits, use_openat2=use_openat2)
    return None if data is None else data.decode("utf-8", errors="surrogateescape")


def resolve_user(
    user_spec: str, rootfs: Path, *, limits: Limits = DEFAULT_LIMITS, use_openat2: bool = True
) -> ProcessUser:
    """Resolve ``Config.User`` to uid, gid and supplementary gids from the image's own user database.

    Args:
        user_spec: ``Config.User`` of the image ("", "name", "uid", "name:group", "uid:gid", ...).
        rootfs: The image's root filesystem.
        use_openat2: Try ``openat2(RESOLVE_IN_ROOT)`` first (tests turn it off to exercise the walk).

    Returns:
        The process user.

    Raises:
        ConfigError: unknown user or group name, a malformed id, or a hostile passwd/group file.
        TransportError: the rootfs cannot be read.
    """
    if "\x00" in user_spec:
        msg = f"image user {user_spec!r}: contains a NUL character"
        raise ConfigError(msg)
    user_part, _, group_part = user_spec.partition(":")
    untrusted_passwd = _parse_passwd(_load(rootfs, PASSWD_PATH, limits=limits, use_openat2=use_openat2) or "")
    untrusted_groups = _parse_group(_load(rootfs, GROUP_PATH, limits=limits, use_openat2=use_openat2) or "")

    entry: _PasswdEntry | None
    if not user_part:
        uid = 0
        entry = next((e for e in untrusted_passwd if e.uid == 0), None)
    elif user_part.isascii() and user_part.isdigit():
        parsed = _parse_id(user_part)
        if parsed is None:
            msg = f"image user {user_spec!r}: uid {user_part} is out of range"
            raise ConfigError(msg)
        uid = parsed
        # A numeric uid need not exist in /etc/passwd (containerd: gid 0 then).
        entry = next((e for e in untrusted_passwd if e.uid == uid), None)
    else:
        entry = next((e for e in untrusted_passwd if e.name == user_part), None)
        if entry is None:
            msg = f"image user {user_part!r}: no such user in /etc/passwd of the image"
            raise ConfigError(msg)
        uid = entry.uid
    gid = entry.gid if entry is not None else 0
    username = entry.name if entry is not None else None

    if group_part:
        if group_part.isascii() and group_part.isdigit():
            parsed_gid = _parse_id(group_part)
            if parsed_gid is None:
                msg = f"image user {user_spec!r}: gid {group_part} is out of range"
                raise ConfigError(msg)
            gid = parsed_gid
        else:
            group = next((g for g in untrusted_groups if g.name == group_part), None)
            if group is None:
                msg = f"image user {user_spec!r}: no such group {group_part!r} in /etc/group of the image"
                raise ConfigError(msg)
            gid = group.gid

    additional = [gid]
    if username is not None:
        for group_entry in untrusted_groups:
            if username in group_entry.members and group_entry.gid not in additional:
                additional.append(group_entry.gid)
    _logger.debug("image user %r -> uid %d gid %d groups %s", user_spec, uid, gid, additional)
    return ProcessUser(uid=uid, gid=gid, additional_gids=tuple(additional), username=username)
