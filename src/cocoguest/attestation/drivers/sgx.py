"""The Intel SGX (DCAP) attester for Gramine and Occlum (guest-components.md §6.3).

* Gramine: ``<attestation_dir>/attestation_type`` reads ``dcap``; write the 64-byte report data to
  ``user_report_data``, then read ``quote``.
* Occlum (``OCCLUM`` set): quotes come from Occlum's ``/dev/sgx`` ioctls, behind :class:`DcapQuoteLibrary`
  (built in: ``occlum_dcap.OcclumDcapDevice``, which the factory wires); an ``SgxAttester`` built for Occlum
  without a library is an :class:`UnsupportedError`.
* Evidence ``{"quote": "<b64 std>"}``; no runtime measurement; init-data unsupported.

Invariants:
    * SECURITY: a quote whose ISV report-data field is not our padded report data is refused.
    * Verified only against synthetic ``/dev/attestation`` trees and an emulated Occlum ``/dev/sgx`` ioctl.
"""

from __future__ import annotations

import base64
import hmac
from pathlib import Path
from typing import Final, Protocol

from cocoguest.attestation.attester import BindResult, JsonObject, Tee, fit_report_data
from cocoguest.attestation.devfs import read_capped, write_attribute
from cocoguest.errors import TeeReportError, UnsupportedError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_ATTESTATION_DIR: Final = Path("/dev/attestation")
REPORT_DATA_SIZE: Final = 64
_QUOTE_HEADER: Final = 48
_REPORT_DATA_IN_BODY: Final = 320
"""sgx_report_body_t: report_data is its last 64 of 384 bytes."""


class DcapQuoteLibrary(Protocol):
    """Occlum's DCAP quote generation."""

    def quote(self, report_data: bytes) -> bytes:
        """An SGX DCAP quote binding the 64-byte ``report_data``.

        Raises:
            TeeDeviceError: the library failed.
        """
        ...


def quote_report_data(untrusted_quote: bytes) -> bytes:
    """The report data of an SGX DCAP quote (v3/v4 header, then the enclave report body).

    Raises:
        TeeReportError: the quote is too short.
    """
    end = _QUOTE_HEADER + _REPORT_DATA_IN_BODY + REPORT_DATA_SIZE
    if len(untrusted_quote) < end:
        msg = f"SGX quote of {len(untrusted_quote)} bytes is too short"
        raise TeeReportError(msg)
    return untrusted_quote[end - REPORT_DATA_SIZE : end]


def gramine_dcap_available(attestation_dir: Path) -> bool:
    """Whether Gramine offers DCAP attestation (``attestation_type`` reads ``dcap``)."""
    try:
        return (attestation_dir / "attestation_type").read_bytes().strip() == b"dcap"
    except OSError:
        return False


class SgxAttester:
    """SGX DCAP under Gramine or Occlum (see the module docstring)."""

    def __init__(
        self,
        *,
        attestation_dir: Path = DEFAULT_ATTESTATION_DIR,
        occlum: bool = False,
        occlum_library: DcapQuoteLibrary | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._dir = attestation_dir
        self._occlum = occlum
        self._occlum_library = occlum_library
        self._limits = limits

    @property
    def tee(self) -> Tee:
        """``sgx``."""
        return Tee.SGX

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"quote": ...}``."""
        padded = fit_report_data(report_data, REPORT_DATA_SIZE, Tee.SGX)
        if self._occlum:
            if self._occlum_library is None:
                msg = "sgx: running under Occlum, but no Occlum DCAP quote library is available"
                raise UnsupportedError(msg)
            quote = self._occlum_library.quote(padded)
        else:
            write_attribute(self._dir / "user_report_data", padded, "Gramine user_report_data")
            quote = read_capped(self._dir / "quote", self._limits.max_tee_report_bytes, "Gramine quote")
        # SECURITY: the quote must bind exactly our report data.
        if not hmac.compare_digest(quote_report_data(quote), padded):
            msg = "SGX quote does not carry the requested report data"
            raise TeeReportError(msg)
        return {"quote": base64.b64encode(quote).decode("ascii")}

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED` (as upstream)."""
        return BindResult.UNSUPPORTED
