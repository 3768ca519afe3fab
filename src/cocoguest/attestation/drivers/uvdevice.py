"""``/dev/uv``: the built-in :class:`~cocoguest.attestation.drivers.se.UltravisorBackend` (IBM Secure Execution).

Interface (Linux ``arch/s390/include/uapi/asm/uvdevice.h``; used the same way by s390-tools' ``pv_core``):

* ``UVIO_IOCTL_ATT = _IOWR('u', 1, struct uvio_ioctl_cb)`` = ``0xc0407501``. ``uvio_ioctl_cb`` (0x40 bytes):
  ``u32 flags (0); u16 uv_rc; u16 uv_rrc; u64 argument_addr; u32 argument_len; u8 reserved14[44] (0)``.
* The argument is ``uvio_attest`` (0x138 bytes, native byte order): ``u64 arcb_addr, meas_addr,
  add_data_addr; u8 user_data[256]; u8 config_uid[16] (out); u32 arcb_len, meas_len, add_data_len
  (in; out: the additional data the UV wrote); u16 user_data_len; u16 reserved136 (0)``.
* The kernel refuses bad sizes with ``EINVAL`` (ARCB 1 B-1 MiB, measurement 1 B-32 KiB, additional data up
  to 32 KiB); every other check is the Ultravisor's, reported in ``uv_rc``/``uv_rrc`` with the ioctl itself
  succeeding. ``uv_rc`` 0x0001 means executed.

Invariants:
    * Sizes are checked against :class:`~cocoguest.limits.Limits` (``se_max_*``, the kernel's maxima by
      default) before any ioctl; a request over them is an :class:`AttestationRequestError` naming the field.
    * A UV return code other than 0x0001 is a :class:`TeeFirmwareError` with ``code``/``reason`` = rc/rrc and
      the rc's meaning; additional data longer than the buffer we gave is a :class:`TeeReportError`.
    * Verified here only against an emulated kernel and Ultravisor (``tests/fixtures/uv_kernel.py``); never
      on IBM Z hardware.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.attestation.drivers.ioctl import IoctlCall, device_ioctl, iowr, system_ioctl
from cocoguest.errors import AttestationRequestError, TeeFirmwareError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_UV_DEVICE: Final = Path("/dev/uv")
USER_DATA_SIZE: Final = 0x100
CONFIG_UID_SIZE: Final = 0x10
UVC_RC_EXECUTED: Final = 0x0001

UV_RC_MEANINGS: Final = {
    0x0002: "invalid UV command (no attestation facility)",
    0x0005: "request of invalid size",
    0x0102: "user data longer than 256 bytes",
    0x0106: "unsupported attestation request version",
    0x0107: "attestation request length invalid for its version",
    0x0108: "no key slot, or too many",
    0x0109: "encrypted area size does not match the measurement and optional items",
    0x010A: "unsupported plaintext attestation flag",
    0x010B: "unsupported measurement algorithm",
    0x010C: "cannot decrypt the attestation request (not made for this machine's host key)",
    0x010D: "measurement buffer too small",
    0x010E: "additional-data buffer too small",
}
"""Ultravisor return codes of Retrieve Attestation Measurement (s390-tools ``pv_core`` lists the same)."""


class _IoctlCb(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint32),
        ("uv_rc", ctypes.c_uint16),
        ("uv_rrc", ctypes.c_uint16),
        ("argument_addr", ctypes.c_uint64),
        ("argument_len", ctypes.c_uint32),
        ("reserved14", ctypes.c_uint8 * 44),
    )


class _UvioAttest(ctypes.Structure):
    _fields_ = (
        ("arcb_addr", ctypes.c_uint64),
        ("meas_addr", ctypes.c_uint64),
        ("add_data_addr", ctypes.c_uint64),
        ("user_data", ctypes.c_uint8 * USER_DATA_SIZE),
        ("config_uid", ctypes.c_uint8 * CONFIG_UID_SIZE),
        ("arcb_len", ctypes.c_uint32),
        ("meas_len", ctypes.c_uint32),
        ("add_data_len", ctypes.c_uint32),
        ("user_data_len", ctypes.c_uint16),
        ("reserved136", ctypes.c_uint16),
    )


UVIO_IOCTL_ATT: Final = iowr("u", 1, ctypes.sizeof(_IoctlCb))


@dataclass(frozen=True, slots=True)
class UvAttestation:
    """What the Ultravisor returned for one attestation request."""

    measurement: bytes
    additional_data: bytes
    config_uid: bytes


def _check_size(name: str, size: int, low: int, high: int) -> None:
    if not low <= size <= high:
        msg = f"SE attestation request: {name} of {size} bytes is outside {low}..{high}"
        raise AttestationRequestError(msg)


class UvDevice:
    """``/dev/uv`` (see the module docstring)."""

    def __init__(
        self,
        path: Path = DEFAULT_UV_DEVICE,
        *,
        ioctl: IoctlCall = system_ioctl,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.path = path
        self._ioctl = ioctl
        self._limits = limits

    def attest(self, arcb: bytes, user_data: bytes, measurement_size: int, additional_size: int) -> UvAttestation:
        """Retrieve Attestation Measurement for ``arcb`` with ``user_data`` bound into the measurement.

        Raises:
            AttestationRequestError: a size is outside the limits (see the module docstring).
            TeeDeviceError: the device or the ioctl failed (names the errno).
            TeeFirmwareError: the Ultravisor refused (``code``, ``reason`` = rc, rrc).
            TeeReportError: the Ultravisor reports more additional data than the buffer held.
        """
        _check_size("request_blob (ARCB)", len(arcb), 1, self._limits.se_max_arcb_bytes)
        _check_size("measurement_size", measurement_size, 1, self._limits.se_max_measurement_bytes)
        _check_size("additional_size", additional_size, 0, self._limits.se_max_additional_bytes)
        _check_size("user data", len(user_data), 0, USER_DATA_SIZE)
        arcb_buffer = ctypes.create_string_buffer(arcb, len(arcb))
        measurement = ctypes.create_string_buffer(measurement_size)
        additional = ctypes.create_string_buffer(additional_size) if additional_size else None
        attest = _UvioAttest(
            arcb_addr=ctypes.addressof(arcb_buffer),
            meas_addr=ctypes.addressof(measurement),
            add_data_addr=ctypes.addressof(additional) if additional is not None else 0,
            arcb_len=len(arcb),
            meas_len=measurement_size,
            add_data_len=additional_size,
            user_data_len=len(user_data),
        )
        ctypes.memmove(attest.user_data, user_data, len(user_data))
        control = _IoctlCb(argument_addr=ctypes.addressof(attest), argument_len=ctypes.sizeof(attest))
        device_ioctl(self.path, UVIO_IOCTL_ATT, "UVIO_IOCTL_ATT", control, ioctl=self._ioctl)
        if control.uv_rc != UVC_RC_EXECUTED:
            meaning = UV_RC_MEANINGS.get(control.uv_rc, "unexpected return code")
            msg = (
                f"Ultravisor attestation on {self.path} failed: rc 0x{control.uv_rc:04x} "
                f"rrc 0x{control.uv_rrc:04x} ({meaning})"
            )
            raise TeeFirmwareError(msg, code=control.uv_rc, reason=control.uv_rrc)
        if attest.add_data_len > additional_size:
            msg = (
                f"Ultravisor attestation on {self.path} reports {attest.add_data_len} bytes of additional data, "
                f"more than the {additional_size}-byte buffer"
            )
            raise TeeReportError(msg)
        return UvAttestation(
            measurement=measurement.raw,
            additional_data=additional.raw[: attest.add_data_len] if additional is not None else b"",
            config_uid=bytes(attest.config_uid),
        )
