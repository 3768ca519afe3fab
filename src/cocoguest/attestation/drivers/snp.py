"""The AMD SEV-SNP attester (guest-components.md §6.3).

* Evidence: an extended report at VMPL 0 for the report data (at most 64 bytes, zero-padded), from configfs-tsm
  (provider ``sev_guest``, ``privlevel`` 0, report in ``outblob``, certificate table in ``auxblob``) or from
  ``/dev/sev-guest`` (``SNP_GET_EXT_REPORT``) behind :class:`SnpReportSource`; JSON
  ``{"attestation_report": <report>, "cert_chain": [{"cert_type": ..., "data": [bytes]}] or null}``.
* Init-data: HOST_DATA (32 bytes) must equal the digest zero-padded to 32 (a SHA-384/512 digest cannot).
* No runtime measurement.

Invariants:
    * SECURITY: a report whose report data differs from ours, or not at VMPL 0, is refused.
    * Verified here only against synthetic device trees; the ``attestation_report`` JSON form is not verified
      byte-for-byte against upstream's ``sev`` crate (see :meth:`SnpReport.to_json`).
"""

from __future__ import annotations

import ctypes
import fcntl
import hmac
import os
from pathlib import Path
from typing import Final, Protocol

from cocoguest.attestation.attester import BindResult, JsonObject, Tee, fit_report_data, pad_digest
from cocoguest.attestation.configfs_tsm import PROVIDER_SNP, ConfigfsTsm
from cocoguest.attestation.drivers.snp_structs import REPORT_SIZE, SnpReport, parse_cert_table, parse_snp_report
from cocoguest.errors import InitDataMismatchError, TeeDeviceError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_SEV_GUEST_DEVICE: Final = Path("/dev/sev-guest")
REPORT_DATA_SIZE: Final = 64
HOST_DATA_SIZE: Final = 32
VMPL: Final = 0


class SnpReportSource(Protocol):
    """Extended reports from the legacy ``/dev/sev-guest`` interface."""

    def extended_report(self, report_data: bytes, vmpl: int) -> tuple[bytes, bytes | None]:
        """(report, certificate table or ``None``) for the 64-byte ``report_data``.

        Raises:
            TeeDeviceError: the device failed.
        """
        ...


class _GuestRequest(ctypes.Structure):
    _fields_ = (
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    )


class _ExtReportRequest(ctypes.Structure):
    _fields_ = (
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    )


SNP_GET_EXT_REPORT: Final = (3 << 30) | (ctypes.sizeof(_GuestRequest) << 16) | (ord("S") << 8) | 0x2
"""``_IOWR('S', 0x2, struct snp_guest_request_ioctl)`` (linux/sev-guest.h)."""
_RESPONSE_SIZE: Final = 4000
_CERTS_BUFFER: Final = 4 * 4096


class SevGuestDevice:
    """``/dev/sev-guest``: ``SNP_GET_EXT_REPORT`` (response: status u32, size u32, 24 reserved, report)."""

    def __init__(self, path: Path = DEFAULT_SEV_GUEST_DEVICE) -> None:
        self.path = path

    def extended_report(self, report_data: bytes, vmpl: int) -> tuple[bytes, bytes | None]:
        """See :meth:`SnpReportSource.extended_report`."""
        certs = ctypes.create_string_buffer(_CERTS_BUFFER)
        response = ctypes.create_string_buffer(_RESPONSE_SIZE)
        request = _ExtReportRequest()
        ctypes.memmove(request.user_data, fit_report_data(report_data, REPORT_DATA_SIZE, Tee.SNP), REPORT_DATA_SIZE)
        request.vmpl = vmpl
        request.certs_address = ctypes.addressof(certs)
        request.certs_len = _CERTS_BUFFER
        guest = _GuestRequest(1, ctypes.addressof(request), ctypes.addressof(response), 0)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            msg = f"cannot open SEV guest device {self.path}: {e.strerror}"
            raise TeeDeviceError(msg) from e
        try:
            fcntl.ioctl(fd, SNP_GET_EXT_REPORT, guest, True)
        except OSError as e:
            msg = f"SNP_GET_EXT_REPORT on {self.path} failed: {e.strerror} (exitinfo2 0x{guest.exitinfo2:x})"
            raise TeeDeviceError(msg) from e
        finally:
            os.close(fd)
        raw = response.raw
        status, size = int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little")
        if status != 0 or size != REPORT_SIZE:
            msg = f"SNP_GET_EXT_REPORT on {self.path}: firmware status 0x{status:x}, report size {size}"
            raise TeeReportError(msg)
        return raw[32 : 32 + REPORT_SIZE], certs.raw


class SnpAttester:
    """AMD SEV-SNP (see the module docstring)."""

    def __init__(
        self,
        *,
        tsm: ConfigfsTsm | None = None,
        report_source: SnpReportSource | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._tsm = tsm if tsm is not None else ConfigfsTsm(limits=limits)
        self._report_source = report_source if report_source is not None else SevGuestDevice()
        self._limits = limits

    @property
    def tee(self) -> Tee:
        """``snp``."""
        return Tee.SNP

    def _extended_report(self, padded: bytes) -> tuple[SnpReport, bytes | None]:
        if self._tsm.available():
            tsm = self._tsm.report(padded, expected_provider=PROVIDER_SNP, privlevel=VMPL, want_auxblob=True)
            raw, table = tsm.untrusted_outblob, tsm.untrusted_auxblob
        else:
            raw, table = self._report_source.extended_report(padded, VMPL)
        report = parse_snp_report(raw)
        # SECURITY: the report must bind our data, at the privilege level we asked for.
        if not hmac.compare_digest(report.report_data, padded):
            msg = "SNP report does not carry the requested report data"
            raise TeeReportError(msg)
        if report.vmpl != VMPL:
            msg = f"SNP report is for VMPL {report.vmpl}, expected {VMPL}"
            raise TeeReportError(msg)
        return report, table

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"attestation_report": ..., "cert_chain": ...}`` (see the module docstring)."""
        report, table = self._extended_report(fit_report_data(report_data, REPORT_DATA_SIZE, Tee.SNP))
        chain: list[object] | None = None
        if table:
            certificates = parse_cert_table(table, self._limits.max_snp_certificates)
            chain = [{"cert_type": c.cert_type, "data": list(c.data)} for c in certificates] or None
        return {"attestation_report": report.to_json(), "cert_chain": chain}

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Check ``digest`` (zero-padded to 32 bytes) against HOST_DATA of a fresh report."""
        expected = pad_digest(digest, HOST_DATA_SIZE, "SNP HOST_DATA")
        report, _ = self._extended_report(bytes(REPORT_DATA_SIZE))
        # SECURITY: HOST_DATA is fixed by the host at launch and covered by the report signature.
        if not hmac.compare_digest(report.host_data, expected):
            msg = f"init-data digest {expected.hex()} does not match SNP HOST_DATA {report.host_data.hex()}"
            raise InitDataMismatchError(msg)
        return BindResult.BOUND
