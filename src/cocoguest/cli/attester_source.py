"""The guest's attester for CLI commands, and its adapter to the KBS client's :class:`EvidenceSource`.

``kbs`` never imports ``attestation`` (kbs/evidence.py); this module, in ``cli``, joins the two: an
:class:`~cocoguest.attestation.attester.Attester` from :func:`~cocoguest.attestation.factory.select_attester`
becomes an evidence source whose ``get_evidence`` returns the attester's evidence as compact JSON bytes
(:func:`~cocoguest.attestation.attester.encode_evidence`, what the AA's GetEvidence returns).

Invariants:
    * SECURITY: no silent fallback to the sample attester: without ``allow_sample`` on a TEE-less machine
      :func:`select_evidence_source` raises :class:`~cocoguest.errors.TeeNotFoundError` naming every probe.
    * The upstream environment switches (``OCCLUM``, ``ENABLE_SAMPLE_DEVICE``, ``AA_TPM_DEVICE``,
      ``AA_TPM_AK_HANDLE``) and cocoguest's ``COCOGUEST_TPM_TCTI`` (a TCTI string instead of a device, e.g. a
      swtpm) and ``COCOGUEST_AZURE_IMDS_URL`` (another IMDS base URL, e.g. a fake one in tests) are read from the
      ``env`` mapping the CLI took once (this package is the only reader of the environment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocoguest.attestation.attester import Attester, encode_evidence
from cocoguest.attestation.detect import Probes
from cocoguest.attestation.drivers.azure_imds import DEFAULT_IMDS_URL
from cocoguest.attestation.drivers.tpm2_tools import DEFAULT_AK_HANDLE
from cocoguest.attestation.factory import DeviceBackends, select_additional_devices, select_attester
from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits

TPM_TCTI_VARIABLE = "COCOGUEST_TPM_TCTI"
IMDS_URL_VARIABLE = "COCOGUEST_AZURE_IMDS_URL"


def probes_from_env(env: Mapping[str, str]) -> Probes:
    """Detection probes at the real paths, with upstream's environment switches applied."""
    probes = Probes(
        occlum="OCCLUM" in env,
        enable_sample_device="ENABLE_SAMPLE_DEVICE" in env,
        tpm_tcti=env.get(TPM_TCTI_VARIABLE) or None,
    )
    device = env.get("AA_TPM_DEVICE")
    # upstream: AA_TPM_DEVICE replaces the probed device list (a missing device then means "no TPM")
    return dataclasses.replace(probes, tpm_devices=(Path(device),)) if device else probes


def backends_from_env(env: Mapping[str, str]) -> DeviceBackends:
    """The built-in device backends' settings: ``AA_TPM_AK_HANDLE`` (hex, as upstream) and the IMDS URL.

    Raises:
        ConfigError: ``AA_TPM_AK_HANDLE`` is not a hexadecimal handle.
    """
    text = env.get("AA_TPM_AK_HANDLE", "").strip()
    try:
        handle = int(text.removeprefix("0x"), 16) if text else DEFAULT_AK_HANDLE
    except ValueError as e:
        msg = f"AA_TPM_AK_HANDLE: {text[:40]!r} is not a hexadecimal TPM handle"
        raise ConfigError(msg) from e
    return DeviceBackends(tpm_ak_handle=handle, azure_imds_url=env.get(IMDS_URL_VARIABLE) or DEFAULT_IMDS_URL)


@dataclass(frozen=True, slots=True)
class AttesterEvidence:
    """An :class:`Attester` seen as the KBS client's ``EvidenceSource``."""

    attester: Attester

    @property
    def tee(self) -> str:
        """The TEE's wire name (``sample``, ``tdx``, ...)."""
        return str(self.attester.tee)

    def get_evidence(self, report_data: bytes) -> bytes:
        """The attester's evidence for ``report_data``, as compact JSON bytes.

        Raises:
            AttestationRequestError, TeeDeviceError, TeeReportError: the attester failed.
        """
        return encode_evidence(self.attester.evidence(report_data))


def select_evidence_source(
    allow_sample: bool, env: Mapping[str, str], limits: Limits = DEFAULT_LIMITS
) -> AttesterEvidence:
    """The primary attester of this guest as an evidence source.

    Raises:
        TeeNotFoundError: no TEE found and ``allow_sample`` is false (names every probe).
        UnsupportedError: a detected TEE that cocoguest cannot drive here.
        ConfigError: a malformed ``AA_TPM_AK_HANDLE``.
        TeeDeviceError: the TPM has no AK at its handle.
    """
    backends = backends_from_env(env)
    return AttesterEvidence(select_attester(allow_sample, probes_from_env(env), backends, limits=limits))


def select_all_attesters(
    allow_sample: bool, env: Mapping[str, str], limits: Limits = DEFAULT_LIMITS
) -> tuple[Attester, ...]:
    """The primary attester followed by the additional devices' attesters (``evidence_getter``'s order).

    Raises:
        TeeNotFoundError, UnsupportedError: see :func:`select_evidence_source`.
    """
    probes = probes_from_env(env)
    primary = select_attester(allow_sample, probes, backends_from_env(env), limits=limits)
    return (primary, *select_additional_devices(probes))
