"""The Azure HCL report: what the paravisor puts in the vTPM NV index ``0x01400001`` (no IO here).

Layout (little-endian; learned from kinvolk/azure-cvm-tooling ``az-cvm-vtpm/src/hcl``, checked against its
recorded SNP and TDX reports in ``tests/vectors/azure/``)::

    0     header: u32 signature "HCLA", u32 version, u32 report_size, u32 request_type, u32 status, 3 x u32
    32    hardware report, a 1184-byte slot: an SNP attestation report (1184 bytes), or a TD report (1024
          bytes, then zeros)
    1216  IGVM request data: u32 data_size, u32 version, u32 report_type (2 SNP, 4 TDX),
          u32 report_data_hash_type (1 SHA-256), u32 variable_data_size
    1236  variable data: the runtime-claims JSON (``keys`` with the vTPM AK ``HCLAkPub``, ``vm-configuration``,
          and on current paravisors ``user-data``: the hex of the report data the guest wrote to ``0x01400002``)

The paravisor sets the hardware report's report data to ``SHA-256(variable data)`` followed by zeros (SNP
``REPORT_DATA`` at offset 0x50 of its report, TDX ``REPORTMACSTRUCT.REPORTDATA`` at offset 128).

Invariants:
    * :meth:`HclReport.parse` accepts only a report whose magic, type and sizes are consistent, so every
      :class:`HclReport` names its hardware report type and slices inside its bytes.
    * SECURITY: :func:`check_report_binding` refuses a report whose hardware report data is not the hash of its
      runtime claims (a torn read of an NV index being rewritten) and one whose ``user-data`` is not the report
      data we asked for (a stale report): such a report is never sent as evidence.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import struct
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import HclReportBindingError, TeeReportError
from cocoguest.jsonutil import load_object

_logger = logging.getLogger(__name__)

HCL_MAGIC: Final = b"HCLA"
HEADER_SIZE: Final = 32
HW_REPORT_SLOT_SIZE: Final = 1184
"""max(SNP report 1184, TD report 1024): the slot the paravisor reserves for the hardware report."""
SNP_REPORT_SIZE: Final = 1184
TD_REPORT_SIZE: Final = 1024
IGVM_REQUEST_OFFSET: Final = HEADER_SIZE + HW_REPORT_SLOT_SIZE
IGVM_REQUEST_SIZE: Final = 20
VAR_DATA_OFFSET: Final = IGVM_REQUEST_OFFSET + IGVM_REQUEST_SIZE
HASH_TYPE_SHA256: Final = 1
USER_DATA_CLAIM: Final = "user-data"
USER_DATA_SIZE: Final = 64
"""The paravisor's report-data buffer: the report data zero-padded to 64 bytes appears in ``user-data``."""
_SNP_REPORT_DATA_OFFSET: Final = 0x50
_TD_REPORT_DATA_OFFSET: Final = 128


class HclReportType(enum.IntEnum):
    """The hardware report inside an HCL report (IGVM ``report_type``)."""

    SNP = 2
    TDX = 4


@dataclass(frozen=True, slots=True)
class HclReport:
    """A parsed HCL report (see the module docstring); ``raw`` is exactly the NV index content."""

    raw: bytes
    report_type: HclReportType
    hash_type: int
    var_data: bytes

    @classmethod
    def parse(cls, untrusted: bytes) -> HclReport:
        """Parse the bytes read from the vTPM's HCL report NV index.

        Raises:
            TeeReportError: too short, wrong magic, unknown report type, or variable data past the end.
        """
        if len(untrusted) < VAR_DATA_OFFSET:
            msg = f"Azure HCL report of {len(untrusted)} bytes is shorter than its {VAR_DATA_OFFSET}-byte header"
            raise TeeReportError(msg)
        if untrusted[:4] != HCL_MAGIC:
            msg = f"Azure HCL report starts with {untrusted[:4].hex()}, not the HCLA signature"
            raise TeeReportError(msg)
        _, _, report_type, hash_type, var_size = struct.unpack_from("<5I", untrusted, IGVM_REQUEST_OFFSET)
        try:
            kind = HclReportType(report_type)
        except ValueError as e:
            msg = f"Azure HCL report has hardware report type {report_type} (expected 2 SNP or 4 TDX)"
            raise TeeReportError(msg) from e
        if VAR_DATA_OFFSET + var_size > len(untrusted):
            msg = f"Azure HCL report declares {var_size} bytes of runtime claims past its {len(untrusted)} bytes"
            raise TeeReportError(msg)
        return cls(untrusted, kind, hash_type, untrusted[VAR_DATA_OFFSET : VAR_DATA_OFFSET + var_size])

    @property
    def hw_report(self) -> bytes:
        """The SNP attestation report (1184 bytes) or the TD report (1024 bytes)."""
        size = SNP_REPORT_SIZE if self.report_type is HclReportType.SNP else TD_REPORT_SIZE
        return self.raw[HEADER_SIZE : HEADER_SIZE + size]

    @property
    def hw_report_data(self) -> bytes:
        """The 64-byte report data of the hardware report."""
        at = _SNP_REPORT_DATA_OFFSET if self.report_type is HclReportType.SNP else _TD_REPORT_DATA_OFFSET
        return self.hw_report[at : at + 64]

    def runtime_claims(self) -> dict[str, object]:
        """The variable data as a JSON object.

        Raises:
            TeeReportError: not a UTF-8 JSON object.
        """
        return load_object(self.var_data, "Azure HCL report runtime claims", TeeReportError)


def check_report_binding(report: HclReport, report_data: bytes) -> None:
    """Refuse ``report`` unless it is internally consistent and was made for ``report_data``.

    A report without a ``user-data`` claim (older paravisors) cannot show which report data it was made for:
    it is accepted with a WARNING, and the TPM quote's nonce is then the only binding to ``report_data``.

    Raises:
        TeeReportError: unsupported hash type, runtime claims that are not a JSON object, a malformed
            ``user-data``.
        HclReportBindingError: the hardware report data is not SHA-256 of the runtime claims (torn read), or
            ``user-data`` is other report data (a stale report).
    """
    if report.hash_type != HASH_TYPE_SHA256:
        msg = f"Azure HCL report uses report-data hash type {report.hash_type} (only 1, SHA-256, is known)"
        raise TeeReportError(msg)
    expected = hashlib.sha256(report.var_data).digest().ljust(64, b"\0")
    # SECURITY: the hardware report must commit to exactly these runtime claims, or the two halves were read
    # from different generations of the NV index.
    if not hmac.compare_digest(report.hw_report_data, expected):
        msg = "Azure HCL report: the hardware report data is not SHA-256 of its runtime claims (torn or stale read)"
        raise HclReportBindingError(msg)
    claim = report.runtime_claims().get(USER_DATA_CLAIM)
    if claim is None:
        _logger.warning("Azure HCL report has no user-data claim: only the TPM quote binds the report data")
        return
    try:
        user_data = bytes.fromhex(claim) if isinstance(claim, str) else None
    except ValueError:
        user_data = None
    if user_data is None:
        msg = f"Azure HCL report: {USER_DATA_CLAIM} is not a hex string"
        raise TeeReportError(msg)
    # SECURITY: a report made for other report data (the previous request's) is stale: refuse it.
    padded = report_data.ljust(USER_DATA_SIZE, b"\0")
    if not (hmac.compare_digest(user_data, padded) or hmac.compare_digest(user_data, report_data)):
        msg = f"Azure HCL report is stale: its {USER_DATA_CLAIM} is not the report data just requested"
        raise HclReportBindingError(msg)
