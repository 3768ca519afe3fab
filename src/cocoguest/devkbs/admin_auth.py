"""Admin authentication of the dev KBS: Trustee's legacy ``[admin] auth_public_key`` (kbs-protocol.md §12).

An admin request carries ``Authorization: Bearer <JWT>``, header ``{"alg":"EdDSA",...}``, signed with the Ed25519
private key whose public half is configured; ``exp`` is required, ``nbf`` checked when present (60 s leeway).
With ``insecure_api = true`` every admin request is allowed (a warning is logged at start-up).

Invariants:
    * SECURITY: a request is admitted only by a verified signature and an unexpired token, or by the explicit
      ``insecure_api`` switch; no other path admits it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cocoguest.crypto.jws import Ed25519PublicKey, verify_eddsa
from cocoguest.errors import KbsApiError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits


class AdminAuth:
    """Checks admin requests; ``key is None`` means ``insecure_api``."""

    def __init__(
        self,
        key: Ed25519PublicKey | None,
        *,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Check with ``key`` (``None``: allow everything, the insecure API)."""
        self._key = key
        self._clock = clock
        self._limits = limits

    def check(self, authorization: str | None, variant: str) -> None:
        """Admit the request or raise.

        Args:
            authorization: the ``Authorization`` header, if any.
            variant: Trustee's error name for this endpoint (``AdminAuthAccess``, or ``AdminAuthInitialization``
                on plugin paths).

        Raises:
            KbsApiError: missing, malformed, badly signed or expired token (``variant``, 401).
        """
        if self._key is None:
            return
        if authorization is None or not authorization.startswith("Bearer "):
            raise KbsApiError(variant, "Admin auth error: no Bearer token")
        untrusted_token = authorization[len("Bearer ") :].strip()
        if len(untrusted_token) > self._limits.kbs_max_token_bytes:
            raise KbsApiError(variant, "Admin auth error: token too large")
        try:
            _, claims = verify_eddsa(self._key, untrusted_token, "admin token")
        except SignatureError as e:
            raise KbsApiError(variant, f"Admin auth error: {e}") from e
        now = self._clock()
        leeway = self._limits.devkbs_admin_token_leeway_s
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or exp + leeway < now:
            raise KbsApiError(variant, "Admin auth error: token expired or without exp")
        if nbf is not None and (isinstance(nbf, bool) or not isinstance(nbf, int | float) or nbf - leeway > now):
            raise KbsApiError(variant, "Admin auth error: token not yet valid")
