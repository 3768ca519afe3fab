"""Bounded reads and single writes of device, sysfs and configfs files.

Invariants:
    * Reads are capped: a file longer than its cap is a :class:`TeeReportError` (the kernel never produces one).
    * Writes never create files (no ``O_CREAT``): an attribute that does not exist is a device error, so a
      typo in a path cannot silently write a regular file somewhere.
    * Every failure names the file and what it was for.
"""

from __future__ import annotations

import os
from pathlib import Path

from cocoguest.errors import TeeDeviceError, TeeReportError


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """All bytes of ``path`` (at most ``cap``).

    Raises:
        TeeDeviceError: the file cannot be opened or read.
        TeeReportError: the file holds more than ``cap`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        msg = f"cannot open {what} {path}: {e.strerror}"
        raise TeeDeviceError(msg) from e
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(64 * 1024, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                msg = f"{what} {path} is longer than {cap} bytes"
                raise TeeReportError(msg)
    except OSError as e:
        msg = f"cannot read {what} {path}: {e.strerror}"
        raise TeeDeviceError(msg) from e
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_attribute(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to the existing attribute file ``path`` in one ``write``.

    Raises:
        TeeDeviceError: the file does not exist, or the write failed or was short.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        msg = f"cannot open {what} {path} for writing: {e.strerror}"
        raise TeeDeviceError(msg) from e
    try:
        written = os.write(fd, data)
    except OSError as e:
        msg = f"cannot write {what} {path}: {e.strerror}"
        raise TeeDeviceError(msg) from e
    finally:
        os.close(fd)
    if written != len(data):
        msg = f"short write to {what} {path}: {written} of {len(data)} bytes"
        raise TeeDeviceError(msg)
