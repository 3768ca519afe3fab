"""The IBM Secure Execution (``se``) attester (guest-components.md §6.3; upstream ``attester/src/se``).

For SE the KBS challenge ``nonce`` is itself a JSON ``SeAttestationRequest`` made by the attestation service;
the KBS client (:func:`cocoguest.kbs.protocol.se_attester_input`) injects ``runtime_data_digest`` (the SHA-512 of
the runtime data, kbs-protocol.md §8.1) into it and passes the JSON bytes as the report data; the end-to-end
RCAR test is ``tests/unit/test_kbs_client_se.py``. Request members (binary ones base64, standard alphabet):
``request_blob`` (the encrypted ARCB), ``measurement_size``, ``additional_size`` (u32), ``encr_measurement_key``,
``encr_request_nonce``, ``image_hdr_tags`` (208 bytes: PLD, ALD, TLD digests of 64 bytes and a 16-byte tag),
``runtime_data_digest``.

Steps, repeated as ``# (n)`` below:
    (1) parse the request; ``runtime_data_digest`` is required;
    (2) user data = the digest zero-padded to 64 bytes (longer is refused, as upstream);
    (3) the Ultravisor computes the measurement over the ARCB's secrets, the boot header tags, the config UID,
        the user data and any additional data it adds (``UltravisorBackend``; built in: ``/dev/uv``);
    (4) ``SeAttestationResponse``: ``{measurement, additional_data, user_data, cuid, encr_measurement_key,
        encr_request_nonce, image_hdr_tags}``, each base64: the first four from the Ultravisor and (2), the last
        three echoed from the request for the verifier, which decrypts the measurement key and recomputes
        the HMAC.

Invariants:
    * SECURITY: the runtime-data digest (nonce + TEE key) is always bound: it is the UV user data, which
      enters the measurement HMAC; a request without it is refused.
    * Deviation: with ``additional_size`` 0, ``additional_data`` is empty (upstream fails the call).
    * No runtime measurement; init-data unsupported (as upstream).
    * Verified here only against an emulated ``/dev/uv`` (see :mod:`~cocoguest.attestation.drivers.uvdevice`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final, Protocol

from cocoguest import jsonutil
from cocoguest.attestation.attester import BindResult, JsonObject, Tee, fit_report_data
from cocoguest.attestation.drivers.uvdevice import UvAttestation
from cocoguest.errors import AttestationRequestError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

USER_DATA_SIZE: Final = 64
"""Bytes of UV user data the runtime-data digest fills (a SHA-512 digest; upstream ``SE_REPORT_DATA_SIZE``)."""
BOOT_HDR_TAGS_SIZE: Final = 208
RESPONSE_FIELDS: Final = (
    "measurement",
    "additional_data",
    "user_data",
    "cuid",
    "encr_measurement_key",
    "encr_request_nonce",
    "image_hdr_tags",
)
_U32_MAX: Final = 0xFFFF_FFFF


class UltravisorBackend(Protocol):
    """The Ultravisor's Retrieve Attestation Measurement call."""

    def attest(self, arcb: bytes, user_data: bytes, measurement_size: int, additional_size: int) -> UvAttestation:
        """Measurement, additional data and config UID for the ARCB, with ``user_data`` bound.

        Raises:
            AttestationRequestError: a size is out of range.
            TeeDeviceError: the call failed (``TeeFirmwareError``: the Ultravisor refused).
            TeeReportError: the Ultravisor's answer is malformed.
        """
        ...


@dataclass(frozen=True, slots=True)
class SeAttestationRequest:
    """A parsed ``SeAttestationRequest`` (untrusted: it comes from the KBS)."""

    request_blob: bytes
    measurement_size: int
    additional_size: int
    encr_measurement_key: bytes
    encr_request_nonce: bytes
    image_hdr_tags: bytes
    runtime_data_digest: bytes


def _base64(request: dict[str, object], name: str) -> bytes:
    value = request.get(name)
    if not isinstance(value, str):
        msg = f"SE attestation request: {name} must be a base64 string"
        raise AttestationRequestError(msg)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"SE attestation request: {name} is not base64"
        raise AttestationRequestError(msg) from e


def _u32(request: dict[str, object], name: str) -> int:
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32_MAX:
        msg = f"SE attestation request: {name} must be an unsigned 32-bit integer"
        raise AttestationRequestError(msg)
    return value


def parse_se_request(untrusted: bytes, limits: Limits = DEFAULT_LIMITS) -> SeAttestationRequest:
    """The ``SeAttestationRequest`` in ``untrusted`` (see the module docstring).

    Raises:
        AttestationRequestError: not JSON, a member missing or of the wrong type, no ``runtime_data_digest``,
            or ``image_hdr_tags`` not 208 bytes.
    """
    request = jsonutil.load_object(untrusted, "SE attestation request", AttestationRequestError, limits=limits)
    if "runtime_data_digest" not in request:
        msg = "SE attestation request has no runtime_data_digest (the nonce and TEE key would be unbound)"
        raise AttestationRequestError(msg)
    parsed = SeAttestationRequest(
        request_blob=_base64(request, "request_blob"),
        measurement_size=_u32(request, "measurement_size"),
        additional_size=_u32(request, "additional_size"),
        encr_measurement_key=_base64(request, "encr_measurement_key"),
        encr_request_nonce=_base64(request, "encr_request_nonce"),
        image_hdr_tags=_base64(request, "image_hdr_tags"),
        runtime_data_digest=_base64(request, "runtime_data_digest"),
    )
    if len(parsed.image_hdr_tags) != BOOT_HDR_TAGS_SIZE:
        msg = f"SE attestation request: image_hdr_tags of {len(parsed.image_hdr_tags)} bytes (expected 208)"
        raise AttestationRequestError(msg)
    return parsed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class SeAttester:
    """IBM Secure Execution (see the module docstring)."""

    def __init__(self, backend: UltravisorBackend, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._backend = backend
        self._limits = limits

    @property
    def tee(self) -> Tee:
        """``se``."""
        return Tee.SE

    def evidence(self, report_data: bytes) -> JsonObject:
        """``SeAttestationResponse`` for the JSON ``SeAttestationRequest`` in ``report_data``.

        Raises:
            AttestationRequestError: see :func:`parse_se_request`; the digest is longer than 64 bytes.
            TeeDeviceError, TeeReportError: see :class:`UltravisorBackend`; a measurement of the wrong size.
        """
        request = parse_se_request(report_data, self._limits)  # (1)
        user_data = fit_report_data(request.runtime_data_digest, USER_DATA_SIZE, Tee.SE)  # (2)
        result = self._backend.attest(  # (3)
            request.request_blob, user_data, request.measurement_size, request.additional_size
        )
        if len(result.measurement) != request.measurement_size:
            msg = f"Ultravisor returned a {len(result.measurement)}-byte measurement ({request.measurement_size} asked)"
            raise TeeReportError(msg)
        return {  # (4)
            "measurement": _b64(result.measurement),
            "additional_data": _b64(result.additional_data),
            "user_data": _b64(user_data),
            "cuid": _b64(result.config_uid),
            "encr_measurement_key": _b64(request.encr_measurement_key),
            "encr_request_nonce": _b64(request.encr_request_nonce),
            "image_hdr_tags": _b64(request.image_hdr_tags),
        }

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Always :attr:`BindResult.UNSUPPORTED` (as upstream)."""
        return BindResult.UNSUPPORTED
