"""TEE detection in upstream's order (guest-components.md §6.2), with every probed path injectable.

Primary TEE, first match wins: tdx -> sgx -> az-tdx-vtpm -> az-snp-vtpm -> snp -> csv -> cca -> se -> tpm.

Invariants:
    * SECURITY: unlike upstream, :func:`detect_tee` returns ``None`` when nothing matched: there is no fallback
      to ``sample`` here (that decision belongs to ``select_attester``, which refuses it unless allowed).
    * Detection reads no environment variable: ``OCCLUM``, ``ENABLE_SAMPLE_DEVICE``, ``AA_TPM_DEVICE`` and
      ``COCOGUEST_TPM_TCTI`` arrive as :class:`Probes` fields, set by the CLI.
    * The Azure probe runs tpm2-tools only when a TPM is present (:meth:`Probes.resolved_tpm_tcti`), and at most
      once per detection.
    * Every probe is listed in :attr:`Detection.probed`, so "no TEE" errors can say what was looked at.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cocoguest.attestation.attester import Tee
from cocoguest.attestation.configfs_tsm import (
    DEFAULT_TSM_REPORT_ROOT,
    PROVIDER_CCA,
    PROVIDER_TDX,
    ConfigfsTsm,
)
from cocoguest.attestation.drivers.azure_vtpm_device import detect_azure_cvm
from cocoguest.attestation.drivers.occlum_dcap import DEFAULT_OCCLUM_SGX_DEVICE
from cocoguest.attestation.drivers.sgx import DEFAULT_ATTESTATION_DIR, gramine_dcap_available
from cocoguest.attestation.drivers.snp import DEFAULT_SEV_GUEST_DEVICE
from cocoguest.attestation.drivers.tdx import DEFAULT_TDX_GUEST_DEVICE
from cocoguest.attestation.drivers.tdx_quote import DEFAULT_TDX_ATTEST_CONF
from cocoguest.attestation.drivers.tpm2_tools import Tpm2ToolsTpm
from cocoguest.attestation.drivers.uvdevice import DEFAULT_UV_DEVICE


@dataclass(frozen=True, slots=True)
class Probes:
    """Where detection looks (defaults: the real paths)."""

    tsm_report_root: Path = DEFAULT_TSM_REPORT_ROOT
    tsm_create_entry: Callable[[Path], None] = os.mkdir
    tsm_remove_entry: Callable[[Path], None] = os.rmdir
    tdx_guest_device: Path = DEFAULT_TDX_GUEST_DEVICE
    sgx_attestation_dir: Path = DEFAULT_ATTESTATION_DIR
    occlum: bool = False
    """Running under Occlum (upstream: env ``OCCLUM`` is set)."""
    azure_cvm: Callable[[], Tee | None] | None = None
    """Which Azure CVM this is (``AZ_TDX_VTPM``/``AZ_SNP_VTPM``), or ``None``; unset: the built-in probe reads
    the HCL report in the NV index of the TPM at :meth:`resolved_tpm_tcti` (none there: not Azure)."""
    sev_guest_platform: Path = Path("/sys/devices/platform/sev-guest")
    sev_guest_device: Path = DEFAULT_SEV_GUEST_DEVICE
    csv_guest_device: Path = Path("/dev/csv-guest")
    machine: str = field(default_factory=platform.machine)
    prot_virt_guest: Path = Path("/sys/firmware/uv/prot_virt_guest")
    uv_device: Path = DEFAULT_UV_DEVICE
    """The IBM SE Ultravisor device the ``se`` attester uses (not a detection probe)."""
    tpm_devices: tuple[Path, ...] = tuple(Path(f"/dev/{kind}{n}") for kind in ("tpmrm", "tpm") for n in range(3))
    """TPM character devices, the first present wins (upstream: ``AA_TPM_DEVICE``, else ``/dev/tpm0``-``2``; the
    kernel resource managers ``/dev/tpmrm*`` come first here, so tpm2-tools share the TPM with other users)."""
    tpm_tcti: str | None = None
    """An explicit TPM TCTI (e.g. ``swtpm:host=127.0.0.1,port=2321``), used instead of :attr:`tpm_devices`."""
    enable_sample_device: bool = False
    """Offer ``sampledevice`` as an additional device (upstream: env ``ENABLE_SAMPLE_DEVICE`` is set)."""
    tdx_attest_conf: Path = DEFAULT_TDX_ATTEST_CONF
    """libtdx_attest's config: its ``port`` sends TD quotes to the QGS over vsock (not read by detection)."""
    occlum_sgx_device: Path = DEFAULT_OCCLUM_SGX_DEVICE
    """Occlum's SGX device, for DCAP quotes (not read by detection)."""

    def resolved_tpm_tcti(self) -> str | None:
        """The TCTI of this guest's TPM: :attr:`tpm_tcti` if set, else the first present device, else ``None``."""
        if self.tpm_tcti is not None:
            return self.tpm_tcti
        return next((f"device:{p}" for p in self.tpm_devices if p.exists()), None)

    def azure_cvm_type(self) -> Tee | None:
        """:attr:`azure_cvm`, or the built-in probe of the HCL report (see there)."""
        if self.azure_cvm is not None:
            return self.azure_cvm()
        tcti = self.resolved_tpm_tcti()
        return detect_azure_cvm(Tpm2ToolsTpm(tcti)) if tcti is not None else None

    def tsm(self) -> ConfigfsTsm:
        """The configfs-tsm root these probes point at."""
        return ConfigfsTsm(self.tsm_report_root, create_entry=self.tsm_create_entry, remove_entry=self.tsm_remove_entry)


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected primary TEE (``None``: no TEE) and a description of every probe made."""

    tee: Tee | None
    probed: tuple[str, ...]


def detect_tee(probes: Probes) -> Detection:
    """The primary TEE, in upstream's order (see the module docstring)."""
    probed: list[str] = []
    tsm_provider: list[str | None] = []

    def provider() -> str | None:
        if not tsm_provider:
            tsm_provider.append(probes.tsm().provider())
        return tsm_provider[0]

    azure: list[Tee | None] = []

    def azure_cvm() -> Tee | None:
        if not azure:
            azure.append(probes.azure_cvm_type())
        return azure[0]

    def check(tee: Tee, description: str, matched: Callable[[], bool]) -> bool:
        probed.append(f"{tee}: {description}")
        return matched()

    checks: tuple[tuple[Tee, str, Callable[[], bool]], ...] = (
        (
            Tee.TDX,
            f"configfs-tsm provider {PROVIDER_TDX} under {probes.tsm_report_root} or {probes.tdx_guest_device}",
            lambda: provider() == PROVIDER_TDX or probes.tdx_guest_device.exists(),
        ),
        (
            Tee.SGX,
            f"Occlum, or {probes.sgx_attestation_dir}/attestation_type = dcap",
            lambda: probes.occlum or gramine_dcap_available(probes.sgx_attestation_dir),
        ),
        (Tee.AZ_TDX_VTPM, "Azure TDX CVM (vTPM HCL report)", lambda: azure_cvm() is Tee.AZ_TDX_VTPM),
        (Tee.AZ_SNP_VTPM, "Azure SNP CVM (vTPM HCL report)", lambda: azure_cvm() is Tee.AZ_SNP_VTPM),
        (Tee.SNP, f"{probes.sev_guest_platform}", probes.sev_guest_platform.exists),
        (Tee.CSV, f"{probes.csv_guest_device}", probes.csv_guest_device.exists),
        (
            Tee.CCA,
            f"aarch64 and configfs-tsm provider {PROVIDER_CCA} under {probes.tsm_report_root}",
            lambda: probes.machine == "aarch64" and provider() == PROVIDER_CCA,
        ),
        (Tee.SE, f"{probes.prot_virt_guest} = 1", lambda: _reads_one(probes.prot_virt_guest)),
        (
            Tee.TPM,
            f"TPM TCTI {probes.tpm_tcti}"
            if probes.tpm_tcti is not None
            else "TPM device " + ", ".join(str(p) for p in probes.tpm_devices),
            lambda: probes.resolved_tpm_tcti() is not None,
        ),
    )
    for tee, description, matched in checks:
        if check(tee, description, matched):
            return Detection(tee, tuple(probed))
    return Detection(None, tuple(probed))


def detect_additional_devices(probes: Probes) -> tuple[Tee, ...]:
    """Additional attestable devices: ``sampledevice`` when enabled (nvidia and hygon-dcu are not built in)."""
    return (Tee.SAMPLE_DEVICE,) if probes.enable_sample_device else ()


def _reads_one(path: Path) -> bool:
    try:
        return path.read_bytes().strip() == b"1"
    except OSError:
        return False
