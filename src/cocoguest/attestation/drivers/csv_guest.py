"""``/dev/csv-guest``: the built-in :class:`~cocoguest.attestation.drivers.csv.CsvGuestBackend`.

Interface (Hygon guest kernel ``drivers/virt/coco/csv-guest/csv-guest.h``; used the same way by ``csv-rs``):

* ``CSV_CMD_GET_REPORT = _IOWR('D', 1, struct csv_report_req {u8 *report_data; int len;})`` (16 bytes on
  x86_64): the kernel copies the request from the start of the buffer, asks the PSP, and writes the report
  (:mod:`~cocoguest.attestation.drivers.csv_structs`) back over the buffer.
* ``CSV_CMD_RTMR = _IOWR('D', 2, struct csv_rtmr_req {u64 buf; u64 len; u16 subcmd_id; u16 rsvd;
  u32 fw_error_code;} __packed)`` (24 bytes) with subcommands STATUS (1; ``{u16 version; u8 state}``),
  READ (3; ``{u32 bitmap; u8 data[32 * n]}``, the requested registers in ascending order) and EXTEND
  (4; ``{u8 index; u8 rsvd; u16 data_len = 32; u8 data[32]}``). Only CSV3 guests have it; elsewhere the
  kernel answers ``ENOTTY`` (or ``ENODEV``).
* As upstream (``csv-rs`` ``get_report_ext`` with flags 1): the extended report is requested when RTMR
  STATUS succeeds, else the legacy one. A fresh random ``mnonce`` per report.

Invariants:
    * SECURITY: a report is returned only after :func:`~cocoguest.attestation.drivers.csv_structs.
      parse_csv_report` checked our mnonce and the signer MAC.
    * Only RTMR 3 and 4 can be extended after boot (the kernel refuses 0-2); asking for another is an
      :class:`AttestationRequestError` before any ioctl.
    * A non-zero ``fw_error_code`` is a :class:`TeeFirmwareError` carrying the code; an ioctl failure is a
      :class:`TeeDeviceError` naming the device, the command and the errno.
    * Verified here only against an emulated kernel (``tests/fixtures/csv_guest_kernel.py``) and one
      recorded legacy report from ``csv-rs``; never on Hygon hardware.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cocoguest.attestation.drivers.csv import REGISTER_SIZE, CsvReport
from cocoguest.attestation.drivers.csv_structs import (
    MNONCE_SIZE,
    REPORT_BUFFER_SIZE,
    attestation_report_json,
    csv_certificate_json,
    parse_csv_report,
    report_request,
)
from cocoguest.attestation.drivers.ioctl import IoctlCall, device_ioctl, iowr, system_ioctl
from cocoguest.errors import AttestationRequestError, TeeFirmwareError, TeeReportError

DEFAULT_CSV_GUEST_DEVICE: Final = Path("/dev/csv-guest")
RTMR_COUNT: Final = 5
EXTENDABLE_RTMRS: Final = (3, 4)
"""Registers the guest kernel lets user space extend (0-2 are boot-time registers)."""


class _ReportRequest(ctypes.Structure):
    _fields_ = (("report_data", ctypes.c_uint64), ("len", ctypes.c_int32))


class _RtmrRequest(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("buf", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("subcmd_id", ctypes.c_uint16),
        ("rsvd", ctypes.c_uint16),
        ("fw_error_code", ctypes.c_uint32),
    )


class _RtmrStatus(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("version", ctypes.c_uint16), ("state", ctypes.c_uint8))


class _RtmrRead(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("bitmap", ctypes.c_uint32), ("data", ctypes.c_uint8 * REGISTER_SIZE))


class _RtmrExtend(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("index", ctypes.c_uint8),
        ("rsvd", ctypes.c_uint8),
        ("data_len", ctypes.c_uint16),
        ("data", ctypes.c_uint8 * REGISTER_SIZE),
    )


CSV_CMD_GET_REPORT: Final = iowr("D", 1, ctypes.sizeof(_ReportRequest))
CSV_CMD_RTMR: Final = iowr("D", 2, ctypes.sizeof(_RtmrRequest))
RTMR_STATUS: Final = 1
RTMR_READ: Final = 3
RTMR_EXTEND: Final = 4
_RTMR_UNSUPPORTED: Final = (errno.ENOTTY, errno.ENODEV)


class CsvGuestDevice:
    """``/dev/csv-guest`` (see the module docstring)."""

    def __init__(
        self,
        path: Path = DEFAULT_CSV_GUEST_DEVICE,
        *,
        ioctl: IoctlCall = system_ioctl,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.path = path
        self._ioctl = ioctl
        self._random_bytes = random_bytes

    def _rtmr(self, subcmd: int, name: str, payload: ctypes.Structure, *, probe: bool = False) -> bool:
        request = _RtmrRequest(ctypes.addressof(payload), ctypes.sizeof(payload), subcmd, 0, 0)
        result = device_ioctl(
            self.path,
            CSV_CMD_RTMR,
            f"CSV_CMD_RTMR {name}",
            request,
            ioctl=self._ioctl,
            writable=False,
            expected_errnos=_RTMR_UNSUPPORTED if probe else (),
        )
        if result < 0:
            return False
        if request.fw_error_code != 0:
            if probe:
                return False
            msg = f"CSV_CMD_RTMR {name} on {self.path}: firmware error 0x{request.fw_error_code:x}"
            raise TeeFirmwareError(msg, code=request.fw_error_code)
        return True

    def extended_report_supported(self) -> bool:
        """Whether RTMR STATUS succeeds (CSV3 with RTMR firmware; upstream's test for the extended report)."""
        return self._rtmr(RTMR_STATUS, "STATUS", _RtmrStatus(), probe=True)

    def attestation_report(self, report_data: bytes) -> CsvReport:
        """See :meth:`CsvGuestBackend.attestation_report`.

        Raises:
            TeeDeviceError: the device or the ioctl failed.
            TeeReportError: the report is not for this request, or its signer MAC does not verify.
        """
        extended = self.extended_report_supported()
        mnonce = self._random_bytes(MNONCE_SIZE)
        buffer = ctypes.create_string_buffer(REPORT_BUFFER_SIZE)
        request = report_request(report_data, mnonce, extended=extended)
        ctypes.memmove(buffer, request, len(request))
        device_ioctl(
            self.path,
            CSV_CMD_GET_REPORT,
            "CSV_CMD_GET_REPORT",
            _ReportRequest(ctypes.addressof(buffer), REPORT_BUFFER_SIZE),
            ioctl=self._ioctl,
            writable=False,
        )
        try:
            fields = parse_csv_report(buffer.raw, mnonce, extended=extended)
        except TeeReportError as e:
            msg = f"CSV_CMD_GET_REPORT on {self.path}: {e}"
            raise TeeReportError(msg) from e
        return CsvReport(
            report_data=fields.report_data,
            attestation_report=attestation_report_json(fields),
            pek=csv_certificate_json(fields.pek_cert),
            serial_number=fields.serial_number,
        )

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        """See :meth:`CsvGuestBackend.extend_rtmr`.

        Raises:
            AttestationRequestError: ``index`` is not 3 or 4, or ``digest`` is not 32 bytes.
            TeeDeviceError: the ioctl failed; TeeFirmwareError: the firmware refused.
        """
        if index not in EXTENDABLE_RTMRS or len(digest) != REGISTER_SIZE:
            msg = f"CSV RTMR {index} cannot be extended with {len(digest)} bytes (only RTMR 3, 4; 32-byte SM3)"
            raise AttestationRequestError(msg)
        payload = _RtmrExtend(index, 0, REGISTER_SIZE)
        ctypes.memmove(payload.data, digest, REGISTER_SIZE)
        self._rtmr(RTMR_EXTEND, "EXTEND", payload)

    def read_rtmr(self, index: int) -> bytes:
        """See :meth:`CsvGuestBackend.read_rtmr`.

        Raises:
            AttestationRequestError: ``index`` is not 0-4.
            TeeDeviceError: the ioctl failed; TeeFirmwareError: the firmware refused.
            TeeReportError: the kernel answered for other registers than asked.
        """
        if not 0 <= index < RTMR_COUNT:
            msg = f"CSV has no RTMR {index} (0-{RTMR_COUNT - 1})"
            raise AttestationRequestError(msg)
        payload = _RtmrRead(1 << index)
        self._rtmr(RTMR_READ, "READ", payload)
        if payload.bitmap != 1 << index:
            msg = f"CSV_CMD_RTMR READ on {self.path} answered bitmap 0x{payload.bitmap:x} for RTMR {index}"
            raise TeeReportError(msg)
        return bytes(payload.data)
