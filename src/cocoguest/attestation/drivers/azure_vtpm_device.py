"""The built-in :class:`~cocoguest.attestation.drivers.azure_vtpm.AzureVtpm`: the Azure vTPM over tpm2-tools
plus the Azure IMDS, and the Azure CVM detection probe.

Upstream (kinvolk/azure-cvm-tooling ``az-cvm-vtpm/src/vtpm``) does, and so does this module:

1. Report request: write the report data to NV index ``0x01400002`` (defined by the guest, owner read/write,
   exactly the data's size; an index of another size is removed and defined again).
2. HCL report: read NV index ``0x01400001``, which the paravisor rewrites in answer.
3. TPM quote: with the AK the platform persisted at ``0x81000003`` over the 24 SHA-256 PCRs, the report data as
   qualifying data, the bare RSA signature.

Unlike upstream, which sleeps a fixed 3 s between (1) and (2), (2) re-reads the index until
:func:`~cocoguest.attestation.drivers.azure_hcl.check_report_binding` accepts it (within
``Limits.azure_hcl_report_timeout_s``), so a stale or torn report is never returned.

Detection (:func:`detect_azure_cvm`, upstream's ``is_snp_cvm``/``is_tdx_cvm``): an HCL report is present in
``0x01400001`` and names its hardware report type; anything else (no TPM, no such index, not an HCL report)
is "not an Azure CVM".

Verified only against swtpm (a real TPM 2.0 simulator) with NV indices defined by the test, synthetic HCL reports
written by the test in the paravisor's place, and a fake IMDS on loopback (``tests/unit/test_attest_azure_swtpm.py``):
no real paravisor, Azure vTPM or IMDS has been exercised.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from cocoguest.attestation.attester import Tee
from cocoguest.attestation.drivers.azure_hcl import HclReport, HclReportType, check_report_binding
from cocoguest.attestation.drivers.azure_imds import ImdsClient
from cocoguest.attestation.drivers.tpm2_tools import Tpm2ToolsTpm
from cocoguest.attestation.drivers.tpm_quote import TpmQuote
from cocoguest.errors import CocoError, HclReportBindingError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

HCL_REPORT_NV_INDEX: Final = 0x01400001
REPORT_REQUEST_NV_INDEX: Final = 0x01400002
AZURE_AK_HANDLE: Final = 0x81000003
_HCL_REPORT: Final = "Azure HCL report (vTPM NV index 0x01400001)"


class Tpm2ToolsAzureVtpm:
    """The Azure vTPM reached at ``tcti`` and the IMDS ``imds`` (see the module docstring)."""

    def __init__(self, tcti: str, imds: ImdsClient, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.tpm = Tpm2ToolsTpm(tcti, AZURE_AK_HANDLE, raw_signature=True, limits=limits)
        self.imds = imds
        self._limits = limits

    def request_report(self, report_data: bytes) -> None:
        """Step (1): write ``report_data`` to the report-request NV index.

        Raises:
            TeeDeviceError: the vTPM refused.
        """
        size = self.tpm.nv_size(REPORT_REQUEST_NV_INDEX)
        if size != len(report_data):
            if size is not None:
                self.tpm.nv_undefine(REPORT_REQUEST_NV_INDEX)
            self.tpm.nv_define(REPORT_REQUEST_NV_INDEX, len(report_data))
        self.tpm.nv_write(REPORT_REQUEST_NV_INDEX, report_data)

    def read_report(self) -> HclReport:
        """The HCL report now in its NV index, parsed.

        Raises:
            TeeDeviceError: the vTPM refused.
            TeeReportError: not an HCL report.
        """
        return HclReport.parse(self.tpm.nv_read(HCL_REPORT_NV_INDEX, _HCL_REPORT))

    def hcl_report(self, report_data: bytes) -> bytes:
        """Steps (1) and (2): the HCL report made for ``report_data``.

        Raises:
            TeeDeviceError: the vTPM refused.
            TeeReportError: not an HCL report.
            HclReportBindingError: still stale or torn after ``Limits.azure_hcl_report_timeout_s``.
        """
        self.request_report(report_data)
        deadline = time.monotonic() + self._limits.azure_hcl_report_timeout_s
        while True:
            report = self.read_report()
            try:
                check_report_binding(report, report_data)
            except HclReportBindingError as e:
                if time.monotonic() >= deadline:
                    msg = f"{e} (still after {self._limits.azure_hcl_report_timeout_s} s)"
                    raise HclReportBindingError(msg) from e
                time.sleep(self._limits.azure_hcl_report_poll_s)
                continue
            return report.raw

    def quote(self, nonce: bytes) -> TpmQuote:
        """Step (3): a quote with the Azure AK over the 24 SHA-256 PCRs."""
        return self.tpm.quote(nonce)

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Extend SHA-256 PCR ``index``."""
        self.tpm.extend_pcr(index, digest)

    def read_pcr(self, index: int) -> bytes:
        """SHA-256 PCR ``index``."""
        return self.tpm.read_pcr(index)

    def vcek(self) -> bytes:
        """The VCEK (DER) from the IMDS."""
        return self.imds.vcek()

    def td_quote(self, hcl_report: bytes) -> bytes:
        """The IMDS's TD quote for the TD report inside ``hcl_report``.

        Raises:
            TeeReportError: ``hcl_report`` does not hold a TD report.
            ImdsError: the IMDS call failed.
        """
        report = HclReport.parse(hcl_report)
        if report.report_type is not HclReportType.TDX:
            msg = f"{_HCL_REPORT} holds an SNP report, not the TD report a TD quote needs"
            raise TeeReportError(msg)
        return self.imds.td_quote(report.hw_report)


def detect_azure_cvm(tpm: Tpm2ToolsTpm) -> Tee | None:
    """``AZ_TDX_VTPM`` or ``AZ_SNP_VTPM`` by the type of the HCL report in the vTPM, else ``None``."""
    try:
        if tpm.nv_size(HCL_REPORT_NV_INDEX) is None:
            return None
        report = HclReport.parse(tpm.nv_read(HCL_REPORT_NV_INDEX, _HCL_REPORT))
    except CocoError as e:
        _logger.debug("not an Azure CVM: %s", e)
        return None
    return Tee.AZ_TDX_VTPM if report.report_type is HclReportType.TDX else Tee.AZ_SNP_VTPM
