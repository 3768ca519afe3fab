"""The Arm CCA attester (guest-components.md §6.3, §6.4).

Evidence: a CCA attestation token from configfs-tsm (provider ``arm_cca_guest``) for the challenge (report data at
most 64 bytes, zero-padded); JSON ``{"token": [byte, ...]}`` (a JSON array of numbers, as upstream). No runtime
measurement; init-data binding unsupported. Detection also needs an aarch64 machine (see ``detect.py``).

Not checked here: that the CBOR token's realm challenge equals ours (the verifier checks it; parsing COSE is out
of scope). Verified only against synthetic configfs-tsm trees.
"""

from __future__ import annotations

from typing import Final

from cocoguest.attestation.attester import BindResult, JsonObject, Tee, fit_report_data
from cocoguest.attestation.configfs_tsm import PROVIDER_CCA, ConfigfsTsm
from cocoguest.limits import DEFAULT_LIMITS, Limits

CHALLENGE_SIZE: Final = 64


class CcaAttester:
    """Arm CCA realms (see the module docstring)."""

    def __init__(self, *, tsm: ConfigfsTsm | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self._tsm = tsm if tsm is not None else ConfigfsTsm(limits=limits)

    @property
    def tee(self) -> Tee:
        """``cca``."""
        return Tee.CCA

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"token": [...]}``."""
        challenge = fit_report_data(report_data, CHALLENGE_SIZE, Tee.CCA)
        token = self._tsm.report(challenge, expected_provider=PROVIDER_CCA).untrusted_outblob
        return {"token": list(token)}

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED` (as upstream)."""
        return BindResult.UNSUPPORTED
