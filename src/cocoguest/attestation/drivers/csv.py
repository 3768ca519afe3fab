"""The Hygon CSV attester (guest-components.md §6.3, §6.5; upstream ``attester/src/csv``).

* Evidence: an attestation report for the report data (at most 64 bytes, zero-padded) from the
  :class:`CsvGuestBackend` (built in: ``/dev/csv-guest``, :mod:`~cocoguest.attestation.drivers.csv_guest`;
  the extended report on CSV3 guests with RTMRs, else the legacy one); JSON ``{"attestation_report":
  {"magic": [16], "flags": n, "data": [4096]}, "cert_chain": {"pek": <csv-rs Certificate>}, "serial_number":
  [64 bytes], "cc_eventlog": <b64 CCEL+AAEL or null>}``, the serde form of upstream's ``csv-rs`` types. The
  optional HSK/CEK download from ``cert.hygon.cn`` (upstream env ``CSV_INCLUDE_CERT_CHAIN_IN_ATTESTATION_REPORT``)
  is not done: the attester makes no network calls; the verifier fetches them.
* Runtime measurement: RTMRs extended with SM3 through the backend; PCR -> register 0 -> 0, 1/7 -> 1, 2-6 -> 2,
  8-15 -> 3, else 4 (only 3 and 4 can be extended after boot).
* Init-data binding: unsupported (as upstream).

Invariants:
    * SECURITY: a report whose report data differs from ours is refused (the built-in backend has already
      checked the report's mnonce and signer MAC).
    * Verified here only against an emulated ``/dev/csv-guest`` kernel and firmware, and one recorded legacy
      report (``csv-rs`` test data); never on Hygon hardware.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cocoguest.attestation.attester import (
    BindResult,
    HashAlgorithm,
    JsonObject,
    Tee,
    fit_register,
    fit_report_data,
)
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH, DEFAULT_CCEL_PATH, read_cc_eventlog
from cocoguest.errors import TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

REPORT_DATA_SIZE: Final = 64
REGISTER_SIZE: Final = 32


@dataclass(frozen=True, slots=True)
class CsvReport:
    """What the CSV guest device returns for one report request."""

    report_data: bytes
    """The report-data field as the device echoed it (checked against ours)."""
    attestation_report: JsonObject
    pek: JsonObject
    serial_number: bytes


class CsvGuestBackend(Protocol):
    """The ``/dev/csv-guest`` interface."""

    def attestation_report(self, report_data: bytes) -> CsvReport:
        """An extended report for the 64-byte ``report_data``.

        Raises:
            TeeDeviceError: the device failed.
        """
        ...

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        """Extend RTMR ``index`` with the 32-byte SM3 ``digest``.

        Raises:
            TeeDeviceError: the device failed.
        """
        ...

    def read_rtmr(self, index: int) -> bytes:
        """RTMR ``index``.

        Raises:
            TeeDeviceError: the device failed.
        """
        ...


def csv_register_for_pcr(pcr: int) -> int:
    """The CSV measurement register of ``pcr`` (guest-components.md §6.3)."""
    if pcr == 0:
        return 0
    if pcr in (1, 7):
        return 1
    if 2 <= pcr <= 6:
        return 2
    if 8 <= pcr <= 15:
        return 3
    return 4


class CsvAttester:
    """Hygon CSV (see the module docstring)."""

    def __init__(
        self,
        backend: CsvGuestBackend,
        *,
        ccel_path: Path = DEFAULT_CCEL_PATH,
        aael_path: Path = DEFAULT_AAEL_PATH,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._backend = backend
        self._ccel_path = ccel_path
        self._aael_path = aael_path
        self._limits = limits

    @property
    def tee(self) -> Tee:
        """``csv``."""
        return Tee.CSV

    @property
    def measurement_hash(self) -> HashAlgorithm:
        """SM3."""
        return HashAlgorithm.SM3

    def evidence(self, report_data: bytes) -> JsonObject:
        """See the module docstring."""
        padded = fit_report_data(report_data, REPORT_DATA_SIZE, Tee.CSV)
        report = self._backend.attestation_report(padded)
        # SECURITY: the device must have bound exactly our report data.
        if not hmac.compare_digest(report.report_data, padded):
            msg = "CSV report does not carry the requested report data"
            raise TeeReportError(msg)
        return {
            "attestation_report": report.attestation_report,
            "cert_chain": {"pek": report.pek},
            "serial_number": list(report.serial_number),
            "cc_eventlog": read_cc_eventlog(self._ccel_path, self._aael_path, limits=self._limits),
        }

    def register_for_pcr(self, pcr: int) -> int:
        """See :func:`csv_register_for_pcr`."""
        return csv_register_for_pcr(pcr)

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        """Extend the RTMR of ``pcr`` with the SM3 digest."""
        self._backend.extend_rtmr(csv_register_for_pcr(pcr), fit_register(event_digest, REGISTER_SIZE))

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """The RTMR of ``pcr``."""
        return self._backend.read_rtmr(csv_register_for_pcr(pcr))

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED` (as upstream)."""
        return BindResult.UNSUPPORTED
