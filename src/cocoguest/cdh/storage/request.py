"""SecureMount requests (api.proto ``SecureMountRequest``) and their validation for ``block-device`` volumes.

Options (spec §8.5): ``deviceId`` ("MAJ:MIN") or ``devicePath``; ``sourceType`` ``empty`` | ``encrypted``;
``key`` (``sealed.…`` | ``kbs://…`` | ``file://…``; absent: a random 4096-byte key, data lost on reuse);
``encryptionType`` ``luks2`` (``zfs`` is refused as unsupported); ``dataIntegrity`` ``true`` | ``false``;
``mapperName``; ``targetType`` ``device`` | ``fileSystem``; ``filesystemType`` and ``mkfsOpts`` (fileSystem).

Invariants:
    * Pure: no IO. Every option is checked before anything touches a device; an unknown option, a missing
      required one or a bad value is a :class:`SecureMountOptionError` naming the option.
    * SECURITY: values that reach a command line (device path, mapper name, filesystem type, mkfs options,
      mount flags) are restricted to safe characters; device path components and mount flags never start with
      ``-`` (no option injection); mkfs options hold no ``/`` (they cannot name another device); and
      ``mount_point`` is an absolute normalised path.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cocoguest.errors import SecureMountOptionError, UnsupportedError

BLOCK_DEVICE: Final = "block-device"
_KNOWN: Final = frozenset(
    {
        "deviceId",
        "devicePath",
        "sourceType",
        "key",
        "encryptionType",
        "dataIntegrity",
        "mapperName",
        "targetType",
        "filesystemType",
        "mkfsOpts",
        "pool",
        "dataset",
    }
)
_DEVICE_ID: Final = re.compile(r"(0|[1-9][0-9]{0,9}):(0|[1-9][0-9]{0,9})")
_MAPPER_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,126}")
_FILESYSTEMS: Final = ("ext4", "xfs")
_WORD: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_=,.:+-]*")
_MKFS_WORD: Final = re.compile(r"[A-Za-z0-9_^-][A-Za-z0-9_=,.:+^-]*")
_DEV_COMPONENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]*")
_KEY_SCHEMES: Final = ("sealed.", "kbs://", "file://")


class SourceType(StrEnum):
    """Whether the device is formatted now (``empty``) or already holds a LUKS2 volume (``encrypted``)."""

    EMPTY = "empty"
    ENCRYPTED = "encrypted"


class TargetType(StrEnum):
    """What appears at the mount point: a symlink to the mapped device, or a mounted filesystem."""

    DEVICE = "device"
    FILESYSTEM = "fileSystem"


@dataclass(frozen=True)
class SecureMountRequest:
    """The proto's fields as plain values (the rpc adapter converts); every field is untrusted."""

    volume_type: str
    options: Mapping[str, str]
    flags: Sequence[str]
    mount_point: str


@dataclass(frozen=True)
class BlockDeviceSpec:
    """A validated ``block-device`` request."""

    device_path: str | None
    device_id: tuple[int, int] | None
    source: SourceType
    key: str | None
    integrity: bool
    mapper_name: str | None
    target: TargetType
    filesystem: str
    mkfs_options: tuple[str, ...]
    mount_flags: tuple[str, ...]
    mount_point: str


def _fail(option: str, problem: str) -> SecureMountOptionError:
    return SecureMountOptionError(f"secure mount option {option!r}: {problem}")


def _choice(options: Mapping[str, str], name: str, allowed: Sequence[str], default: str | None) -> str:
    value = options.get(name, default)
    if value is None:
        raise _fail(name, f"required (one of {', '.join(allowed)})")
    if value not in allowed:
        raise _fail(name, f"{value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def _words(option: str, values: Sequence[str], pattern: re.Pattern[str], allowed: str) -> tuple[str, ...]:
    for value in values:
        if not pattern.fullmatch(value):
            raise _fail(option, f"{value[:40]!r} has characters outside {allowed}")
    return tuple(values)


def parse_block_device(request: SecureMountRequest) -> BlockDeviceSpec:
    """Validate a ``block-device`` SecureMount request.

    Raises:
        SecureMountOptionError: the volume type, an option, a flag or the mount point is invalid.
        UnsupportedError: ``encryptionType = zfs`` (not implemented here).
    """
    if request.volume_type != BLOCK_DEVICE:
        raise _fail("volume_type", f"{request.volume_type[:40]!r} is not supported (only {BLOCK_DEVICE!r})")
    options = request.options
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise _fail(unknown[0], "unknown option")
    encryption = _choice(options, "encryptionType", ("luks2", "zfs"), "luks2")
    if encryption == "zfs":
        msg = "secure mount option 'encryptionType': zfs is not supported by cocoguest (use luks2)"
        raise UnsupportedError(msg)
    if "pool" in options or "dataset" in options:
        raise _fail("pool" if "pool" in options else "dataset", "only meaningful with encryptionType zfs")
    device_path, device_id = _device(options)
    source = SourceType(_choice(options, "sourceType", tuple(SourceType), None))
    key = options.get("key")
    if key is not None and not key.startswith(_KEY_SCHEMES):
        raise _fail("key", "must be a sealed secret (sealed.…), kbs://… or file://…")
    integrity = _choice(options, "dataIntegrity", ("true", "false"), "false") == "true"
    mapper_name = options.get("mapperName")
    if mapper_name is not None and not _MAPPER_NAME.fullmatch(mapper_name):
        raise _fail("mapperName", f"{mapper_name[:40]!r} is not a device-mapper name ([A-Za-z0-9_.+-], 127 max)")
    target = TargetType(_choice(options, "targetType", tuple(TargetType), TargetType.DEVICE.value))
    filesystem = options.get("filesystemType", "ext4")
    mkfs_text = options.get("mkfsOpts", "")
    if target is TargetType.DEVICE and ("filesystemType" in options or "mkfsOpts" in options or request.flags):
        name = "filesystemType" if "filesystemType" in options else "mkfsOpts" if "mkfsOpts" in options else "flags"
        raise _fail(name, "only meaningful with targetType fileSystem")
    if filesystem not in _FILESYSTEMS:
        raise _fail("filesystemType", f"{filesystem[:40]!r} is not one of {', '.join(_FILESYSTEMS)}")
    # SECURITY: no '/' in mkfs words, so no other device or directory can be named (mkfs also runs in an
    # empty directory, so a bare relative name finds nothing); mount flags cannot start with '-'.
    mkfs_options = _words("mkfsOpts", mkfs_text.split(), _MKFS_WORD, "[A-Za-z0-9_=,.:+^-] (no paths)")
    mount_flags = _words("flags", list(request.flags), _WORD, "[A-Za-z0-9_=,.:+-] or starts with '-'")
    mount_point = request.mount_point
    if not mount_point.startswith("/") or os.path.normpath(mount_point) != mount_point or "\x00" in mount_point:
        raise _fail("mount_point", f"{mount_point[:80]!r} is not an absolute normalised path")
    return BlockDeviceSpec(
        device_path,
        device_id,
        source,
        key,
        integrity,
        mapper_name,
        target,
        filesystem,
        mkfs_options,
        mount_flags,
        mount_point,
    )


def _device(options: Mapping[str, str]) -> tuple[str | None, tuple[int, int] | None]:
    path, device_id = options.get("devicePath"), options.get("deviceId")
    if (path is None) == (device_id is None):
        raise _fail("devicePath", "exactly one of devicePath and deviceId is required")
    if path is not None:
        components = path.split("/")[2:]
        if (
            not path.startswith("/dev/")
            or os.path.normpath(path) != path
            or not all(_DEV_COMPONENT.fullmatch(c) for c in components)
        ):
            raise _fail("devicePath", f"{path[:80]!r} is not a normalised path under /dev/")
        return path, None
    assert device_id is not None  # noqa: S101  (exactly one is set)
    match = _DEVICE_ID.fullmatch(device_id)
    if match is None:
        raise _fail("deviceId", f"{device_id[:40]!r} is not MAJOR:MINOR")
    return None, (int(match.group(1)), int(match.group(2)))
