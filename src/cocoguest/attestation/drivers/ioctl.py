"""One ioctl on a TEE device node, with the system call injectable (Linux ``asm-generic/ioctl.h`` numbering).

Drivers that talk to a device through ioctls (``/dev/tdx_guest``, Occlum's ``/dev/sgx``, ``/dev/csv-guest``,
``/dev/uv``) build their arguments with :mod:`ctypes` (pointers into buffers they own) and take an
:class:`IoctlCall`; production passes :func:`system_ioctl` (``fcntl.ioctl`` with a mutable buffer). Tests pass an
emulated kernel that decodes the argument bytes with its own layout and reads or writes the caller's memory
through the pointers in it, so the driver's packing is exercised by the same code path as on hardware.

Invariants:
    * The device is opened with ``O_CLOEXEC`` (never ``O_CREAT``) for exactly one call sequence and always
      closed.
    * Every failure is a :class:`TeeDeviceError` naming the device path, the ioctl command, its number and the
      errno, unless the caller listed that errno as an expected answer (then the negative errno is returned).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from cocoguest.errors import TeeDeviceError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_IOC_WRITE: Final = 1
_IOC_READ: Final = 2
_T = TypeVar("_T")


def ioc(direction: int, kind: str, number: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)``: direction in bits 30-31, size in 16-29, type in 8-15, number in 0-7."""
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


def ior(kind: str, number: int, size: int) -> int:
    """``_IOR(type, nr, size)``: the kernel writes ``size`` bytes to the argument."""
    return ioc(_IOC_READ, kind, number, size)


def iowr(kind: str, number: int, size: int) -> int:
    """``_IOWR(type, nr, size)``: the kernel reads and writes ``size`` bytes of the argument."""
    return ioc(_IOC_READ | _IOC_WRITE, kind, number, size)


class IoctlCall(Protocol):
    """``ioctl(fd, request, arg)`` on a mutable buffer (a ``bytearray`` or a ctypes object)."""

    def __call__(self, fd: int, request: int, arg: WriteableBuffer, /) -> object:
        """Issue the ioctl; the kernel may change ``arg`` in place. The return value is ignored.

        Raises:
            OSError: the ioctl failed.
        """
        ...


def system_ioctl(fd: int, request: int, arg: WriteableBuffer, /) -> None:
    """The real system call (``fcntl.ioctl`` with ``mutate_flag=True``)."""
    fcntl.ioctl(fd, request, arg, True)


class DeviceSession:
    """An open device node on which :meth:`call` issues ioctls (see :func:`with_device`)."""

    def __init__(self, fd: int, path: Path, ioctl: IoctlCall) -> None:
        self._fd = fd
        self._path = path
        self._ioctl = ioctl

    def call(self, name: str, request: int, arg: WriteableBuffer, *, expected_errnos: Collection[int] = ()) -> int:
        """Issue ioctl ``request`` (called ``name`` in errors) with ``arg``.

        Returns:
            0, or ``-errno`` for an errno in ``expected_errnos``.

        Raises:
            TeeDeviceError: the ioctl failed with another errno.
        """
        try:
            self._ioctl(self._fd, request, arg)
        except OSError as e:
            if e.errno is not None and e.errno in expected_errnos:
                return -e.errno
            reason = os.strerror(e.errno) if e.errno is not None else str(e)
            msg = f"{name} on {self._path} failed: {reason} (ioctl 0x{request:08x}, errno {e.errno})"
            raise TeeDeviceError(msg) from e
        return 0


def with_device(
    path: Path, what: str, ioctl: IoctlCall, use: Callable[[DeviceSession], _T], *, flags: int = os.O_RDWR
) -> _T:
    """Open ``path`` (``what``, for errors), run ``use`` on it, close it.

    Raises:
        TeeDeviceError: the device cannot be opened, or an ioctl in ``use`` failed.
    """
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        msg = f"cannot open {what} {path}: {e.strerror}"
        raise TeeDeviceError(msg) from e
    try:
        return use(DeviceSession(fd, path, ioctl))
    finally:
        os.close(fd)


def device_ioctl(
    path: Path,
    request: int,
    name: str,
    arg: WriteableBuffer,
    *,
    ioctl: IoctlCall = system_ioctl,
    writable: bool = True,
    expected_errnos: Collection[int] = (),
) -> int:
    """One ioctl on ``path`` (opened read-write, or read-only if not ``writable``): :func:`with_device` + call.

    Returns:
        0, or ``-errno`` for an errno in ``expected_errnos``.

    Raises:
        TeeDeviceError: the device cannot be opened, or the ioctl failed.
    """
    return with_device(
        path,
        "TEE device",
        ioctl,
        lambda device: device.call(name, request, arg, expected_errnos=expected_errnos),
        flags=os.O_RDWR if writable else os.O_RDONLY,
    )
