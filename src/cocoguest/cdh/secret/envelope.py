"""The ``sealed.<header>.<payload>.<signature>`` text and its ES256 verification (guest-components.md §8.3).

Steps of :func:`open_sealed`:
    (1) strip ``sealed.``; require exactly four dot-separated parts in total;
    (2) with verification: parse the protected header (JSON object), require ``alg == "ES256"`` and a ``kid``;
    (3) fetch the verification JWK for ``kid`` (:class:`VerificationKeys`);
    (4) verify the raw ``r || s`` signature over ASCII ``"<header_b64>.<payload_b64>"``;
    (5) base64url-decode the payload (only now, or directly when verification is explicitly skipped).

Invariants:
    * SECURITY: with verification on, no payload byte is interpreted before step (4) passed; the legacy
      unsigned form (``fakejwsheader``/``fakesignature``) is accepted only with verification skipped, and the
      skip is logged as a warning on every use.
    * Pure except for the key lookup, which the caller supplies.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from cocoguest.crypto.sealing import b64u_decode, es256_verify
from cocoguest.errors import ConfigError, ProtocolError, SealedSecretError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

PREFIX: Final = "sealed."
ALGORITHM: Final = "ES256"


class VerificationKeys(Protocol):
    """Finds the public JWK (a JSON object) that verifies secrets signed by ``kid``."""

    def public_jwk(self, kid: str) -> dict[str, object]:
        """The JWK for ``kid``.

        Raises:
            ResourceNotFoundError: no key for ``kid``. ConfigError: the key is malformed.
        """
        ...


def _parts(untrusted_secret: str, limits: Limits) -> list[str]:
    if len(untrusted_secret) > limits.max_sealed_secret_bytes:
        msg = f"sealed secret: longer than {limits.max_sealed_secret_bytes} characters"
        raise SealedSecretError(msg)
    if not untrusted_secret.startswith(PREFIX):
        msg = "sealed secret: does not start with 'sealed.'"
        raise SealedSecretError(msg)
    parts = untrusted_secret[len(PREFIX) :].split(".")
    if len(parts) != 3:
        msg = f"sealed secret: {len(parts) + 1} dot-separated parts, expected 4 (sealed.header.payload.signature)"
        raise SealedSecretError(msg)
    return parts


def open_sealed(
    untrusted_secret: str,
    keys: VerificationKeys | None,
    *,
    skip_verification: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[bytes, str | None]:
    """The verified payload bytes of a sealed secret and the ``kid`` that signed it (``None`` when skipped).

    Args:
        untrusted_secret: the whole ``sealed.`` text.
        keys: where verification keys come from (required unless ``skip_verification``).
        skip_verification: accept without a signature (legacy form too); INSECURE, warns on every use.
        limits: ``max_sealed_secret_bytes``.

    Raises:
        SealedSecretError: malformed text, wrong algorithm, no kid, or a signature that does not verify
            (names the kid).
        ResourceNotFoundError, ConfigError, TransportError, KbsDeniedError: the key for ``kid`` is unavailable.
    """
    header_b64, payload_b64, signature_b64 = _parts(untrusted_secret, limits)  # (1)
    if skip_verification:
        # SECURITY: explicitly configured (skip_sealed_secret_verification); never a fallback.
        _logger.warning("sealed secret accepted WITHOUT signature verification (skip_sealed_secret_verification)")
        return _payload(payload_b64), None  # (5)
    if keys is None:
        msg = "sealed secret: no verification keys configured"
        raise ConfigError(msg)
    try:
        header = load_object(b64u_decode(header_b64, "sealed secret header"), "sealed secret header", limits=limits)
    except ProtocolError as e:
        msg = f"sealed secret: the protected header is not a base64url JSON object ({e}); an unsigned legacy secret?"
        raise SealedSecretError(msg) from e
    alg, kid = header.get("alg"), header.get("kid")  # (2)
    if alg != ALGORITHM:
        msg = f"sealed secret: header alg {str(alg)[:16]!r} is not ES256"
        raise SealedSecretError(msg)
    if not isinstance(kid, str) or not kid:
        msg = "sealed secret: the header has no kid"
        raise SealedSecretError(msg)
    jwk = keys.public_jwk(kid)  # (3)
    signature = b64u_decode(signature_b64, f"sealed secret signed by {kid!r}: signature")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii", errors="replace")
    if not es256_verify(jwk, signing_input, signature, f"verification key {kid!r}"):  # (4)
        msg = f"sealed secret signed by {kid[:200]!r}: the signature does not verify (tampered, or another key)"
        raise SealedSecretError(msg)
    return _payload(payload_b64), kid  # (5)


def _payload(payload_b64: str) -> bytes:
    try:
        return b64u_decode(payload_b64, "sealed secret payload")
    except ProtocolError as e:
        raise SealedSecretError(str(e)) from e
