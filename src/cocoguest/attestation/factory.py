"""Choosing and building the attester (upstream ``detect_tee_type`` + ``AttestationAgent::new``).

Invariants:
    * SECURITY: no silent fallback to ``sample`` (guest-components.md §14 item 7). When no TEE is detected,
      :func:`select_attester` raises :class:`TeeNotFoundError` naming every probe, unless the caller passed
      ``allow_sample=True`` (``--allow-sample-attester`` / ``allow_sample_attester = true``); then it logs a
      WARNING now, and the sample attester logs one on every evidence call.
    * Built-in device drivers are the defaults: TDX without configfs-tsm (QGS over vsock, else the GetQuote
      ioctl), SGX under Occlum (``/dev/sgx`` ioctls), CSV (``/dev/csv-guest``) and SE (``/dev/uv``); a backend
      in :class:`DeviceBackends` replaces one.
    * ``tpm``, ``az-snp-vtpm`` and ``az-tdx-vtpm`` get built-in backends unless :class:`DeviceBackends` supplies
      one: tpm2-tools on :meth:`Probes.resolved_tpm_tcti` (AK at ``DeviceBackends.tpm_ak_handle``, which must
      exist: it is never created, as upstream), and the IMDS at ``DeviceBackends.azure_imds_url``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cocoguest.attestation.attester import Attester, Tee
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH
from cocoguest.attestation.detect import Probes, detect_additional_devices, detect_tee
from cocoguest.attestation.drivers.azure_imds import DEFAULT_IMDS_URL, ImdsClient
from cocoguest.attestation.drivers.azure_vtpm import AzSnpVtpmAttester, AzTdxVtpmAttester, AzureVtpm
from cocoguest.attestation.drivers.azure_vtpm_device import Tpm2ToolsAzureVtpm
from cocoguest.attestation.drivers.cca import CcaAttester
from cocoguest.attestation.drivers.csv import CsvAttester, CsvGuestBackend
from cocoguest.attestation.drivers.csv_guest import CsvGuestDevice
from cocoguest.attestation.drivers.occlum_dcap import OcclumDcapDevice
from cocoguest.attestation.drivers.sample import SampleAttester, SampleDeviceAttester
from cocoguest.attestation.drivers.se import SeAttester, UltravisorBackend
from cocoguest.attestation.drivers.sgx import DcapQuoteLibrary, SgxAttester
from cocoguest.attestation.drivers.snp import SevGuestDevice, SnpAttester
from cocoguest.attestation.drivers.tdx import TdxAttester, TdxGuestDevice
from cocoguest.attestation.drivers.tdx_quote import TdxAttestQuoteGenerator
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.drivers.tpm2_tools import DEFAULT_AK_HANDLE, DEFAULT_TCTI, Tpm2ToolsTpm
from cocoguest.attestation.drivers.tpm_quote import TpmDevice
from cocoguest.attestation.drivers.uvdevice import UvDevice
from cocoguest.errors import TeeNotFoundError, UnsupportedError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceBackends:
    """Device implementations supplied by the caller instead of the built-in ones, and their settings."""

    azure_vtpm: AzureVtpm | None = None
    tpm: TpmDevice | None = None
    tpm_ak_public_der: bytes = b""
    tpm_ak_handle: int = DEFAULT_AK_HANDLE
    """The built-in ``tpm`` backend's AK (upstream ``AA_TPM_AK_HANDLE``, default ``0x81010002``)."""
    azure_imds_url: str = DEFAULT_IMDS_URL
    """The Azure IMDS the built-in Azure backend calls (tests: a fake on loopback)."""
    occlum_library: DcapQuoteLibrary | None = None
    csv_guest: CsvGuestBackend | None = None
    ultravisor: UltravisorBackend | None = None


def build_attester(
    tee: Tee,
    probes: Probes,
    backends: DeviceBackends = DeviceBackends(),
    *,
    aael_path: Path = DEFAULT_AAEL_PATH,
    limits: Limits = DEFAULT_LIMITS,
) -> Attester:
    """The driver for ``tee``, wired to the paths in ``probes``.

    Raises:
        UnsupportedError: ``tee`` has no driver here.
        TeeDeviceError: the built-in ``tpm`` backend finds no AK at its handle.
    """
    tsm = probes.tsm()
    if tee is Tee.TDX:
        return TdxAttester(
            tsm=tsm,
            report_source=TdxGuestDevice(probes.tdx_guest_device),
            quote_generator=TdxAttestQuoteGenerator(
                device=probes.tdx_guest_device, conf_path=probes.tdx_attest_conf, limits=limits
            ),
            aael_path=aael_path,
            limits=limits,
        )
    if tee is Tee.SNP:
        return SnpAttester(tsm=tsm, report_source=SevGuestDevice(probes.sev_guest_device), limits=limits)
    if tee is Tee.CCA:
        return CcaAttester(tsm=tsm, limits=limits)
    if tee is Tee.SGX:
        return SgxAttester(
            attestation_dir=probes.sgx_attestation_dir,
            occlum=probes.occlum,
            occlum_library=backends.occlum_library or OcclumDcapDevice(probes.occlum_sgx_device, limits=limits),
            limits=limits,
        )
    if tee in (Tee.AZ_SNP_VTPM, Tee.AZ_TDX_VTPM):
        vtpm = backends.azure_vtpm or Tpm2ToolsAzureVtpm(
            probes.resolved_tpm_tcti() or DEFAULT_TCTI,
            ImdsClient(backends.azure_imds_url, limits=limits),
            limits=limits,
        )
        cls = AzSnpVtpmAttester if tee is Tee.AZ_SNP_VTPM else AzTdxVtpmAttester
        return cls(vtpm)
    if tee is Tee.TPM:
        if backends.tpm is not None:
            return TpmAttester(backends.tpm, backends.tpm_ak_public_der)
        tpm = Tpm2ToolsTpm(probes.resolved_tpm_tcti() or DEFAULT_TCTI, backends.tpm_ak_handle, limits=limits)
        return TpmAttester(tpm, tpm.ak_public_der())
    if tee is Tee.CSV:
        csv_guest = backends.csv_guest if backends.csv_guest is not None else CsvGuestDevice(probes.csv_guest_device)
        return CsvAttester(csv_guest, aael_path=aael_path, limits=limits)
    if tee is Tee.SE:
        ultravisor = (
            backends.ultravisor if backends.ultravisor is not None else UvDevice(probes.uv_device, limits=limits)
        )
        return SeAttester(ultravisor, limits=limits)
    if tee is Tee.SAMPLE:
        return SampleAttester()
    if tee is Tee.SAMPLE_DEVICE:
        return SampleDeviceAttester()
    msg = f"{tee} detected, but cocoguest has no {tee} attester yet"
    raise UnsupportedError(msg)


def select_attester(
    allow_sample: bool,
    probes: Probes | None = None,
    backends: DeviceBackends = DeviceBackends(),
    *,
    aael_path: Path = DEFAULT_AAEL_PATH,
    limits: Limits = DEFAULT_LIMITS,
) -> Attester:
    """The primary attester for this guest (see the module docstring).

    Raises:
        TeeNotFoundError: no TEE found and ``allow_sample`` is false.
        UnsupportedError: see :func:`build_attester`.
    """
    probes = probes if probes is not None else Probes()
    detection = detect_tee(probes)
    if detection.tee is None:
        if not allow_sample:
            # SECURITY: refusing here is the point: sample evidence would let any host impersonate a TEE.
            msg = (
                "no TEE found (probed: " + "; ".join(detection.probed) + "); refusing to fall back to the sample "
                "attester: pass --allow-sample-attester (or allow_sample_attester = true) for development only"
            )
            raise TeeNotFoundError(msg)
        _logger.warning("no TEE found: using the SAMPLE attester, as explicitly allowed; evidence proves nothing")
        return SampleAttester()
    return build_attester(detection.tee, probes, backends, aael_path=aael_path, limits=limits)


def select_additional_devices(probes: Probes) -> tuple[Attester, ...]:
    """Attesters of the additional devices (GetAdditionalEvidence)."""
    return tuple(build_attester(tee, probes) for tee in detect_additional_devices(probes))
