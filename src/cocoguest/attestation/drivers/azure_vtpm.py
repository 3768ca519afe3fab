"""The Azure confidential-VM attesters ``az-snp-vtpm`` and ``az-tdx-vtpm`` (guest-components.md §6.3).

On Azure CVMs a paravisor hides the TEE; the guest sees a vTPM whose NV index holds an HCL report (the SNP report
or TD report of the paravisor, binding a runtime-claims JSON that carries the report data; layout in
``azure_hcl.py``). :class:`AzureVtpm` is the interface to it and to the Azure IMDS (VCEK for SNP, TD quote for
TDX); the built-in implementation is ``azure_vtpm_device.Tpm2ToolsAzureVtpm`` (tpm2-tools + IMDS over HTTP).

Evidence (version 2; the binary fields base64url WITH padding, as upstream's serde_with ``Base64<UrlSafe>``, whose
default format is ``Padded``; its own test expects ``"3q2-7w=="``):
    * az-snp-vtpm: ``{"version":2,"tpm_quote":{"signature":hex,"message":hex,"pcrs":[hex x 24]},
      "hcl_report":b64url,"vcek":b64url(DER)}``
    * az-tdx-vtpm: ``{"version":2,"tpm_quote":{...},"hcl_report":b64url,"td_quote":b64url}``
The quote's qualifying data is the report data itself (at most 64 bytes, never truncated); the signature is the
bare RSA signature.
Runtime measurement: SHA-256 PCR extend (identity mapping); az-tdx-vtpm cannot read registers back (issue #1201).
Init-data: extend PCR 8 with the 32-byte digest.

Invariant: SECURITY: the HCL report is checked to bind the report data (``check_report_binding``) and the quote to
carry it as nonce before any evidence is returned, whatever :class:`AzureVtpm` implementation is used.

Verified only against swtpm with synthetic HCL reports and a fake IMDS (see ``azure_vtpm_device.py``).
"""

from __future__ import annotations

import base64
from typing import Final, Protocol

from cocoguest.attestation.attester import BindResult, HashAlgorithm, JsonObject, Tee, fit_register
from cocoguest.attestation.drivers.azure_hcl import HclReport, check_report_binding
from cocoguest.attestation.drivers.tpm import require_pcr_digest
from cocoguest.attestation.drivers.tpm_quote import INIT_DATA_PCR, PCR_SIZE, TpmDevice, TpmQuote, check_quote_nonce
from cocoguest.errors import AttestationRequestError

MAX_REPORT_DATA: Final = 64
"""TPM2B_DATA qualifying data and the paravisor's report-data buffer."""


class AzureVtpm(TpmDevice, Protocol):
    """The Azure vTPM plus the IMDS calls the attesters need."""

    def hcl_report(self, report_data: bytes) -> bytes:
        """The HCL report after writing ``report_data`` into the vTPM's report request NV index.

        Raises:
            TeeDeviceError: the vTPM failed.
        """
        ...

    def vcek(self) -> bytes:
        """The VCEK certificate (DER) from IMDS (SNP only).

        Raises:
            TeeDeviceError: IMDS failed.
        """
        ...

    def td_quote(self, hcl_report: bytes) -> bytes:
        """A TD quote for the TD report inside ``hcl_report``, from IMDS (TDX only).

        Raises:
            TeeDeviceError: IMDS failed.
        """
        ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _quote_json(quote: TpmQuote) -> JsonObject:
    return {"signature": quote.signature.hex(), "message": quote.message.hex(), "pcrs": [p.hex() for p in quote.pcrs]}


class _AzureVtpmAttester:
    """Shared behaviour of the two Azure attesters."""

    _tee: Tee

    def __init__(self, vtpm: AzureVtpm) -> None:
        self._vtpm = vtpm

    @property
    def tee(self) -> Tee:
        """``az-snp-vtpm`` or ``az-tdx-vtpm``."""
        return self._tee

    @property
    def measurement_hash(self) -> HashAlgorithm:
        """SHA-256."""
        return HashAlgorithm.SHA256

    def _quote_and_report(self, report_data: bytes) -> tuple[TpmQuote, bytes]:
        if len(report_data) > MAX_REPORT_DATA:
            msg = f"{self._tee}: report data of {len(report_data)} bytes is over {MAX_REPORT_DATA} (not truncated)"
            raise AttestationRequestError(msg)
        hcl_report = self._vtpm.hcl_report(report_data)
        # SECURITY: a stale or torn HCL report is refused here, whichever AzureVtpm produced it.
        check_report_binding(HclReport.parse(hcl_report), report_data)
        quote = self._vtpm.quote(report_data)
        check_quote_nonce(quote, report_data)
        return quote, hcl_report

    def register_for_pcr(self, pcr: int) -> int:
        """Identity."""
        return pcr

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        """Extend SHA-256 PCR ``pcr``."""
        self._vtpm.extend_pcr(pcr, fit_register(event_digest, PCR_SIZE))

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """SHA-256 PCR ``pcr``."""
        return self._vtpm.read_pcr(pcr)

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Extend PCR 8 with the 32-byte ``digest``."""
        self._vtpm.extend_pcr(INIT_DATA_PCR, require_pcr_digest(digest))
        return BindResult.BOUND


class AzSnpVtpmAttester(_AzureVtpmAttester):
    """Azure SEV-SNP CVM."""

    _tee = Tee.AZ_SNP_VTPM

    def evidence(self, report_data: bytes) -> JsonObject:
        """See the module docstring."""
        quote, hcl_report = self._quote_and_report(report_data)
        return {
            "version": 2,
            "tpm_quote": _quote_json(quote),
            "hcl_report": _b64url(hcl_report),
            "vcek": _b64url(self._vtpm.vcek()),
        }


class AzTdxVtpmAttester(_AzureVtpmAttester):
    """Azure TDX CVM."""

    _tee = Tee.AZ_TDX_VTPM

    def evidence(self, report_data: bytes) -> JsonObject:
        """See the module docstring."""
        quote, hcl_report = self._quote_and_report(report_data)
        return {
            "version": 2,
            "tpm_quote": _quote_json(quote),
            "hcl_report": _b64url(hcl_report),
            "td_quote": _b64url(self._vtpm.td_quote(hcl_report)),
        }

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """``None``: PCRs of the Azure TDX vTPM cannot be read back (upstream issue #1201)."""
        return None
