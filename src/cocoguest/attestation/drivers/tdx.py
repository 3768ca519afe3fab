"""The Intel TDX attester (guest-components.md §6.3, §6.4, §6.5).

* Evidence: a TD quote for the report data (at most 64 bytes, zero-padded) from configfs-tsm (provider
  ``tdx_guest``), or, on kernels without configfs-tsm, from a :class:`TdQuoteGenerator` fed by the legacy
  ``/dev/tdx_guest`` TDREPORT ioctl (built in: ``tdx_quote.TdxAttestQuoteGenerator``, the QGS over vsock, else
  the GetQuote ioctl; the factory wires it); JSON
  ``{"cc_eventlog": <b64 CCEL+AAEL or null>, "quote": "<b64 std>"}``.
* Runtime measurement: RTMR extend through sysfs ``<measurements>/rtmr<N>:sha384`` (kernel >= 6.16), SHA-384;
  PCR -> CC MR mapping 1,7 -> 1; 2-6 -> 2; 8-15 -> 3; else 4; RTMR index = CC MR - 1.
* Init-data: the digest zero-padded to 48 bytes must equal MRCONFIGID (sysfs ``mrconfigid``, else the TDREPORT).

Invariants:
    * SECURITY: a quote whose report-data field is not exactly our (padded) report data is refused.
    * Verified here only against synthetic device trees, the recorded upstream TDREPORT and TD quote vectors, a
      fake QGS and an emulated ``TDX_CMD_GET_REPORT0`` ioctl (the argument packing is checked, the TDREPORT
      comes from the recorded vector).
"""

from __future__ import annotations

import base64
import hmac
from pathlib import Path
from typing import Final, Protocol

from cocoguest.attestation.attester import (
    BindResult,
    HashAlgorithm,
    JsonObject,
    Tee,
    fit_register,
    fit_report_data,
    pad_digest,
)
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH, DEFAULT_CCEL_PATH, read_cc_eventlog
from cocoguest.attestation.configfs_tsm import PROVIDER_TDX, ConfigfsTsm
from cocoguest.attestation.devfs import read_capped, write_attribute
from cocoguest.attestation.drivers.ioctl import IoctlCall, iowr, system_ioctl, with_device
from cocoguest.attestation.drivers.tdx_structs import TDREPORT_SIZE, parse_td_quote, parse_td_report
from cocoguest.errors import InitDataMismatchError, TeeDeviceError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_TDX_GUEST_DEVICE: Final = Path("/dev/tdx_guest")
DEFAULT_MEASUREMENTS_DIR: Final = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
REPORT_DATA_SIZE: Final = 64
REGISTER_SIZE: Final = 48

TDX_CMD_GET_REPORT0: Final = iowr("T", 1, REPORT_DATA_SIZE + TDREPORT_SIZE)
"""``_IOWR('T', 1, struct tdx_report_req { u8 reportdata[64]; u8 tdreport[1024]; })`` (linux/tdx-guest.h)."""


class TdReportSource(Protocol):
    """Where a TDREPORT comes from (the legacy ``/dev/tdx_guest`` ioctl in production)."""

    def td_report(self, report_data: bytes) -> bytes:
        """A 1024-byte TDREPORT binding the 64-byte ``report_data``.

        Raises:
            TeeDeviceError: the device failed.
        """
        ...


class TdQuoteGenerator(Protocol):
    """Turns a TDREPORT into a quote on kernels without configfs-tsm (see ``tdx_quote.TdxAttestQuoteGenerator``)."""

    def quote(self, td_report: bytes) -> bytes:
        """A TD quote for ``td_report``.

        Raises:
            TeeDeviceError: the quote service failed (``QuoteServiceError`` when it answered an error code).
            TeeReportError: the quote service answered malformed data.
        """
        ...


class TdxGuestDevice:
    """``/dev/tdx_guest``: TDREPORTs via ``TDX_CMD_GET_REPORT0`` (the ioctl call is injectable for tests)."""

    def __init__(self, path: Path = DEFAULT_TDX_GUEST_DEVICE, *, ioctl: IoctlCall = system_ioctl) -> None:
        self.path = path
        self._ioctl = ioctl

    def td_report(self, report_data: bytes) -> bytes:
        """See :meth:`TdReportSource.td_report`."""
        # struct tdx_report_req: reportdata[64] in, tdreport[1024] out, in one buffer.
        request = bytearray(fit_report_data(report_data, REPORT_DATA_SIZE, Tee.TDX) + bytes(TDREPORT_SIZE))
        with_device(
            self.path,
            "TDX guest device",
            self._ioctl,
            lambda device: device.call("TDX_CMD_GET_REPORT0", TDX_CMD_GET_REPORT0, request),
        )
        return bytes(request[REPORT_DATA_SIZE:])


def tdx_register_for_pcr(pcr: int) -> int:
    """The TDX CC measurement register of ``pcr`` (upstream ``pcr_to_ccmr``)."""
    if pcr in (1, 7):
        return 1
    if 2 <= pcr <= 6:
        return 2
    if 8 <= pcr <= 15:
        return 3
    return 4


class TdxAttester:
    """Intel TDX (see the module docstring)."""

    def __init__(
        self,
        *,
        tsm: ConfigfsTsm | None = None,
        report_source: TdReportSource | None = None,
        quote_generator: TdQuoteGenerator | None = None,
        measurements_dir: Path = DEFAULT_MEASUREMENTS_DIR,
        ccel_path: Path = DEFAULT_CCEL_PATH,
        aael_path: Path = DEFAULT_AAEL_PATH,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._tsm = tsm if tsm is not None else ConfigfsTsm(limits=limits)
        self._report_source = report_source if report_source is not None else TdxGuestDevice()
        self._quote_generator = quote_generator
        self._measurements_dir = measurements_dir
        self._ccel_path = ccel_path
        self._aael_path = aael_path
        self._limits = limits

    @property
    def tee(self) -> Tee:
        """``tdx``."""
        return Tee.TDX

    @property
    def measurement_hash(self) -> HashAlgorithm:
        """SHA-384 (RTMRs and the CCEL)."""
        return HashAlgorithm.SHA384

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"cc_eventlog": ..., "quote": ...}`` (see the module docstring)."""
        padded = fit_report_data(report_data, REPORT_DATA_SIZE, Tee.TDX)
        quote = self._quote(padded)
        # SECURITY: the device must have bound exactly our report data.
        if not hmac.compare_digest(parse_td_quote(quote).report_data, padded):
            msg = "TD quote does not carry the requested report data"
            raise TeeReportError(msg)
        return {
            "cc_eventlog": read_cc_eventlog(self._ccel_path, self._aael_path, limits=self._limits),
            "quote": base64.b64encode(quote).decode("ascii"),
        }

    def _quote(self, padded: bytes) -> bytes:
        if self._tsm.available():
            return self._tsm.report(padded, expected_provider=PROVIDER_TDX).untrusted_outblob
        if self._quote_generator is not None:
            return self._quote_generator.quote(self._report_source.td_report(padded))
        msg = f"no TDX quote source: {self._tsm.root} is absent and no legacy quote generator is configured"
        raise TeeDeviceError(msg)

    def register_for_pcr(self, pcr: int) -> int:
        """See :func:`tdx_register_for_pcr`."""
        return tdx_register_for_pcr(pcr)

    def _rtmr_path(self, pcr: int) -> Path:
        return self._measurements_dir / f"rtmr{tdx_register_for_pcr(pcr) - 1}:sha384"

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        """Extend the RTMR of ``pcr`` (sysfs write of the 48-byte digest)."""
        write_attribute(self._rtmr_path(pcr), fit_register(event_digest, REGISTER_SIZE), "TDX RTMR")

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """The RTMR of ``pcr``: sysfs if present, else from a TDREPORT."""
        path = self._rtmr_path(pcr)
        if path.exists():
            value = read_capped(path, self._limits.max_tee_register_bytes, "TDX RTMR")
            if len(value) != REGISTER_SIZE:
                msg = f"TDX RTMR {path} holds {len(value)} bytes (expected {REGISTER_SIZE})"
                raise TeeReportError(msg)
            return value
        report = parse_td_report(self._report_source.td_report(b""))
        return report.rtmrs[tdx_register_for_pcr(pcr) - 1]

    def _mrconfigid(self) -> bytes:
        path = self._measurements_dir / "mrconfigid"
        if path.exists():
            value = read_capped(path, self._limits.max_tee_register_bytes, "TDX MRCONFIGID")
            if len(value) != REGISTER_SIZE:
                msg = f"TDX MRCONFIGID {path} holds {len(value)} bytes (expected {REGISTER_SIZE})"
                raise TeeReportError(msg)
            return value
        return parse_td_report(self._report_source.td_report(b"")).mrconfigid

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Check ``digest`` (zero-padded to 48 bytes) against MRCONFIGID."""
        expected = pad_digest(digest, REGISTER_SIZE, "TDX MRCONFIGID")
        actual = self._mrconfigid()
        # SECURITY: the host chose MRCONFIGID at launch; init-data is trusted only if it matches.
        if not hmac.compare_digest(expected, actual):
            msg = f"init-data digest {expected.hex()} does not match TDX MRCONFIGID {actual.hex()}"
            raise InitDataMismatchError(msg)
        return BindResult.BOUND
