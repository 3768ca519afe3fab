"""The dev KBS: one HTTP request in, one response out (kbs-protocol.md §1-§6, §11, §12). No sockets here.

Routes (``/kbs/v0`` prefix; the first segment picks a built-in or the ``resource`` plugin):

=========================================  ========================================================
``POST auth``                              RCAR step 1: Request -> Challenge + ``kbs-session-id``
``POST attest``                            RCAR step 3: Attestation -> ``{"token"}`` (cookie)
``POST attestation-policy``                admin: ``{"policy_id", "policy": b64url-nopad(rego)}``
``POST|GET resource-policy``               admin: ``{"policy": b64url-nopad(rego)}`` / ``["resource-policy"]``
``POST reference-value``                   admin: RVPS message ``{"version","type":"sample","payload"}``
``GET reference-value/<id>``               admin: the reference value as JSON
``GET resource/<repo>/<type>/<tag>``       token (cookie or Bearer) + resource policy -> JWE
``POST|DELETE resource/<repo>/<type>/<tag>``  admin: store (raw body) / delete
=========================================  ========================================================

plus ``GET /healthz`` and ``GET /metrics``.

Invariants:
    * Every refusal is a :class:`KbsApiError` turned into Trustee's ``{"type", "detail"}`` with its status
      (404 only for an unknown path or plugin). An unexpected exception is answered as 401
      ``PluginInternalError`` and logged; it never stops the server.
    * SECURITY: a resource is released only to a token this KBS signed, unexpired, that the resource policy
      allows, and only encrypted to the TEE key inside that token's verified claims.
    * The GET path remembers, per token (by the SHA-256 of its exact bytes, bounded by
      ``Limits.devkbs_token_cache_entries``): its verified claims (:class:`EarBroker`; ``exp`` still checked
      each time), the policy's verdict (:class:`RegoPolicy`; forgotten with the policy) and its parsed TEE key.
      Each answer is still a new JWE: fresh CEK, IV and ephemeral key agreement.
    * SECURITY: admin endpoints pass :class:`AdminAuth` first, before their body is parsed.
    * Thread-safe: sessions, policies and counters have their own locks; handlers may run concurrently.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Final

from cocoguest.crypto.jws import Es256Key
from cocoguest.crypto.tee_jwe import TeeRecipient
from cocoguest.devkbs.admin_auth import AdminAuth
from cocoguest.devkbs.ear import AttestationPolicies, EarBroker, VerifiedToken, shipped_policy, tee_pubkey_of
from cocoguest.devkbs.lru import BoundedLru
from cocoguest.devkbs.rego import RegoPolicy
from cocoguest.devkbs.resource_policy import policy_data
from cocoguest.devkbs.sessions import SessionStore
from cocoguest.devkbs.storage import ResourceStore
from cocoguest.devkbs.verifier import verify_attestation
from cocoguest.errors import CocoError, KbsApiError, ProtocolError
from cocoguest.fileio import write_atomically
from cocoguest.jsonutil import load_object
from cocoguest.kbs.protocol import API_PREFIX, KBS_PROTOCOL_VERSION, SESSION_COOKIE
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

ERROR_TYPE_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors/"
RESOURCE_POLICY_ID: Final = "resource-policy"
KNOWN_TEES: Final = frozenset(
    {
        "az-snp-vtpm",
        "az-tdx-vtpm",
        "nvidia",
        "sgx",
        "snp",
        "tdx",
        "cca",
        "csv",
        "se",
        "hygondcu",
        "tpm",
        "sample",
        "sampledevice",
    }
)
AUTH_FAILED: Final = "Attestation error: RCAR handshake Auth failed"
_NONCE_BYTES: Final = 32
_JSON: Final = "application/json"


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    after_sent: Callable[[], None] | None = None
    """Idle-time work for the server to run once the answer is on its way (preparing the next answer)."""


@dataclass
class Metrics:
    """Request counters for ``/metrics`` (Prometheus text format)."""

    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, route: str, status: int) -> None:
        """One more ``route`` answered with ``status``."""
        with self.lock:
            self.counts[(route, status)] = self.counts.get((route, status), 0) + 1

    def render(self) -> bytes:
        """The counters as Prometheus text."""
        lines = [
            "# HELP kbs_http_requests_total KBS requests by route and status.",
            "# TYPE kbs_http_requests_total counter",
        ]
        with self.lock:
            items = sorted(self.counts.items())
        lines += [f'kbs_http_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in items]
        return ("\n".join(lines) + "\n").encode("ascii")


def error_response(error: KbsApiError) -> Response:
    """Trustee's error body for ``error``."""
    body = json.dumps({"type": ERROR_TYPE_PREFIX + error.variant, "detail": str(error)}, separators=(",", ":"))
    return Response(error.status, body.encode("utf-8"), _JSON)


def _b64url_nopad(value: object, what: str) -> bytes:
    # Trustee decodes uploads with URL_SAFE_NO_PAD: padded input fails (kbs-protocol.md §11.3).
    if not isinstance(value, str) or "=" in value or len(value) % 4 == 1:
        msg = f"{what} is not unpadded base64url"
        raise ProtocolError(msg)
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as e:
        msg = f"{what} is not unpadded base64url"
        raise ProtocolError(msg) from e


class KbsService:
    """The dev KBS state and request handling."""

    def __init__(
        self,
        *,
        resources: ResourceStore,
        policy_path: Path,
        admin: AdminAuth,
        token_key: Es256Key,
        token_lifetime_s: int,
        session_lifetime_s: float,
        extra_teekey_paths: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Load the resource policy at ``policy_path`` (written with Trustee's default if missing).

        Raises:
            KbsApiError: the policy file does not parse (``ParsePolicyError``).
            CocoError: the policy file cannot be read or written.
        """
        self._resources = resources
        self._policy_path = policy_path
        self._admin = admin
        self._limits = limits
        self._clock = clock
        self._extra_teekey_paths = extra_teekey_paths
        self.sessions = SessionStore(session_lifetime_s, clock=clock, limits=limits)
        self.attestation_policies = AttestationPolicies(limits)
        self.broker = EarBroker(token_key, token_lifetime_s, clock=clock, limits=limits)
        self.metrics = Metrics()
        self._recipients: BoundedLru[bytes, TeeRecipient] = BoundedLru(limits.devkbs_token_cache_entries)
        if not policy_path.exists():
            _write_atomic(policy_path, shipped_policy("default.rego").encode("utf-8"))
        try:
            text = policy_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            msg = f"resource policy {policy_path}: cannot be read"
            raise CocoError(msg) from e
        self._resource_policy = RegoPolicy(text, f"resource policy {policy_path}", limits=limits)

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request. ``headers`` has lower-case names. Never raises."""
        path, _, query = target.partition("?")
        route = "other"
        try:
            route, response = self._dispatch(method, path, query, headers, body)
        except KbsApiError as e:
            response = error_response(e)
        except Exception:
            _logger.exception("dev KBS: unexpected error on %s %s", method, path[:200])
            response = error_response(KbsApiError("PluginInternalError", "Plugin internal error: internal error"))
        self.metrics.count(route, response.status)
        return response

    def _dispatch(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, Response]:
        if path == "/healthz" and method == "GET":
            return "healthz", Response(200)
        if path == "/metrics":
            if method != "GET":
                return "metrics", Response(405)
            return "metrics", Response(200, self.metrics.render(), "text/plain; version=0.0.4")
        if not path.startswith(API_PREFIX + "/"):
            raise KbsApiError("InvalidRequestPath", f"Invalid request path {path[:200]}", status=404)
        first, _, rest = path[len(API_PREFIX) + 1 :].partition("/")
        auth = headers.get("authorization")
        if first == "auth" and method == "POST" and not rest:
            return "auth", self._auth(body)
        if first == "attest" and method == "POST" and not rest:
            return "attest", self._attest(headers.get("cookie"), body)
        if first == "attestation-policy" and method == "POST" and not rest:
            self._admin.check(auth, "AdminAuthAccess")
            return "attestation-policy", self._set_attestation_policy(body)
        if first == "resource-policy" and not rest and method in ("POST", "GET"):
            self._admin.check(auth, "AdminAuthAccess")
            if method == "GET":
                return "resource-policy", Response(200, json.dumps([RESOURCE_POLICY_ID]).encode(), _JSON)
            return "resource-policy", self._set_resource_policy(body)
        if first == "reference-value" and method == "POST" and not rest:
            self._admin.check(auth, "AdminAuthAccess")
            return "reference-value", self._set_reference_value(body)
        if first == "reference-value" and method == "GET" and rest:
            self._admin.check(auth, "AdminAuthAccess")
            value = self.attestation_policies.reference_value(rest)
            return "reference-value", Response(200, json.dumps(value).encode("utf-8"), _JSON)
        if first == "resource":
            return "resource", self._resource(method, rest, query, headers, body)
        if first in ("auth", "attest", "attestation-policy", "resource-policy", "reference-value"):
            raise KbsApiError("InvalidRequestPath", f"Invalid request path {method} {path[:200]}", status=404)
        raise KbsApiError("PluginNotFound", f"Plugin {first[:64]} not found", status=404)

    # ------------------------------------------------------------------ RCAR

    def _auth(self, body: bytes) -> Response:
        try:
            request = load_object(body, "Request", limits=self._limits)
        except CocoError as e:
            raise KbsApiError("AttestationError", f"{AUTH_FAILED}: {e}") from e
        version, tee = request.get("version"), request.get("tee")
        if not isinstance(version, str) or not isinstance(tee, str) or "extra-params" not in request:
            raise KbsApiError("AttestationError", f"{AUTH_FAILED}: Request needs version, tee and extra-params")
        if version != KBS_PROTOCOL_VERSION:
            msg = (
                f"{AUTH_FAILED}: KBS Client Protocol Version Mismatch: expect ={KBS_PROTOCOL_VERSION} "
                f"while the request is {version[:32]}"
            )
            raise KbsApiError("AttestationError", msg)
        if tee not in KNOWN_TEES:
            raise KbsApiError("AttestationError", f"{AUTH_FAILED}: unknown tee {tee[:32]!r}")
        nonce = base64.b64encode(os.urandom(_NONCE_BYTES)).decode("ascii")
        session = self.sessions.create(tee, nonce)
        challenge = json.dumps({"nonce": nonce, "extra-params": ""}, separators=(",", ":")).encode("ascii")
        return Response(200, challenge, _JSON, (("Set-Cookie", self._cookie(session.id, session.expires_at)),))

    @staticmethod
    def _cookie(session_id: str, expires_at: float) -> str:
        return f"{SESSION_COOKIE}={session_id}; Expires={formatdate(expires_at, usegmt=True)}"

    def _session_id(self, cookie_header: str | None) -> str | None:
        if not cookie_header or len(cookie_header) > self._limits.kbs_max_cookie_bytes:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except CookieError:
            return None
        morsel = jar.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None

    def _attest(self, cookie_header: str | None, body: bytes) -> Response:
        session_id = self._session_id(cookie_header)
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            raise KbsApiError("AttestationError", "Attestation error: RCAR handshake Attest failed: no live session")
        if session.token is None:
            result = verify_attestation(session.tee, session.nonce, body, self._limits)
            session = self.sessions.attested(session, self.broker.issue(result, self.attestation_policies))
        token = json.dumps({"token": session.token}, separators=(",", ":")).encode("ascii")
        return Response(200, token, _JSON, (("Set-Cookie", self._cookie(session.id, session.expires_at)),))

    # ------------------------------------------------------------------ resources

    def _token(self, headers: Mapping[str, str]) -> str:
        session_id = self._session_id(headers.get("cookie"))
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is not None and session.token is not None:
                return session.token
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer ") :].strip():
            return auth[len("Bearer ") :].strip()
        raise KbsApiError("TokenNotFound", "Attestation Token not found")

    def _resource(self, method: str, rest: str, query: str, headers: Mapping[str, str], body: bytes) -> Response:
        if method in ("POST", "DELETE"):
            # Trustee quirk: admin failures on plugin paths are AdminAuthInitialization (kbs-protocol.md §6).
            self._admin.check(headers.get("authorization"), "AdminAuthInitialization")
            if method == "POST":
                self._resources.write(rest, body)
            else:
                self._resources.delete(rest)
            return Response(200, b"", "text/xml")
        if method != "GET":
            raise KbsApiError("InvalidRequestPath", f"Invalid request path {method} resource", status=404)
        verified = self.broker.verify(self._token(headers))
        # The claims are a function of the verified token: its digest keys the verdict cache.
        self.authorize(verified.claims, f"resource/{rest}", query, claims_key=verified.digest)
        plaintext = self._resources.read(rest)
        try:
            recipient = self._recipient(verified)
            # The next GET with this token will find its key agreement made while the guest decrypts this one.
            return Response(200, recipient.encrypt(plaintext), _JSON, after_sent=recipient.prepare)
        except ProtocolError as e:
            raise KbsApiError("JweError", f"JWE error: {e}") from e

    def authorize(
        self, claims: dict[str, object], untrusted_path: str, query: str, *, claims_key: bytes | None = None
    ) -> None:
        """Ask the resource policy about a plugin call on ``/kbs/v0/<untrusted_path>?<query>`` for ``claims``.

        The step of ``GET /kbs/v0/resource/...`` that decides (Trustee's order: before the plugin looks at the
        path). ``claims_key``: see :meth:`RegoPolicy.query`.

        Raises:
            KbsApiError: ``PolicyDeny`` unless ``data.policy.allow`` is exactly ``true``; ``PolicyEngineError``.
        """
        # SECURITY: the policy decides on verified claims only (the caller verified the token).
        if not self._resource_policy.allows(claims, policy_data(untrusted_path, query), claims_key=claims_key):
            raise KbsApiError("PolicyDeny", "Access denied by policy")

    def _recipient(self, verified: VerifiedToken) -> TeeRecipient:
        """The parsed TEE key in ``verified``'s claims.

        Raises:
            KbsApiError: no usable key in the claims (``TokenVerifierError``).
            ProtocolError: the key is of an unsupported kind or malformed.
        """
        # SECURITY: the TEE key is a pure function of the verified claims (and the fixed extra_teekey_paths), and
        # the claims of the token whose bytes hash to ``digest``: the key parsed once for a digest is the key.
        recipient = self._recipients.get(verified.digest)
        if recipient is None:
            recipient = TeeRecipient(tee_pubkey_of(verified.claims, self._extra_teekey_paths))
            self._recipients.put(verified.digest, recipient)
        return recipient

    # ------------------------------------------------------------------ admin

    def _admin_document(self, body: bytes, what: str) -> dict[str, object]:
        try:
            return load_object(body, what, limits=self._limits)
        except CocoError as e:
            raise KbsApiError("SerdeError", f"Serde error: {e}") from e

    def _policy_text(self, document: dict[str, object], what: str) -> str:
        try:
            raw = _b64url_nopad(document.get("policy"), f"{what} 'policy'")
            if len(raw) > self._limits.devkbs_max_policy_bytes:
                msg = f"{what} is larger than {self._limits.devkbs_max_policy_bytes} bytes"
                raise ProtocolError(msg)
            return raw.decode("utf-8")
        except (ProtocolError, UnicodeDecodeError) as e:
            raise KbsApiError("SerdeError", f"Serde error: {e}") from e

    def _set_resource_policy(self, body: bytes) -> Response:
        text = self._policy_text(self._admin_document(body, "resource policy"), "resource policy")
        policy = RegoPolicy(text, "uploaded resource policy", limits=self._limits)
        _write_atomic(self._policy_path, text.encode("utf-8"))
        self._resource_policy = policy
        return Response(200)

    def _set_attestation_policy(self, body: bytes) -> Response:
        document = self._admin_document(body, "attestation policy")
        policy_id = document.get("policy_id")
        if not isinstance(policy_id, str) or not policy_id:
            raise KbsApiError("SerdeError", "Serde error: attestation policy needs a string policy_id")
        self.attestation_policies.set_policy(policy_id, self._policy_text(document, "attestation policy"))
        return Response(200)

    def _set_reference_value(self, body: bytes) -> Response:
        message = self._admin_document(body, "reference value message")
        if message.get("type") != "sample":
            raise KbsApiError("RvpsError", f"RVPS error: extractor {str(message.get('type'))[:32]!r} not supported")
        try:
            payload = base64.b64decode(str(message.get("payload", "")), validate=True)
            values = load_object(payload, "reference value payload", limits=self._limits)
        except (binascii.Error, ValueError, CocoError) as e:
            raise KbsApiError("RvpsError", f"RVPS error: payload is not base64 of a JSON object: {e}") from e
        for name, value in values.items():
            self.attestation_policies.set_reference_value(name, value)
        return Response(200)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    except OSError as e:
        msg = f"Policy engine error: writing {path}: {e.strerror}"
        raise KbsApiError("PolicyEngineError", msg) from e
