"""TEE detection in upstream's order (guest-components.md §6.2), with every probed path injectable.

Primary TEE, first match wins: tdx -> sgx -> az-tdx-vtpm -> az-snp-vtpm -> snp -> csv -> cca -> se -> tpm.

Invariants:
    * SECURITY: unlike upstream, :func:`detect_tee` returns ``None`` when nothing matched: there is no fallback
      to ``sample`` here (that decision belongs to ``select_attester``, which refuses it unless allowed).
    * Detection reads no environment variable: ``OCCLUM``, ``ENABLE_SAMPLE_DEVICE`` and ``AA_TPM_DEVICE`` arrive as
      :class:`Probes` fields, set by the CLI.
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
from cocoguest.attestation.drivers.occlum_dcap import DEFAULT_OCCLUM_SGX_DEVICE
from cocoguest.attestation.drivers.sgx import DEFAULT_ATTESTATION_DIR, gramine_dcap_available
from cocoguest.attestation.drivers.snp import DEFAULT_SEV_GUEST_DEVICE
from cocoguest.attestation.drivers.tdx import DEFAULT_TDX_GUEST_DEVICE
from cocoguest.attestation.drivers.tdx_quote import DEFAULT_TDX_ATTEST_CONF
from cocoguest.attestation.drivers.uvdevice import DEFAULT_UV_DEVICE


def _no_azure_probe() -> Tee | None:
    return None


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
    azure_cvm: Callable[[], Tee | None] = _no_azure_probe
    """Which Azure CVM this is (``AZ_TDX_VTPM``/``AZ_SNP_VTPM``, by the vTPM's HCL report), or ``None``."""
    sev_guest_platform: Path = Path("/sys/devices/platform/sev-guest")
    sev_guest_device: Path = DEFAULT_SEV_GUEST_DEVICE
    csv_guest_device: Path = Path("/dev/csv-guest")
    machine: str = field(default_factory=platform.machine)
    prot_virt_guest: Path = Path("/sys/firmware/uv/prot_virt_guest")
    uv_device: Path = DEFAULT_UV_DEVICE
    """The IBM SE Ultravisor device the ``se`` attester uses (not a detection probe)."""
    tpm_devices: tuple[Path, ...] = (Path("/dev/tpm0"), Path("/dev/tpm1"), Path("/dev/tpm2"))
    enable_sample_device: bool = False
    """Offer ``sampledevice`` as an additional device (upstream: env ``ENABLE_SAMPLE_DEVICE`` is set)."""
    tdx_attest_conf: Path = DEFAULT_TDX_ATTEST_CONF
    """libtdx_attest's config: its ``port`` sends TD quotes to the QGS over vsock (not read by detection)."""
    occlum_sgx_device: Path = DEFAULT_OCCLUM_SGX_DEVICE
    """Occlum's SGX device, for DCAP quotes (not read by detection)."""

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
        (Tee.AZ_TDX_VTPM, "Azure TDX CVM (vTPM HCL report)", lambda: probes.azure_cvm() is Tee.AZ_TDX_VTPM),
        (Tee.AZ_SNP_VTPM, "Azure SNP CVM (vTPM HCL report)", lambda: probes.azure_cvm() is Tee.AZ_SNP_VTPM),
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
            "TPM device " + ", ".join(str(p) for p in probes.tpm_devices),
            lambda: any(p.exists() for p in probes.tpm_devices),
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
