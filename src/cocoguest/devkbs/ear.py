"""EAR attestation tokens (kbs-protocol.md §9.3): appraisal by attestation policy, ES256 signing, verification.

Appraisal: each verified evidence (cpu0, gpu0, ...) is the ``input`` of the attestation policy
``<policy_id>_<tee_class>`` (base id ``default``), whose ``trust_claims`` give the AR4SI trustworthiness vector;
the submodule's ``ear.status`` is the worst tier of its claims: 0 and 1 none, 2..31 affirming, 32..95 warning,
96..127 contraindicated.

Token: JWS compact, header ``{"alg":"ES256","typ":"JWT","jwk":{...,"alg":"ES256"}}``; claims ``eat_profile``,
``iat``, ``exp`` (= iat + lifetime), ``iss``, ``ear.verifier-id`` and ``submods``.

Invariants:
    * SECURITY: :meth:`EarBroker.verify` accepts only tokens signed by this broker's key, with an ``exp`` not
      older than the leeway; the header ``jwk`` is ignored (never trusted).
    * A token whose signature verified is remembered by the SHA-256 of its exact bytes (at most
      ``Limits.devkbs_token_cache_entries``, least recently used dropped): only the signature check is skipped
      for those very bytes; ``exp`` is checked against the clock on every call.
    * The TEE key for resource encryption is read from verified claims only (:func:`tee_pubkey_of`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Final

from cocoguest import __version__
from cocoguest.crypto.jws import Es256Key
from cocoguest.devkbs.lru import BoundedLru
from cocoguest.devkbs.rego import RegoPolicy
from cocoguest.devkbs.verifier import AttestationResult, VerifiedEvidence, normalize_tee_pubkey
from cocoguest.errors import KbsApiError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits

EAT_PROFILE: Final = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER: Final = "CoCo-Attestation-Service"
TRUST_CLAIMS: Final = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
TEE_KEY_PATHS: Final = (
    "/tdx/attester_runtime_data/tee-pubkey",
    "/tdx/attester_user_data/tee-pubkey",
    "/customized_claims/runtime_data/tee-pubkey",
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
    "/tee-pubkey",
)
"""Trustee's claim paths for the TEE key, after the configured ``extra_teekey_paths`` (kbs-protocol.md §4)."""
_TIERS: Final = ((96, "contraindicated"), (32, "warning"), (2, "affirming"))
_RANK: Final = {"none": 0, "affirming": 1, "warning": 2, "contraindicated": 3}
_DEFAULT_POLICY_BASE: Final = "default"


def shipped_policy(name: str) -> str:
    """The text of a Rego file shipped in ``cocoguest/devkbs/policies`` (``default.rego``, ...)."""
    return resources.files("cocoguest.devkbs").joinpath("policies", name).read_text(encoding="utf-8")


def status_of(vector: dict[str, int]) -> str:
    """The AR4SI tier of the worst claim in ``vector``."""
    worst = "none"
    for value in vector.values():
        tier = next((name for floor, name in _TIERS if value >= floor), "none")
        if _RANK[tier] > _RANK[worst]:
            worst = tier
    return worst


class AttestationPolicies:
    """Attestation policies by id (``default_cpu``, ``default_gpu`` shipped) and the reference values (RVPS)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """The shipped defaults and no reference values."""
        self._limits = limits
        self._lock = threading.Lock()
        self._policies = {
            "default_cpu": RegoPolicy(
                shipped_policy("default_cpu.rego"), "attestation policy default_cpu", limits=limits
            ),
            "default_gpu": RegoPolicy(
                shipped_policy("default_gpu.rego"), "attestation policy default_gpu", limits=limits
            ),
        }
        self._reference: dict[str, object] = {}

    def set_policy(self, policy_id: str, text: str) -> None:
        """Install (or replace) policy ``policy_id``.

        Raises:
            KbsApiError: the text does not parse (``ParsePolicyError``).
        """
        policy = RegoPolicy(text, f"attestation policy {policy_id[:64]}", limits=self._limits)
        with self._lock:
            self._policies[policy_id] = policy

    def set_reference_value(self, name: str, value: object) -> None:
        """Register reference value ``name`` (a list of accepted values or one value).

        Raises:
            KbsApiError: too many reference values (``RvpsError``).
        """
        with self._lock:
            if name not in self._reference and len(self._reference) >= self._limits.devkbs_max_reference_values:
                msg = f"RVPS error: more than {self._limits.devkbs_max_reference_values} reference values"
                raise KbsApiError("RvpsError", msg)
            self._reference[name] = value

    def reference_value(self, name: str) -> object:
        """The reference value ``name`` (``None`` if unknown)."""
        with self._lock:
            return self._reference.get(name)

    def appraise(self, evidence: VerifiedEvidence) -> tuple[dict[str, int], str, str]:
        """``(trust vector, status, policy id)`` of one evidence under ``default_<class>``.

        Raises:
            KbsApiError: no policy for the class, or the policy's ``trust_claims`` is not an object of integers
                (``AttestationError``).
        """
        policy_id = f"{_DEFAULT_POLICY_BASE}_{evidence.tee_class}"
        with self._lock:
            policy = self._policies.get(policy_id)
            data = {"reference": dict(self._reference)}
        if policy is None:
            msg = f"Attestation error: no attestation policy {policy_id}"
            raise KbsApiError("AttestationError", msg)
        claims = policy.query("trust_claims", evidence.annotated, data)
        if not isinstance(claims, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in claims.values()
        ):
            msg = f"Attestation error: policy {policy_id} trust_claims is not an object of integers"
            raise KbsApiError("AttestationError", msg)
        vector = {name: int(claims.get(name, 0)) for name in TRUST_CLAIMS}
        return vector, status_of(vector), _DEFAULT_POLICY_BASE


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose ES256 signature this broker verified: the SHA-256 of its bytes, its claims and ``exp``.

    ``claims`` is shared by every request that presents the same token: readers never mutate it.
    """

    digest: bytes
    claims: dict[str, object]
    exp: float


class EarBroker:
    """Issues and verifies this KBS's EAR tokens."""

    def __init__(
        self,
        key: Es256Key,
        lifetime_s: int,
        *,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """A broker signing with ``key``; tokens live ``lifetime_s`` seconds."""
        self._key = key
        self._lifetime_s = lifetime_s
        self._clock = clock
        self._limits = limits
        self._header = {"alg": "ES256", "typ": "JWT", "jwk": key.public_jwk()}
        self._verified: BoundedLru[bytes, VerifiedToken] = BoundedLru(limits.devkbs_token_cache_entries)

    def issue(self, result: AttestationResult, policies: AttestationPolicies) -> str:
        """The token for a verified attestation (appraised by ``policies``)."""
        submods: dict[str, object] = {}
        counters: dict[str, int] = {}
        for evidence in result.evidence:
            index = counters.get(evidence.tee_class, 0)
            counters[evidence.tee_class] = index + 1
            vector, status, policy_id = policies.appraise(evidence)
            submods[f"{evidence.tee_class}{index}"] = {
                "ear.status": status,
                "ear.trustworthiness-vector": vector,
                "ear.appraisal-policy-id": policy_id,
                "ear.veraison.annotated-evidence": evidence.annotated,
                "ear.trustee.identifiers": {"validated": {}},
            }
        now = int(self._clock())
        claims = {
            "eat_profile": EAT_PROFILE,
            "iat": now,
            "exp": now + self._lifetime_s,
            "iss": ISSUER,
            "ear.verifier-id": {
                "developer": "https://confidentialcontainers.org",
                "build": f"cocoguest-devkbs {__version__}",
            },
            "submods": submods,
        }
        return self._key.sign(self._header, claims)

    def verify(self, untrusted_token: str) -> VerifiedToken:
        """A token this broker issued and that has not expired: its digest, claims and ``exp``.

        Raises:
            KbsApiError: ``TokenVerifierError`` (bad size, signature, or ``exp``).
        """
        if len(untrusted_token) > self._limits.kbs_max_token_bytes:
            msg = "Token verifier error: token too large"
            raise KbsApiError("TokenVerifierError", msg)
        raw = untrusted_token.encode("utf-8")
        # SECURITY: the cache key is the SHA-256 of the exact token bytes, so a hit means this very token's
        # signature verified before (any other byte string, one flipped bit included, is verified afresh);
        # the cached claims are never mutated, and exp is checked on every call, cached or not.
        digest = hashlib.sha256(raw).digest()
        verified = self._verified.get(digest)
        if verified is None:
            try:
                _, claims = self._key.verify(untrusted_token, "attestation token")
            except SignatureError as e:
                raise KbsApiError("TokenVerifierError", f"Token verifier error: {e}") from e
            exp = claims.get("exp")
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                msg = "Token verifier error: token has no numeric exp"
                raise KbsApiError("TokenVerifierError", msg)
            verified = VerifiedToken(digest, claims, float(exp))
            self._verified.put(digest, verified)
        if verified.exp + self._limits.devkbs_token_leeway_s < self._clock():
            msg = "Token verifier error: token expired"
            raise KbsApiError("TokenVerifierError", msg)
        return verified


def _pointer(document: object, pointer: str) -> object:
    if not pointer.startswith("/"):
        return None
    node = document
    for raw in pointer[1:].split("/"):
        name = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def tee_pubkey_of(claims: dict[str, object], extra_paths: Iterable[str] = ()) -> dict[str, str]:
    """The TEE public key in verified ``claims``: the first of ``extra_paths`` then :data:`TEE_KEY_PATHS` found.

    Raises:
        KbsApiError: no usable key in the claims (``TokenVerifierError``).
    """
    for pointer in (*extra_paths, *TEE_KEY_PATHS):
        found = _pointer(claims, pointer)
        if found is not None:
            try:
                return normalize_tee_pubkey(found)
            except KbsApiError as e:
                raise KbsApiError("TokenVerifierError", f"Token verifier error: tee-pubkey at {pointer}") from e
    msg = "Token verifier error: no tee-pubkey in the token claims"
    raise KbsApiError("TokenVerifierError", msg)
