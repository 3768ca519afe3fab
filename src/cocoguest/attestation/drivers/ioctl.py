"""One ioctl on a TEE character device, with the ioctl function injectable.

The drivers that talk to a device through ``ioctl(2)`` (``/dev/csv-guest``, ``/dev/uv``) build their request
structures with :mod:`ctypes` (pointers into buffers they own) and call :func:`device_ioctl`. Production
passes :func:`fcntl.ioctl`; tests pass a function that plays the kernel: it decodes the caller's structure and
reads and writes the caller's memory through the pointers, so a wrong layout or request number fails there.

Invariants:
    * The device is opened for exactly one call (``O_CLOEXEC``, never ``O_CREAT``) and always closed.
    * Every failure is a :class:`TeeDeviceError` naming the device, the request and the errno, unless the
      caller listed that errno as an expected answer (then the negative errno is returned).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Callable, Collection
from pathlib import Path

from cocoguest.errors import TeeDeviceError

IoctlFunction = Callable[[int, int, ctypes.Structure, bool], int]
"""``fcntl.ioctl(fd, request, arg, mutate_flag)`` with a mutable ctypes structure as ``arg``."""

DEFAULT_IOCTL: IoctlFunction = fcntl.ioctl

_IOC_WRITE = 1
_IOC_READ = 2


def iowr(kind: str, number: int, size: int) -> int:
    """The request number ``_IOWR(kind, number, size)`` (asm-generic/ioctl.h: dir 30, size 16, type 8, nr 0)."""
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (ord(kind) << 8) | number


def device_ioctl(
    path: Path,
    request: int,
    name: str,
    arg: ctypes.Structure,
    *,
    ioctl: IoctlFunction = DEFAULT_IOCTL,
    writable: bool = True,
    expected_errnos: Collection[int] = (),
) -> int:
    """Run ``ioctl(fd, request, arg)`` on ``path`` (opened read-write, or read-only if not ``writable``).

    Returns:
        The ioctl's return value, or ``-errno`` for an errno in ``expected_errnos``.

    Raises:
        TeeDeviceError: the device cannot be opened, or the ioctl failed (names ``name`` and the errno).
    """
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as e:
        msg = f"cannot open TEE device {path}: {e.strerror}"
        raise TeeDeviceError(msg) from e
    try:
        return ioctl(fd, request, arg, True)
    except OSError as e:
        if e.errno is not None and e.errno in expected_errnos:
            return -e.errno
        reason = os.strerror(e.errno) if e.errno is not None else str(e)
        msg = f"{name} (ioctl 0x{request:08x}) on {path} failed: {reason} (errno {e.errno})"
        raise TeeDeviceError(msg) from e
    finally:
        os.close(fd)
