"""The KBS protocol, RCAR 0.4.0, as a sans-IO state machine (kbs-protocol.md §2-§8, §15).

One :class:`RcarHandshake` drives one Request-Challenge-Attestation-Response exchange::

    handshake = RcarHandshake(tee="sample", tee_pubkey=key.public_jwk())
    body = handshake.auth_request()                      # POST /kbs/v0/auth
    report_data = handshake.receive_challenge(answer)    # 200 body of /auth
    body = handshake.attest_request(evidence)            # POST /kbs/v0/attest (with the /auth cookie)
    token = handshake.receive_token(answer)              # 200 body of /attest

Steps (kbs-protocol.md §8.1), repeated as ``# (n)`` in the code:
    (1) hash H = the challenge's ``extra-params.selected-hash-algorithm`` if it is a string, else SHA-384;
    (2) additional evidence = ``""`` (this client has no device attesters);
    (3) runtime data = ``{"tee-pubkey": K, "nonce": N, "additional-evidence": ""}``, canonicalized with RFC 8785;
    (4) report data = H(runtime data), raw digest bytes, handed to the attester; for ``se`` (IBM Secure
        Execution) instead: N is the attestation service's JSON ``SeAttestationRequest``, H(runtime data) goes
        into it as ``runtime_data_digest`` (standard padded base64), and that JSON text is handed to the attester,
        which binds the first 64 bytes of the digest as Ultravisor user data (Trustee selects SHA-512 for ``se``);
    (5) ``/attest`` carries ``runtime-data {nonce, tee-pubkey}`` (the same N and K; for ``se`` N is the KBS's
        JSON string verbatim, not the request with the digest), the evidence and init-data.

Invariants:
    * No IO: callers move bytes; this module builds and parses them.
    * SECURITY: the nonce and the TEE public key that go into ``/attest`` are exactly the ones hashed into the
      report data; neither can be changed after :meth:`RcarHandshake.receive_challenge`.
    * SECURITY (``se``): the digest handed to the attester is always the one computed here; a
      ``runtime_data_digest`` already present in the KBS's request is replaced, never used.
    * Every answer is parsed with :mod:`cocoguest.jsonutil` and checked member by member; every failure is a
      :class:`KbsProtocolError` naming the step (``auth``, ``attest``, ``resource``).
    * Values parsed from KBS answers are ``untrusted_`` until a check (the JWE tag, for resources) passes;
      the token's claims are read without a signature check and used only to schedule re-attestation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from cocoguest.errors import (
    AttestationError,
    CocoError,
    KbsDeniedError,
    KbsProtocolError,
    KbsStatusError,
    ProtocolError,
    ResourceNotFoundError,
)
from cocoguest.jsonutil import load_object, loads
from cocoguest.kbs.canonical_json import canonicalize
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits

KBS_PROTOCOL_VERSION: Final = "0.4.0"
"""Trustee requires exactly this version (kbs-protocol.md §7)."""
API_PREFIX: Final = "/kbs/v0"
SESSION_COOKIE: Final = "kbs-session-id"
SUPPORTED_HASH_ALGORITHMS: Final = ("sha256", "sha384", "sha512")
"""Sent in ``extra-params`` (upstream also lists ``sm3``, which Python's hashlib may lack)."""
DEFAULT_HASH_ALGORITHM: Final = "sha384"
SE_TEE: Final = "se"
"""The TEE whose challenge nonce is a JSON ``SeAttestationRequest`` (kbs-protocol.md §2, §8.1)."""
SE_DIGEST_MEMBER: Final = "runtime_data_digest"
RESOURCE_ALGS: Final = frozenset({"ECDH-ES+A256KW", "RSA-OAEP-256", "RSA1_5"})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_TYPE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_MAX_DETAIL_CHARS: Final = 200
_DENIED_STATUSES: Final = frozenset({401, 403})
_NOT_FOUND: Final = 404


class Step(StrEnum):
    """The request a message belongs to; error messages name it."""

    AUTH = "auth"
    ATTEST = "attest"
    RESOURCE = "resource"


class _State(Enum):
    NEW = "new"
    AUTH_SENT = "auth sent"
    CHALLENGED = "challenged"
    ATTEST_SENT = "attest sent"
    DONE = "done"


class HandshakeOrderError(RuntimeError):
    """A programmer error: RCAR methods called out of order."""


@dataclass(frozen=True, slots=True)
class AttestationToken:
    """An attestation token (JWT) as the KBS issued it.

    The claims are NOT verified here (the KBS verifies its own token); ``untrusted_exp`` only decides when to
    attest again.
    """

    raw: str
    untrusted_exp: float | None
    """``exp`` claim, seconds since the epoch; ``None`` when the token has none."""

    def __repr__(self) -> str:
        """Never the token itself (it is a bearer credential)."""
        return f"AttestationToken(exp={self.untrusted_exp})"


@dataclass(frozen=True, slots=True)
class JweResponse:
    """A parsed KBS resource answer (kbs-protocol.md §5); the ciphertext is not authenticated yet."""

    untrusted_protected: str
    """The raw ``protected`` member: the AAD."""
    alg: str
    untrusted_epk: tuple[str, bytes, bytes] | None
    """``(crv, x, y)`` for ECDH-ES."""
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


def _fail(step: Step, message: str) -> KbsProtocolError:
    return KbsProtocolError(f"KBS {step}: {message}", step=str(step))


def _b64url(value: object, member: str, step: Step) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2)."""
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise _fail(step, f"member {member!r} is not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _document(untrusted_body: bytes, step: Step, what: str, limits: Limits) -> dict[str, object]:
    try:
        return load_object(untrusted_body, f"KBS {step}: {what}", limits=limits)
    except ProtocolError as e:
        raise KbsProtocolError(str(e), step=str(step)) from e


def _hash(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def se_attester_input(untrusted_nonce: str, digest: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The SE attester's input: the challenge's ``SeAttestationRequest`` with ``runtime_data_digest`` = ``digest``.

    The request's other members are passed on unchanged for the attester to check; the digest is standard
    base64 with padding (serde_with ``Base64`` in upstream's ``SeAttestationRequest``).

    Raises:
        KbsProtocolError: the nonce is not a JSON object (names step ``auth``).
    """
    request = _document(untrusted_nonce.encode("utf-8"), Step.AUTH, "SE challenge nonce (SeAttestationRequest)", limits)
    # SECURITY: overwrite, never keep, a digest the KBS put there: the attester must bind our runtime data.
    request[SE_DIGEST_MEMBER] = base64.b64encode(digest).decode("ascii")
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class RcarHandshake:
    """One RCAR exchange; see the module docstring for the call order and the binding invariant."""

    __slots__ = (
        "_init_data_toml",
        "_limits",
        "_nonce",
        "_report_data",
        "_runtime_data",
        "_state",
        "_tee",
        "_tee_pubkey",
    )

    def __init__(
        self,
        tee: str,
        tee_pubkey: Mapping[str, str],
        *,
        init_data_toml: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Prepare a handshake.

        Args:
            tee: the TEE name on the wire (``sample``, ``tdx``, ``snp``, ...).
            tee_pubkey: the public JWK of this guest's TEE key, with exactly the kbs-types members.
            init_data_toml: the init-data TOML text to send, if any (kbs-protocol.md §8.2).
            limits: size limits.
        """
        self._tee = tee
        self._tee_pubkey = dict(tee_pubkey)
        self._init_data_toml = init_data_toml
        self._limits = limits
        self._state = _State.NEW
        self._nonce: str | None = None
        self._runtime_data: dict[str, object] | None = None
        self._report_data: bytes | None = None

    def _expect(self, state: _State, action: str) -> None:
        if self._state is not state:
            msg = f"RCAR: cannot {action} in state {self._state.value!r}"
            raise HandshakeOrderError(msg)

    def auth_request(self) -> bytes:
        """The body of ``POST /kbs/v0/auth`` (kbs-protocol.md §2)."""
        self._expect(_State.NEW, "send /auth")
        self._state = _State.AUTH_SENT
        request = {
            "version": KBS_PROTOCOL_VERSION,
            "tee": self._tee,
            "extra-params": {"supported-hash-algorithms": list(SUPPORTED_HASH_ALGORITHMS)},
        }
        return json.dumps(request, separators=(",", ":")).encode("utf-8")

    def receive_challenge(self, untrusted_body: bytes) -> bytes:
        """Parse the ``/auth`` answer; return the report data the attester must bind into the evidence.

        For ``se`` the report data is the JSON ``SeAttestationRequest`` with the digest injected (step (4)).

        Raises:
            KbsProtocolError: not a challenge, or for ``se`` a nonce that is not a JSON object (names step
                ``auth``).
        """
        self._expect(_State.AUTH_SENT, "receive the challenge")
        challenge = _document(untrusted_body, Step.AUTH, "challenge", self._limits)
        untrusted_nonce = challenge.get("nonce")
        if not isinstance(untrusted_nonce, str) or not untrusted_nonce:
            raise _fail(Step.AUTH, "challenge has no string 'nonce'")
        if "extra-params" not in challenge:
            raise _fail(Step.AUTH, "challenge has no 'extra-params'")
        # (1) the hash algorithm
        hash_name = DEFAULT_HASH_ALGORITHM
        extra = challenge["extra-params"]
        if isinstance(extra, dict):
            selected = extra.get("selected-hash-algorithm")
            if isinstance(selected, str):
                hash_name = selected.lower()
                if hash_name not in SUPPORTED_HASH_ALGORITHMS:
                    raise _fail(
                        Step.AUTH, f"challenge selects hash algorithm {selected[:32]!r}, which we did not offer"
                    )
        # (2)+(3) runtime data; (4) report data
        runtime_data: dict[str, object] = {"nonce": untrusted_nonce, "tee-pubkey": self._tee_pubkey}
        report_data = _hash(hash_name, canonicalize({**runtime_data, "additional-evidence": ""}))
        if self._tee == SE_TEE:
            report_data = se_attester_input(untrusted_nonce, report_data, self._limits)
        # SECURITY: set together, from the same N and K: /attest sends exactly what was hashed.
        self._nonce = untrusted_nonce
        self._runtime_data = runtime_data
        self._report_data = report_data
        self._state = _State.CHALLENGED
        return self._report_data

    @property
    def report_data(self) -> bytes:
        """The report data computed from the challenge (after :meth:`receive_challenge`)."""
        self._expect(_State.CHALLENGED, "read the report data")
        assert self._report_data is not None  # noqa: S101  (set with the state)
        return self._report_data

    def attest_request(self, evidence: bytes) -> bytes:
        """The body of ``POST /kbs/v0/attest`` (kbs-protocol.md §3) for ``evidence`` (the attester's JSON).

        Raises:
            AttestationError: the evidence is not JSON, or the request would exceed ``kbs_max_request_bytes``.
        """
        self._expect(_State.CHALLENGED, "send /attest")
        primary_evidence = loads(evidence, f"{self._tee} evidence", AttestationError, limits=self._limits)
        init_data = None if self._init_data_toml is None else {"format": "toml", "body": self._init_data_toml}
        # (5) the same nonce and key as in the report data
        body = {
            "init-data": init_data,
            "runtime-data": self._runtime_data,
            "tee-evidence": {"primary_evidence": primary_evidence, "additional_evidence": ""},
        }
        encoded = json.dumps(body, separators=(",", ":")).encode("utf-8")
        if len(encoded) > self._limits.kbs_max_request_bytes:
            msg = (
                f"KBS attest: the request with {self._tee} evidence is {len(encoded)} bytes, more than the limit of "
                f"{self._limits.kbs_max_request_bytes}"
            )
            raise AttestationError(msg)
        self._state = _State.ATTEST_SENT
        return encoded

    def receive_token(self, untrusted_body: bytes) -> AttestationToken:
        """Parse the ``/attest`` answer ``{"token": JWT}``.

        Raises:
            KbsProtocolError: not a token answer (names step ``attest``).
        """
        self._expect(_State.ATTEST_SENT, "receive the token")
        answer = _document(untrusted_body, Step.ATTEST, "token answer", self._limits)
        token = parse_token(answer.get("token"), Step.ATTEST, self._limits)
        self._state = _State.DONE
        return token


def parse_token(untrusted_token: object, step: Step = Step.ATTEST, limits: Limits = DEFAULT_LIMITS) -> AttestationToken:
    """Check that ``untrusted_token`` is a JWS compact JWT and read its ``exp`` (without verifying it).

    Raises:
        KbsProtocolError: not a string, too long, not three base64url parts, payload not a JSON object, or
            ``exp`` not a number.
    """
    if not isinstance(untrusted_token, str) or not untrusted_token:
        raise _fail(step, "answer has no string 'token'")
    if len(untrusted_token) > limits.kbs_max_token_bytes:
        raise _fail(step, f"token is {len(untrusted_token)} characters, more than {limits.kbs_max_token_bytes}")
    parts = untrusted_token.split(".")
    if len(parts) != 3:
        raise _fail(step, f"token is not a JWT ({len(parts)} dot-separated parts, not 3)")
    _b64url(parts[0], "token header", step)
    _b64url(parts[2], "token signature", step)
    claims = _document(_b64url(parts[1], "token payload", step), step, "token claims", limits)
    exp = claims.get("exp")
    if exp is None:
        return AttestationToken(untrusted_token, None)
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise _fail(step, "token claim 'exp' is not a number")
    return AttestationToken(untrusted_token, float(exp))


def parse_resource_response(untrusted_body: bytes, what: str, limits: Limits = DEFAULT_LIMITS) -> JweResponse:
    """Parse a resource answer: flattened JWE JSON with ``A256GCM`` content (kbs-protocol.md §5).

    Raises:
        KbsProtocolError: not that shape, an algorithm outside :data:`RESOURCE_ALGS`, or ``enc`` not A256GCM.
    """
    step = Step.RESOURCE
    jwe = _document(untrusted_body, step, f"{what}: JWE", limits)
    untrusted_protected = jwe.get("protected")
    header_bytes = _b64url(untrusted_protected, "protected", step)
    assert isinstance(untrusted_protected, str)  # noqa: S101  (checked by _b64url)
    header = _document(header_bytes, step, f"{what}: protected header", limits)
    alg, enc = header.get("alg"), header.get("enc")
    # SECURITY: a closed list of key management algorithms; never "dir" (a CEK chosen by the sender) or "none".
    if not isinstance(alg, str) or alg not in RESOURCE_ALGS:
        shown = alg[:32] if isinstance(alg, str) else alg
        raise _fail(step, f"{what}: JWE key management algorithm {shown!r} is not supported")
    if enc != "A256GCM":
        shown = enc[:32] if isinstance(enc, str) else enc
        raise _fail(step, f"{what}: JWE content encryption {shown!r} is not A256GCM")
    if "zip" in header:
        raise _fail(step, f"{what}: compressed JWE is not allowed")
    epk: tuple[str, bytes, bytes] | None = None
    if alg == "ECDH-ES+A256KW":
        raw_epk = header.get("epk")
        if not isinstance(raw_epk, dict) or raw_epk.get("kty") != "EC" or not isinstance(raw_epk.get("crv"), str):
            raise _fail(step, f"{what}: ECDH-ES JWE needs an EC 'epk' with a 'crv'")
        crv = raw_epk["crv"]
        assert isinstance(crv, str)  # noqa: S101  (checked above)
        epk = (crv, _b64url(raw_epk.get("x"), "epk.x", step), _b64url(raw_epk.get("y"), "epk.y", step))
    return JweResponse(
        untrusted_protected=untrusted_protected,
        alg=alg,
        untrusted_epk=epk,
        encrypted_key=_b64url(jwe.get("encrypted_key"), "encrypted_key", step),
        iv=_b64url(jwe.get("iv"), "iv", step),
        ciphertext=_b64url(jwe.get("ciphertext"), "ciphertext", step),
        tag=_b64url(jwe.get("tag"), "tag", step),
    )


def _printable(text: str, limit: int) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def parse_error_information(untrusted_body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str | None, str | None]:
    """``(type, detail)`` of a KBS error body ``{"type": URI, "detail": text}`` (kbs-protocol.md §6).

    ``type`` is the last segment of the URI (``PolicyDeny``); both are ``None`` when the body is not that shape,
    and both are shortened and made printable for one-line messages. Never raises.
    """
    try:
        document = load_object(untrusted_body, "KBS error", limits=limits)
    except CocoError:
        try:
            text = untrusted_body.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, None
        return None, _printable(text, _MAX_DETAIL_CHARS) if text else None
    untrusted_type, untrusted_detail = document.get("type"), document.get("detail")
    error_type = None
    if isinstance(untrusted_type, str):
        last = untrusted_type.rstrip("/").rsplit("/", 1)[-1]
        error_type = last if _TYPE_NAME.fullmatch(last) else _printable(last, 64)
    detail = _printable(untrusted_detail, _MAX_DETAIL_CHARS) if isinstance(untrusted_detail, str) else None
    return error_type, detail


def status_error(
    step: Step, status: int, untrusted_body: bytes, what: str, limits: Limits = DEFAULT_LIMITS
) -> CocoError:
    """The error for a non-200 answer: names the step, status and the KBS's error type and detail.

    401/403 are the KBS's refusals (:class:`KbsDeniedError`); 404 on a resource is
    :class:`ResourceNotFoundError`; anything else :class:`KbsStatusError`.
    """
    error_type, detail = parse_error_information(untrusted_body, limits)
    said = ": ".join(part for part in (error_type, detail) if part) or "no error information"
    message = f"KBS {step} {what}: HTTP {status} ({said})"
    if status in _DENIED_STATUSES:
        return KbsDeniedError(message, step=str(step), status=status, error_type=error_type, detail=detail)
    if status == _NOT_FOUND and step is Step.RESOURCE:
        return ResourceNotFoundError(message)
    return KbsStatusError(message, step=str(step), status=status, error_type=error_type, detail=detail)


def resource_path(uri: ResourceUri) -> str:
    """``/kbs/v0/resource/<repo>/<type>/<tag>[?query]`` for ``uri`` (its host and port are not used, §10)."""
    path = f"{API_PREFIX}/resource/{uri.path}"
    return f"{path}?{uri.query}" if uri.query is not None else path
