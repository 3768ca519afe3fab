"""SecureMount ``block-device``: validate, get the key, LUKS2-format or check, open, then link or mount.

Steps of :func:`secure_mount` (each failure is one typed error naming the device, option or command):

1. validate the request (``request.parse_block_device``);
2. resolve the device (``devicePath``, or ``deviceId`` through ``/sys/dev/block/MAJ:MIN``); it must be a block
   device;
3. get the key (``keys.resolve_key``: the CDH's ``fetch_key`` for sealed secrets and ``kbs://``);
4. ``empty``: ``luksFormat`` (data is lost); ``encrypted``: the device must already hold a LUKS2 header;
5. SECURITY: check the header as written on the device: exactly one ``crypt`` segment with aes-xts-plain64,
   4096-byte sectors and the requested integrity (a host-supplied volume with ``cipher_null`` or another
   cipher is refused), and that the key opens a key slot (``--test-passphrase``, which maps nothing);
6. device-mapper must exist (otherwise the error names the missing kernel feature);
7. ``open`` as ``/dev/mapper/<mapperName>``; ``device`` target: symlink ``mount_point`` -> the mapping;
   ``fileSystem``: ``mkfs`` when ``empty`` (ext4 with integrity adds ``lazy_itable_init=0``), then ``mount``.
   A failure after ``open`` closes the mapping again.

Steps 1-5 run wherever cryptsetup and a block device exist (tests use loop devices); 6-7 need device-mapper.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Final

from cocoguest.cdh.storage.cryptsetup import CIPHER, INTEGRITY, SECTOR_SIZE, Cryptsetup
from cocoguest.cdh.storage.devmapper import DEVICE_MAPPER_CONTROL, device_mapper_missing
from cocoguest.cdh.storage.keys import KeyFetcher, resolve_key
from cocoguest.cdh.storage.request import (
    BlockDeviceSpec,
    SecureMountRequest,
    SourceType,
    TargetType,
    parse_block_device,
)
from cocoguest.errors import SecureMountError
from cocoguest.limits import DEFAULT_LIMITS, Limits

SYS_DEV_BLOCK: Final = Path("/sys/dev/block")
_INTEGRITY_SEGMENT: Final = "hmac(sha256)"


def resolve_device(spec: BlockDeviceSpec, sys_dev_block: Path = SYS_DEV_BLOCK) -> str:
    """The ``/dev`` path of the request's device, which must be a block device.

    Raises:
        SecureMountError: no such device, or not a block device.
    """
    if spec.device_path is not None:
        path = spec.device_path
    else:
        assert spec.device_id is not None  # noqa: S101  (the request has one of them)
        major, minor = spec.device_id
        link = sys_dev_block / f"{major}:{minor}"
        try:
            name = Path(os.path.realpath(link, strict=True)).name
        except OSError as e:
            msg = f"secure mount: no block device {major}:{minor} ({link})"
            raise SecureMountError(msg) from e
        path = f"/dev/{name}"
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        msg = f"secure mount: device {path}: {e.strerror}"
        raise SecureMountError(msg) from e
    if not stat.S_ISBLK(mode):
        msg = f"secure mount: {path} is not a block device"
        raise SecureMountError(msg)
    return path


def check_header(cryptsetup: Cryptsetup, device: str, key: bytes, *, integrity: bool) -> None:
    """SECURITY: the LUKS2 header of ``device`` is one we would have written, and ``key`` opens it.

    Raises:
        SecureMountError: not LUKS2, unexpected cipher, sector size or integrity, or the key does not fit.
    """
    if not cryptsetup.is_luks2(device):
        msg = f"secure mount: {device} does not hold a LUKS2 volume (sourceType encrypted)"
        raise SecureMountError(msg)
    header = cryptsetup.header(device)
    if header.cipher != CIPHER:
        msg = f"secure mount: {device} is encrypted with {header.cipher!r}, expected {CIPHER}"
        raise SecureMountError(msg)
    if header.sector_size != SECTOR_SIZE:
        msg = f"secure mount: {device} uses {header.sector_size}-byte sectors, expected {SECTOR_SIZE}"
        raise SecureMountError(msg)
    wanted = _INTEGRITY_SEGMENT if integrity else None
    if header.integrity != wanted:
        msg = (
            f"secure mount: {device} has integrity {header.integrity or 'none'}, the request asks for "
            f"{INTEGRITY if integrity else 'none'} (dataIntegrity)"
        )
        raise SecureMountError(msg)
    if not cryptsetup.test_key(device, key):
        msg = f"secure mount: the key does not open {device}"
        raise SecureMountError(msg)


def prepare(
    request: SecureMountRequest,
    fetch_key: KeyFetcher,
    *,
    cryptsetup: Cryptsetup,
    sys_dev_block: Path = SYS_DEV_BLOCK,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[BlockDeviceSpec, str, bytes]:
    """Steps 1-5 (no device-mapper needed): ``(spec, device path, key)`` of a checked LUKS2 device."""
    spec = parse_block_device(request)
    device = resolve_device(spec, sys_dev_block)
    key = resolve_key(spec.key, fetch_key, limits=limits)
    if spec.source is SourceType.EMPTY:
        cryptsetup.format(device, key, integrity=spec.integrity)
    check_header(cryptsetup, device, key, integrity=spec.integrity)
    return spec, device, key


def secure_mount(
    request: SecureMountRequest,
    fetch_key: KeyFetcher,
    *,
    cryptsetup: Cryptsetup | None = None,
    dm_control: Path = DEVICE_MAPPER_CONTROL,
    sys_dev_block: Path = SYS_DEV_BLOCK,
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """Set up the secure mount of ``request``; returns the mount point (the CDH service hook).

    Raises:
        SecureMountOptionError: invalid request. UnsupportedError: zfs.
        SecureMountError: device, key, cryptsetup, device-mapper, mkfs or mount failure (named).
    """
    tool = cryptsetup or Cryptsetup(limits=limits)
    spec, device, key = prepare(request, fetch_key, cryptsetup=tool, sys_dev_block=sys_dev_block, limits=limits)
    missing = device_mapper_missing(dm_control)
    if missing is not None:
        msg = f"secure mount of {device}: {missing}"
        raise SecureMountError(msg)
    name = spec.mapper_name or f"cocoguest-{uuid.uuid4()}"
    mapped = tool.open(device, name, key)
    try:
        _target(spec, mapped, limits)
    except BaseException:
        tool.close(name)
        raise
    return spec.mount_point


def _target(spec: BlockDeviceSpec, mapped: str, limits: Limits) -> None:
    mount_point = Path(spec.mount_point)
    if spec.target is TargetType.DEVICE:
        mount_point.parent.mkdir(parents=True, exist_ok=True)
        try:
            mount_point.symlink_to(mapped)
        except OSError as e:
            msg = f"secure mount: cannot link {mount_point} -> {mapped}: {e.strerror}"
            raise SecureMountError(msg) from e
        return
    if spec.source is SourceType.EMPTY:
        mkfs = [f"mkfs.{spec.filesystem}", *spec.mkfs_options]
        if spec.filesystem == "ext4" and spec.integrity:
            mkfs += ["-E", "lazy_itable_init=0"]
        with tempfile.TemporaryDirectory(prefix="cocoguest-mkfs-") as empty:
            _command("mkfs", [*mkfs, mapped], limits, cwd=empty)  # SECURITY: relative names find nothing
    mount_point.mkdir(parents=True, exist_ok=True)
    options = ["-o", ",".join(spec.mount_flags)] if spec.mount_flags else []
    _command("mount", ["mount", "-t", spec.filesystem, *options, mapped, str(mount_point)], limits)


def _command(what: str, args: list[str], limits: Limits, cwd: str | None = None) -> None:
    try:
        result = subprocess.run(
            args, capture_output=True, timeout=limits.secure_mount_command_timeout_s, check=False, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"secure mount: {what} ({args[0]}) failed: {e}"
        raise SecureMountError(msg) from e
    if result.returncode != 0:
        text = " ".join(result.stderr.decode("utf-8", "replace").split())[:300]
        msg = f"secure mount: {' '.join(args)} failed (status {result.returncode}): {text}"
        raise SecureMountError(msg)
