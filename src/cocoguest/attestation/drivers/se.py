"""The IBM Secure Execution (``se``) attester, as far as the spec describes it (guest-components.md §6.3).

For SE the KBS challenge ``nonce`` is itself a JSON ``SeAttestationRequest``; the KBS client injects
``runtime_data_digest`` into it and passes the JSON bytes as the report data. The attester hands the request to
the Ultravisor (``/dev/uv`` attestation ioctl) behind :class:`UltravisorBackend`, for which no built-in
implementation exists (the request and ioctl layouts are not in the spec), and returns the
``SeAttestationResponse``: ``{measurement, additional_data, user_data, cuid, encr_measurement_key,
encr_request_nonce, image_hdr_tags}``, every field base64 (standard). No runtime measurement; init-data
unsupported. Verified only with a synthetic backend in tests.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Final, Protocol

from cocoguest import jsonutil
from cocoguest.attestation.attester import BindResult, JsonObject, Tee
from cocoguest.errors import AttestationRequestError, TeeReportError

RESPONSE_FIELDS: Final = (
    "measurement",
    "additional_data",
    "user_data",
    "cuid",
    "encr_measurement_key",
    "encr_request_nonce",
    "image_hdr_tags",
)


class UltravisorBackend(Protocol):
    """The Ultravisor attestation call."""

    def attest(self, request: Mapping[str, object]) -> Mapping[str, bytes]:
        """The response fields (:data:`RESPONSE_FIELDS`, raw bytes) for a parsed ``SeAttestationRequest``.

        Raises:
            TeeDeviceError: the Ultravisor call failed.
        """
        ...


class SeAttester:
    """IBM Secure Execution (see the module docstring)."""

    def __init__(self, backend: UltravisorBackend) -> None:
        self._backend = backend

    @property
    def tee(self) -> Tee:
        """``se``."""
        return Tee.SE

    def evidence(self, report_data: bytes) -> JsonObject:
        """``SeAttestationResponse`` for the JSON ``SeAttestationRequest`` in ``report_data``."""
        request = jsonutil.load_object(report_data, "SE attestation request", AttestationRequestError)
        if "runtime_data_digest" not in request:
            msg = "SE attestation request has no runtime_data_digest (the nonce and TEE key would be unbound)"
            raise AttestationRequestError(msg)
        response = self._backend.attest(request)
        missing = [f for f in RESPONSE_FIELDS if f not in response]
        if missing:
            msg = f"Ultravisor response lacks {', '.join(missing)}"
            raise TeeReportError(msg)
        return {f: base64.b64encode(response[f]).decode("ascii") for f in RESPONSE_FIELDS}

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED` (as upstream)."""
        return BindResult.UNSUPPORTED
