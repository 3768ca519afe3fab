"""The guest's attester for CLI commands, and its adapter to the KBS client's :class:`EvidenceSource`.

``kbs`` never imports ``attestation`` (kbs/evidence.py); this module, in ``cli``, joins the two: an
:class:`~cocoguest.attestation.attester.Attester` from :func:`~cocoguest.attestation.factory.select_attester`
becomes an evidence source whose ``get_evidence`` returns the attester's evidence as compact JSON bytes
(:func:`~cocoguest.attestation.attester.encode_evidence`, what the AA's GetEvidence returns).

Invariants:
    * SECURITY: no silent fallback to the sample attester: without ``allow_sample`` on a TEE-less machine
      :func:`select_evidence_source` raises :class:`~cocoguest.errors.TeeNotFoundError` naming every probe.
    * The upstream environment switches (``OCCLUM``, ``ENABLE_SAMPLE_DEVICE``) are read from the ``env``
      mapping the CLI took once (this package is the only reader of the environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cocoguest.attestation.attester import Attester, encode_evidence
from cocoguest.attestation.detect import Probes
from cocoguest.attestation.factory import select_additional_devices, select_attester
from cocoguest.limits import DEFAULT_LIMITS, Limits


def probes_from_env(env: Mapping[str, str]) -> Probes:
    """Detection probes at the real paths, with upstream's environment switches applied."""
    return Probes(occlum="OCCLUM" in env, enable_sample_device="ENABLE_SAMPLE_DEVICE" in env)


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
    """
    return AttesterEvidence(select_attester(allow_sample, probes_from_env(env), limits=limits))


def select_all_attesters(
    allow_sample: bool, env: Mapping[str, str], limits: Limits = DEFAULT_LIMITS
) -> tuple[Attester, ...]:
    """The primary attester followed by the additional devices' attesters (``evidence_getter``'s order).

    Raises:
        TeeNotFoundError, UnsupportedError: see :func:`select_evidence_source`.
    """
    probes = probes_from_env(env)
    return (select_attester(allow_sample, probes, limits=limits), *select_additional_devices(probes))
