"""RCAR ``/attest`` verification for the ``sample`` and ``sampledevice`` TEEs (kbs-protocol.md §3, §8, §9.1-§9.2).

Steps (trustee:kbs/src/attestation/backend.rs, attestation-service parse_runtime_data, deps/verifier/src/sample),
repeated as ``# (n)`` below:
    (1) ``runtime-data.nonce`` must equal the nonce stored with the session;
    (2) ``tee-pubkey`` is re-serialized with exactly the kbs-types members (extra members are dropped, as the
        Rust KBS's typed parse does, so a client that sends them fails the binding check);
    (3) primary runtime data ``{"tee-pubkey", "nonce", "additional-evidence"}`` -> RFC 8785 -> SHA-384 (SHA-512
        for ``se``) -> the expected report data;
    (4) the primary evidence, for the TEE named in ``/auth``, must carry exactly that report data;
    (5) each entry of the ``additional_evidence`` map is verified the same way against
        ``{"tee-pubkey", "nonce"}`` (no ``additional-evidence`` member);
    (6) init-data, if any, must be ``{"format": "toml", "body": TOML}``; its digest (the TOML's ``algorithm``
        over the raw body bytes) becomes the ``init_data`` claim (the sample TEE cannot measure it, so, as
        upstream, it is not compared with the evidence).

Invariants:
    * SECURITY: a result exists only if every step passed; every failure is a :class:`KbsApiError`
      ``AttestationError`` whose detail says which step failed (Trustee's detail, plus the reason).
    * Only ``sample`` (primary) and ``sampledevice`` (additional) evidence is understood; any other TEE is
      refused: this KBS never pretends to verify hardware evidence.
    * Pure: no IO.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tomllib
from dataclasses import dataclass, field
from typing import Final

from cocoguest.attestation.initdata import parse_initdata
from cocoguest.errors import CocoError, KbsApiError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.canonical_json import canonicalize
from cocoguest.limits import DEFAULT_LIMITS, Limits

ATTEST_FAILED: Final = "Attestation error: RCAR handshake Attest failed"
PRIMARY_TEES: Final = frozenset({"sample"})
DEVICE_TEES: Final = frozenset({"sampledevice"})
TEE_CLASS: Final = {"sample": "cpu", "sampledevice": "gpu"}
_EC_MEMBERS: Final = ("kty", "crv", "alg", "x", "y")
_RSA_MEMBERS: Final = ("kty", "alg", "n", "e")


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    """What one TEE's evidence proved: its name, class and the annotated evidence (policy input, EAR claim)."""

    tee: str
    tee_class: str
    annotated: dict[str, object]


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """A verified ``/attest``: the TEE key, and the evidence of the primary TEE first, then the devices."""

    tee_pubkey: dict[str, str]
    evidence: list[VerifiedEvidence] = field(default_factory=list)


def _fail(reason: str) -> KbsApiError:
    return KbsApiError("AttestationError", f"{ATTEST_FAILED}: {reason}")


def normalize_tee_pubkey(untrusted: object) -> dict[str, str]:
    """The kbs-types ``TeePubKey`` members of ``untrusted``, in their serialization order (# (2)).

    Raises:
        KbsApiError: not an EC or RSA key object with string members.
    """
    if not isinstance(untrusted, dict):
        raise _fail("tee-pubkey is not an object")
    kty = untrusted.get("kty")
    members = _EC_MEMBERS if kty == "EC" else _RSA_MEMBERS if kty == "RSA" else None
    if members is None:
        raise _fail(f"tee-pubkey kty {str(kty)[:16]!r} is not EC or RSA")
    key: dict[str, str] = {}
    for name in members:
        value = untrusted.get(name)
        if not isinstance(value, str):
            raise _fail(f"tee-pubkey has no string {name!r}")
        key[name] = value
    return key


def _hash_name(tee: str) -> str:
    return "sha512" if tee == "se" else "sha384"


def expected_report_data(tee: str, runtime_data: dict[str, object]) -> bytes:
    """H(JCS(runtime data)) with the KBS's hash for ``tee`` (# (3))."""
    return hashlib.new(_hash_name(tee), canonicalize(runtime_data)).digest()


def _sample_claims(tee: str, untrusted_evidence: object, expected: bytes) -> dict[str, object]:
    # (4) trustee deps/verifier/src/sample: {svn: string, report_data: string (default "")}; exact bytes.
    if not isinstance(untrusted_evidence, dict):
        raise _fail(f"{tee} evidence is not an object")
    svn, report_data = untrusted_evidence.get("svn"), untrusted_evidence.get("report_data", "")
    if not isinstance(svn, str) or not isinstance(report_data, str):
        raise _fail(f"{tee} evidence needs string 'svn' and 'report_data'")
    try:
        untrusted_report_data = base64.b64decode(report_data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _fail(f"{tee} report_data is not base64") from e
    if untrusted_report_data != expected:
        raise _fail(f"{tee}: REPORT_DATA is different from that in Sample Quote")
    return {"svn": svn, "report_data": report_data}


def _init_data(untrusted: object, limits: Limits) -> tuple[str, dict[str, object]] | None:
    # (6) init-data
    if untrusted is None:
        return None
    if (
        not isinstance(untrusted, dict)
        or untrusted.get("format") != "toml"
        or not isinstance(untrusted.get("body"), str)
    ):
        raise _fail('init-data must be {"format": "toml", "body": "<TOML>"}')
    body = untrusted["body"]
    assert isinstance(body, str)  # noqa: S101  (checked above)
    try:
        parsed = parse_initdata(body.encode("utf-8"), limits=limits)
    except CocoError as e:
        raise _fail(f"init-data: {e}") from e
    claims: dict[str, object] = {}
    for name, text in parsed.data.items():
        if name in ("aa.toml", "cdh.toml"):
            try:
                claims[name] = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise _fail(f"init-data {name} is not TOML") from e
        else:
            claims[name] = text
    return base64.b64encode(parsed.digest).decode("ascii"), claims


def verify_attestation(
    session_tee: str, session_nonce: str, untrusted_body: bytes, limits: Limits = DEFAULT_LIMITS
) -> AttestationResult:
    """Verify an ``/attest`` body for a session opened by ``/auth`` with ``session_tee`` and ``session_nonce``.

    Raises:
        KbsApiError: ``AttestationError`` naming the failed step.
    """
    try:
        attestation = load_object(untrusted_body, "attestation", limits=limits)
    except CocoError as e:
        raise _fail(f"body is not an Attestation: {e}") from e
    runtime = attestation.get("runtime-data")
    evidence = attestation.get("tee-evidence")
    if not isinstance(runtime, dict) or not isinstance(evidence, dict):
        raise _fail("body needs 'runtime-data' and 'tee-evidence' objects")
    # (1) the nonce
    if runtime.get("nonce") != session_nonce:
        raise _fail("runtime-data nonce is not the session's challenge nonce")
    tee_pubkey = normalize_tee_pubkey(runtime.get("tee-pubkey"))  # (2)
    if "primary_evidence" not in evidence or not isinstance(evidence.get("additional_evidence"), str):
        raise _fail("tee-evidence needs 'primary_evidence' and a string 'additional_evidence'")
    additional = evidence["additional_evidence"]
    assert isinstance(additional, str)  # noqa: S101  (checked above)
    if session_tee not in PRIMARY_TEES:
        raise _fail(f"no verifier for TEE {session_tee[:32]!r} (this dev KBS verifies only sample)")
    # (3) and (4): the binding
    primary_rd: dict[str, object] = {
        "tee-pubkey": tee_pubkey,
        "nonce": session_nonce,
        "additional-evidence": additional,
    }
    claims = _sample_claims(session_tee, evidence["primary_evidence"], expected_report_data(session_tee, primary_rd))
    init = _init_data(attestation.get("init-data"), limits)
    sample_claims: dict[str, object] = {
        "svn": claims["svn"],
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }
    annotated: dict[str, object] = {"report_data": claims["report_data"], "runtime_data_claims": primary_rd}
    if init is not None:
        annotated["init_data"], annotated["init_data_claims"] = init
    annotated[session_tee] = sample_claims
    result = AttestationResult(tee_pubkey, [VerifiedEvidence(session_tee, TEE_CLASS[session_tee], annotated)])
    # (5) device evidence
    if additional:
        try:
            devices = load_object(additional, "additional_evidence", limits=limits)
        except CocoError as e:
            raise _fail(f"additional_evidence is not a JSON object: {e}") from e
        device_rd: dict[str, object] = {"tee-pubkey": tee_pubkey, "nonce": session_nonce}
        for device_tee, device_evidence in devices.items():
            if device_tee not in DEVICE_TEES:
                raise _fail(f"no verifier for device TEE {device_tee[:32]!r}")
            device_claims = _sample_claims(device_tee, device_evidence, expected_report_data(device_tee, device_rd))
            device_annotated: dict[str, object] = {
                "report_data": device_claims["report_data"],
                "runtime_data_claims": device_rd,
                device_tee: {"svn": device_claims["svn"]},
            }
            result.evidence.append(VerifiedEvidence(device_tee, TEE_CLASS[device_tee], device_annotated))
    return result
