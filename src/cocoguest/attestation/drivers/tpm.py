"""The generic ``tpm`` attester (guest-components.md §6.3).

* Evidence: a quote with the AK over the 24 SHA-256 PCRs; the report data is resized to 32 bytes (zero-padded, or
  truncated as upstream: a SHA-384 report-data digest keeps 256 of its bits, still a binding commitment);
  ``{"tpm_quote":{"signature":b64,"message":b64,"pcrs":[hex...]},"ak_public":"<b64 DER SPKI>"}``.
* Runtime measurement: SHA-256 PCR extend, PCR index = register index.
* Init-data: extend PCR 8 with the (32-byte, SHA-256) digest.

The built-in device is :class:`~cocoguest.attestation.drivers.tpm2_tools.Tpm2ToolsTpm` (the factory's default):
verified against swtpm (a real TPM 2.0 simulator) through tpm2-tools, never against a hardware TPM here.
"""

from __future__ import annotations

import base64
from typing import Final

from cocoguest.attestation.attester import BindResult, HashAlgorithm, JsonObject, Tee, fit_register
from cocoguest.attestation.drivers.tpm_quote import INIT_DATA_PCR, PCR_SIZE, TpmDevice, check_quote_nonce
from cocoguest.errors import AttestationRequestError

NONCE_SIZE: Final = 32


def require_pcr_digest(digest: bytes) -> bytes:
    """``digest`` if it is a 32-byte SHA-256 value, as PCR 8 init-data binding needs.

    Raises:
        AttestationRequestError: another size (use ``algorithm = "sha256"`` in the init-data).
    """
    if len(digest) != PCR_SIZE:
        msg = f"init-data digest of {len(digest)} bytes cannot extend a SHA-256 PCR (needs 32: use sha256)"
        raise AttestationRequestError(msg)
    return digest


class TpmAttester:
    """A plain TPM 2.0 (see the module docstring)."""

    def __init__(self, tpm: TpmDevice, ak_public_der: bytes) -> None:
        self._tpm = tpm
        self._ak_public_der = ak_public_der

    @property
    def tee(self) -> Tee:
        """``tpm``."""
        return Tee.TPM

    @property
    def measurement_hash(self) -> HashAlgorithm:
        """SHA-256."""
        return HashAlgorithm.SHA256

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"tpm_quote": ..., "ak_public": ...}``."""
        nonce = fit_register(report_data, NONCE_SIZE)
        quote = self._tpm.quote(nonce)
        check_quote_nonce(quote, nonce)
        return {
            "tpm_quote": {
                "signature": base64.b64encode(quote.signature).decode("ascii"),
                "message": base64.b64encode(quote.message).decode("ascii"),
                "pcrs": [p.hex() for p in quote.pcrs],
            },
            "ak_public": base64.b64encode(self._ak_public_der).decode("ascii"),
        }

    def register_for_pcr(self, pcr: int) -> int:
        """Identity."""
        return pcr

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        """Extend SHA-256 PCR ``pcr``."""
        self._tpm.extend_pcr(pcr, fit_register(event_digest, PCR_SIZE))

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """SHA-256 PCR ``pcr``."""
        return self._tpm.read_pcr(pcr)

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Extend PCR 8 with ``digest``."""
        self._tpm.extend_pcr(INIT_DATA_PCR, require_pcr_digest(digest))
        return BindResult.BOUND
