"""Policy evaluation with fake verifiers (real Protocol implementations deciding by simple rules).

Scenarios follow containers/image ``signature/policy_eval_test.go`` (IsRunningImageAllowed),
``policy_eval_signedby_test.go`` and ``policy_eval_sigstore_test.go``: accept-anything and reject scopes, good /
unsigned / wrong key / wrong identity / moved-digest signatures, one good signature among bad ones, ANDed
requirements, unsupported requirement kinds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, ResourceNotFoundError, SignatureError, TransportError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.registry.types import SigstoreSignature
from cocoguest.signature.policy import PolicyDecision
from cocoguest.signature.policy.evaluate import (
    ContainersPolicyEvaluator,
    SigstoreVerifier,
    SimpleSigningVerifier,
)
from cocoguest.signature.policy.identity import MatchRepoDigestOrExact
from cocoguest.signature.policy.model import Policy, SignedBy, SigstoreKeys, SigstoreSigned
from cocoguest.signature.policy.types import ImageUnderReview, SignedPayload

D1 = Digest.of_bytes(b"manifest one")
D2 = Digest.of_bytes(b"manifest two")
INDEX = Digest.of_bytes(b"the index")


# --- fakes ----------------------------------------------------------------------------------------------------


def fake_signature(key: str, digest: Digest, reference: str) -> bytes:
    """A stand-in for an OpenPGP signature: the fake verifier trusts it iff ``key`` is among the trusted keys."""
    return json.dumps({"key": key, "digest": str(digest), "ref": reference}).encode()


class FakeSimpleVerifier:
    """Accepts a fake signature if its ``key`` equals one of the trusted key blobs (each may hold several keys)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, tuple[bytes, ...]]] = []

    def verify(self, untrusted_signature: bytes, trusted_keys: Sequence[bytes]) -> SignedPayload:
        self.calls.append((untrusted_signature, tuple(trusted_keys)))
        try:
            claims = json.loads(untrusted_signature)
        except ValueError as e:
            msg = "malformed signature"
            raise SignatureError(msg) from e
        trusted = {k for blob in trusted_keys for k in blob.decode().split(",")}
        if claims["key"] not in trusted:
            msg = f"signed by another key (fingerprint {claims['key']})"
            raise SignatureError(msg)
        return SignedPayload(Digest.parse(claims["digest"]), claims["ref"], claims["key"], "simple")


class FakeSigstoreVerifier:
    """Accepts when the payload's key is among the PEM "keys", or, keyless, when the issuer and e-mail match."""

    def __init__(self) -> None:
        self.key_material: list[SigstoreKeys] = []

    def verify(
        self, signature: SigstoreSignature, requirement: SigstoreSigned, key_material: SigstoreKeys
    ) -> SignedPayload:
        self.key_material.append(key_material)
        claims = json.loads(signature.payload)
        if key_material.fulcio is not None:
            fulcio = key_material.fulcio
            ok = claims["key"] == f"{fulcio.oidc_issuer}|{fulcio.subject_email}|{fulcio.ca_pem.decode()}"
            ok = ok and bool(key_material.rekor_public_keys) and signature.bundle_json is not None
        else:
            ok = claims["key"].encode() in key_material.public_keys
        if not ok:
            msg = f"signature by {claims['key']} does not verify with the configured keys"
            raise SignatureError(msg)
        return SignedPayload(Digest.parse(claims["digest"]), claims["ref"], claims["key"], "sigstore")


def fake_cosign(key: str, digest: Digest, reference: str, *, bundle: bool = False) -> SigstoreSignature:
    payload = json.dumps({"key": key, "digest": str(digest), "ref": reference}).encode()
    return SigstoreSignature(payload, "c2ln", bundle_json=b"{}" if bundle else None)


@dataclass
class FakeResources:
    files: dict[str, bytes] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    def read(self, location: str) -> bytes:
        self.reads.append(location)
        if location not in self.files:
            msg = f"resource {location} not found"
            raise ResourceNotFoundError(msg)
        return self.files[location]


@dataclass
class FakeSignatures:
    simple: dict[Digest, list[bytes]] = field(default_factory=dict)
    sigstore: dict[Digest, list[SigstoreSignature]] = field(default_factory=dict)
    broken: bool = False

    def simple_signatures(self, manifest_digest: Digest) -> list[bytes]:
        if self.broken:
            msg = "lookaside unreachable"
            raise TransportError(msg)
        return list(self.simple.get(manifest_digest, []))

    def sigstore_signatures(self, manifest_digest: Digest) -> list[SigstoreSignature]:
        return list(self.sigstore.get(manifest_digest, []))


# The fakes must satisfy the Protocols the evaluator declares.
_SIMPLE: SimpleSigningVerifier = FakeSimpleVerifier()
_SIGSTORE: SigstoreVerifier = FakeSigstoreVerifier()


# --- helpers --------------------------------------------------------------------------------------------------

POLICY: dict[str, Any] = {
    "default": [{"type": "reject"}],
    "transports": {
        "docker": {
            "registry.test/open": [{"type": "insecureAcceptAnything"}],
            "registry.test/protected": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/k1"}],
            "registry.test/two-keys": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/k1"},
                {"type": "signedBy", "keyType": "GPGKeys", "keyData": base64.b64encode(b"K2").decode()},
            ],
            "registry.test/either-key": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/keys/k1", "/keys/k2"]}
            ],
            "registry.test/repo-only": [
                {
                    "type": "signedBy",
                    "keyType": "GPGKeys",
                    "keyPath": "/keys/k1",
                    "signedIdentity": {"type": "matchRepository"},
                }
            ],
            "mirror.test": [
                {
                    "type": "signedBy",
                    "keyType": "GPGKeys",
                    "keyPath": "/keys/k1",
                    "signedIdentity": {"type": "remapIdentity", "prefix": "mirror.test", "signedPrefix": "vendor.test"},
                }
            ],
            "registry.test/and": [{"type": "insecureAcceptAnything"}, {"type": "reject"}],
            "registry.test/baselayer": [{"type": "signedBaseLayer", "baseLayerIdentity": {"type": "matchRepository"}}],
            "registry.test/x509": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/keys/k1"}],
            "registry.test/missing-key": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/nope"}],
            "registry.test/empty-keys": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": []}],
            "registry.test/cosign": [{"type": "sigstoreSigned", "keyPath": "/keys/cosign.pub"}],
            "registry.test/cosign-data": [{"type": "sigstoreSigned", "keyDatas": [base64.b64encode(b"C2").decode()]}],
            "registry.test/keyless": [
                {
                    "type": "sigstoreSigned",
                    "fulcio": {"caPath": "/keys/fulcio.pem", "oidcIssuer": "https://issuer", "subjectEmail": "a@b"},
                    "rekorPublicKeyPath": "/keys/rekor.pub",
                }
            ],
            "registry.test/pki": [
                {"type": "sigstoreSigned", "pki": {"caRootsPath": "/keys/root.pem", "subjectEmail": "a@b"}}
            ],
        },
        "oci": {
            "/layouts/signed": [
                {
                    "type": "signedBy",
                    "keyType": "GPGKeys",
                    "keyPath": "/keys/k1",
                    "signedIdentity": {"type": "exactReference", "dockerReference": "registry.test/app:1"},
                }
            ],
            "/layouts/default-identity": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/k1"}],
            "/layouts": [{"type": "insecureAcceptAnything"}],
        },
    },
}

KEYS = {
    "/keys/k1": b"K1",
    "/keys/k2": b"K2",
    "/keys/cosign.pub": b"C1",
    "/keys/fulcio.pem": b"CA",
    "/keys/rekor.pub": b"REKOR",
}


@dataclass
class World:
    policy: Policy
    resources: FakeResources
    simple: FakeSimpleVerifier
    sigstore: FakeSigstoreVerifier

    def decide(
        self,
        reference: str,
        signatures: FakeSignatures | None = None,
        *,
        transport: str = "docker",
        manifest: Digest = D1,
        index: Digest | None = None,
        accept_index_signatures: bool = True,
    ) -> PolicyDecision:
        evaluator = ContainersPolicyEvaluator(
            self.policy, self.resources, self.simple, self.sigstore, accept_index_signatures=accept_index_signatures
        )
        image = ImageUnderReview(transport, reference, manifest, index)  # type: ignore[arg-type]
        return evaluator.decide(image, signatures or FakeSignatures())


@pytest.fixture
def world() -> World:
    raw = json.dumps(POLICY).encode()
    return World(
        Policy.from_json(raw, "policy.json"), FakeResources(dict(KEYS)), FakeSimpleVerifier(), FakeSigstoreVerifier()
    )


def signed(*signatures: tuple[Digest, bytes]) -> FakeSignatures:
    out = FakeSignatures()
    for digest, blob in signatures:
        out.simple.setdefault(digest, []).append(blob)
    return out


def only_reason(decision: PolicyDecision) -> str:
    assert not decision.accepted
    assert len(decision.reasons) == 1
    return decision.reasons[0]


# --- the four scenarios ----------------------------------------------------------------------------------------


def test_unsigned_image_from_unprotected_repository_accepted(world: World) -> None:
    decision = world.decide("registry.test/open/app:1")
    assert decision.accepted
    assert decision.details == {"scope": 'transports.docker["registry.test/open"]'}
    assert decision.policy_digest == world.policy.digest()
    assert "insecureAcceptAnything" in decision.reasons[0]


def test_unsigned_image_from_protected_repository_rejected(world: World) -> None:
    reason = only_reason(world.decide("registry.test/protected:1"))
    assert reason.startswith('transports.docker["registry.test/protected"][0] (signedBy): no signature')
    assert str(D1) in reason


def test_signed_image_accepted(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/protected:1")))
    decision = world.decide("registry.test/protected:1", sigs)
    assert decision.accepted, decision.reasons
    assert "by K1" in decision.reasons[0]
    assert world.resources.reads == ["/keys/k1"]
    assert world.simple.calls[0][1] == (b"K1",)


def test_image_signed_with_another_key_rejected(world: World) -> None:
    sigs = signed((D1, fake_signature("EVIL", D1, "registry.test/protected:1")))
    reason = only_reason(world.decide("registry.test/protected:1", sigs))
    assert "(signedBy)" in reason
    assert "signed by another key (fingerprint EVIL)" in reason


# --- signature checks -------------------------------------------------------------------------------------------


def test_identity_mismatch_rejected(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/protected:2")))
    reason = only_reason(world.decide("registry.test/protected:1", sigs))
    assert "identity mismatch: signature claims registry.test/protected:2, image is registry.test/protected:1" in reason
    assert "matchRepoDigestOrExact" in reason


def test_signature_moved_to_another_digest_rejected(world: World) -> None:
    # A valid signature for D2 copied next to D1.
    sigs = signed((D1, fake_signature("K1", D2, "registry.test/protected:1")))
    reason = only_reason(world.decide("registry.test/protected:1", sigs))
    assert f"signature for digest {D2}, image is {D1}" in reason


def test_one_good_signature_among_bad_ones_suffices(world: World) -> None:
    sigs = signed(
        (D1, b"garbage"),
        (D1, fake_signature("EVIL", D1, "registry.test/protected:1")),
        (D1, fake_signature("K1", D1, "registry.test/protected:1")),
    )
    decision = world.decide("registry.test/protected:1", sigs)
    assert decision.accepted
    assert "signature 3 of" in decision.reasons[0]


def test_all_rejections_are_listed(world: World) -> None:
    sigs = signed((D1, b"garbage"), (D1, fake_signature("EVIL", D1, "registry.test/protected:1")))
    reason = only_reason(world.decide("registry.test/protected:1", sigs))
    assert f"signature 1 of {D1}: malformed signature" in reason
    assert f"signature 2 of {D1}: signed by another key (fingerprint EVIL)" in reason


def test_many_rejections_are_capped(world: World) -> None:
    sigs = signed(*[(D1, b"garbage")] * (DEFAULT_LIMITS.max_policy_reasons_per_requirement + 3))
    reason = only_reason(world.decide("registry.test/protected:1", sigs))
    assert reason.endswith("; and 3 more")


def test_digest_reference_accepts_signature_for_a_tag(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/protected:v1")))
    assert world.decide(f"registry.test/protected@{D1}", sigs).accepted


def test_match_repository(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/repo-only:other")))
    assert world.decide("registry.test/repo-only:1", sigs).accepted
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/elsewhere:1")))
    assert "identity mismatch" in only_reason(world.decide("registry.test/repo-only:1", sigs))


def test_remap_identity(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "vendor.test/ns/app:1")))
    assert world.decide("mirror.test/ns/app:1", sigs).accepted
    sigs = signed((D1, fake_signature("K1", D1, "mirror.test/ns/app:1")))
    assert "identity mismatch" in only_reason(world.decide("mirror.test/ns/app:1", sigs))


def test_key_paths_any_key_accepted(world: World) -> None:
    sigs = signed((D1, fake_signature("K2", D1, "registry.test/either-key:1")))
    assert world.decide("registry.test/either-key:1", sigs).accepted
    assert world.resources.reads == ["/keys/k1", "/keys/k2"]
    assert world.simple.calls[0][1] == (b"K1", b"K2")


# --- multi-arch -----------------------------------------------------------------------------------------------


def test_instance_signature_accepted(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/protected:1")))
    assert world.decide("registry.test/protected:1", sigs, index=INDEX).accepted


def test_index_signature_accepted_by_default(world: World) -> None:
    sigs = signed((INDEX, fake_signature("K1", INDEX, "registry.test/protected:1")))
    assert world.decide("registry.test/protected:1", sigs, index=INDEX).accepted


def test_index_signature_ignored_in_containers_image_mode(world: World) -> None:
    sigs = signed((INDEX, fake_signature("K1", INDEX, "registry.test/protected:1")))
    decision = world.decide("registry.test/protected:1", sigs, index=INDEX, accept_index_signatures=False)
    assert "no signature" in only_reason(decision)


def test_instance_signature_stored_under_index_rejected(world: World) -> None:
    sigs = signed((INDEX, fake_signature("K1", D1, "registry.test/protected:1")))
    reason = only_reason(world.decide("registry.test/protected:1", sigs, index=INDEX))
    assert f"signature for digest {D1}, image is {INDEX}" in reason


# --- requirement kinds and combination --------------------------------------------------------------------------


def test_reject_and_default(world: World) -> None:
    reason = only_reason(world.decide("elsewhere.test/app:1"))
    assert reason.startswith("default[0] (reject): reject requirement")
    assert world.decide("elsewhere.test/app:1").details == {"scope": "default"}


def test_requirements_are_anded(world: World) -> None:
    reason = only_reason(world.decide("registry.test/and:1"))
    assert reason.startswith('transports.docker["registry.test/and"][1] (reject)')


def test_two_signed_by_requirements_need_both_keys(world: World) -> None:
    one = signed((D1, fake_signature("K1", D1, "registry.test/two-keys:1")))
    reason = only_reason(world.decide("registry.test/two-keys:1", one))
    assert reason.startswith('transports.docker["registry.test/two-keys"][1] (signedBy)')
    both = signed(
        (D1, fake_signature("K1", D1, "registry.test/two-keys:1")),
        (D1, fake_signature("K2", D1, "registry.test/two-keys:1")),
    )
    decision = world.decide("registry.test/two-keys:1", both)
    assert decision.accepted
    assert len(decision.reasons) == 2


def test_empty_requirement_list_rejects() -> None:
    policy = Policy((), {"docker": {"": ()}})
    evaluator = ContainersPolicyEvaluator(policy, FakeResources(), FakeSimpleVerifier(), FakeSigstoreVerifier())
    decision = evaluator.decide(ImageUnderReview("docker", "a.test/b:1", D1), FakeSignatures())
    assert only_reason(decision) == 'transports.docker[""]: empty requirement list'


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("registry.test/baselayer:1", "signedBaseLayer is not supported"),
        ("registry.test/x509:1", "keyType 'X509Certificates' is not supported"),
        ("registry.test/pki:1", "pki is not supported"),
        ("registry.test/empty-keys:1", "no public keys configured"),
    ],
)
def test_unsupported_requirements_reject(world: World, reference: str, fragment: str) -> None:
    sigs = signed((D1, fake_signature("K1", D1, reference)))
    assert fragment in only_reason(world.decide(reference, sigs))


def test_key_data_inline(world: World) -> None:
    policy = Policy((SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_data=b"K9"),), {})
    evaluator = ContainersPolicyEvaluator(policy, FakeResources(), FakeSimpleVerifier(), FakeSigstoreVerifier())
    sigs = signed((D1, fake_signature("K9", D1, "a.test/b:1")))
    assert evaluator.decide(ImageUnderReview("docker", "a.test/b:1", D1), sigs).accepted


# --- errors: config and IO raise, bad references reject ---------------------------------------------------------


def test_missing_key_file_is_a_config_error(world: World) -> None:
    with pytest.raises(ConfigError, match=r"keyPath /keys/nope not found"):
        world.decide("registry.test/missing-key:1")


def test_signature_source_failure_propagates(world: World) -> None:
    with pytest.raises(TransportError):
        world.decide("registry.test/protected:1", FakeSignatures(broken=True))


@pytest.mark.parametrize("reference", ["registry.test/protected:1@" + str(D1), "UPPER"])
def test_invalid_image_reference_rejected(world: World, reference: str) -> None:
    reason = only_reason(world.decide(reference))
    assert reason.startswith(f"image {reference}:")


# --- sigstore ---------------------------------------------------------------------------------------------------


def test_sigstore_key_accepted_and_rejected(world: World) -> None:
    good = FakeSignatures(sigstore={D1: [fake_cosign("C1", D1, "registry.test/cosign:1")]})
    assert world.decide("registry.test/cosign:1", good).accepted
    assert world.sigstore.key_material[-1] == SigstoreKeys(public_keys=(b"C1",))
    bad = FakeSignatures(sigstore={D1: [fake_cosign("C2", D1, "registry.test/cosign:1")]})
    reason = only_reason(world.decide("registry.test/cosign:1", bad))
    assert reason.startswith('transports.docker["registry.test/cosign"][0] (sigstoreSigned)')
    assert "does not verify" in reason


def test_sigstore_wrong_digest_and_identity(world: World) -> None:
    moved = FakeSignatures(sigstore={D1: [fake_cosign("C1", D2, "registry.test/cosign:1")]})
    assert f"signature for digest {D2}, image is {D1}" in only_reason(world.decide("registry.test/cosign:1", moved))
    other = FakeSignatures(sigstore={D1: [fake_cosign("C1", D1, "registry.test/cosign:2")]})
    assert "identity mismatch" in only_reason(world.decide("registry.test/cosign:1", other))


def test_sigstore_unsigned_and_simple_signatures_do_not_count(world: World) -> None:
    sigs = signed((D1, fake_signature("C1", D1, "registry.test/cosign:1")))
    assert "no signature" in only_reason(world.decide("registry.test/cosign:1", sigs))


def test_sigstore_key_datas(world: World) -> None:
    good = FakeSignatures(sigstore={D1: [fake_cosign("C2", D1, "registry.test/cosign-data:1")]})
    assert world.decide("registry.test/cosign-data:1", good).accepted


def test_sigstore_keyless_material(world: World) -> None:
    sig = fake_cosign("https://issuer|a@b|CA", D1, "registry.test/keyless:1", bundle=True)
    decision = world.decide("registry.test/keyless:1", FakeSignatures(sigstore={D1: [sig]}))
    assert decision.accepted, decision.reasons
    material = world.sigstore.key_material[-1]
    assert material.public_keys == ()
    assert material.fulcio is not None
    assert (material.fulcio.ca_pem, material.fulcio.oidc_issuer, material.fulcio.subject_email) == (
        b"CA",
        "https://issuer",
        "a@b",
    )
    assert material.rekor_public_keys == (b"REKOR",)
    unbundled = fake_cosign("https://issuer|a@b|CA", D1, "registry.test/keyless:1")
    assert not world.decide("registry.test/keyless:1", FakeSignatures(sigstore={D1: [unbundled]})).accepted


# --- oci transport --------------------------------------------------------------------------------------------


def test_oci_scope_and_exact_reference(world: World) -> None:
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/app:1")))
    decision = world.decide("/layouts/signed:v1", sigs, transport="oci")
    assert decision.accepted
    assert decision.details == {"scope": 'transports.oci["/layouts/signed"]'}


def test_oci_default_identity_needs_a_docker_reference(world: World) -> None:
    # containers/image: an oci layout has no docker reference, so matchRepoDigestOrExact never matches.
    sigs = signed((D1, fake_signature("K1", D1, "registry.test/app:1")))
    reason = only_reason(world.decide("/layouts/default-identity:v1", sigs, transport="oci"))
    assert "identity mismatch" in reason
    assert "(no docker reference)" in reason


def test_oci_parent_scope(world: World) -> None:
    decision = world.decide("/layouts/other/deeper:v1", transport="oci")
    assert decision.accepted
    assert decision.details == {"scope": 'transports.oci["/layouts"]'}
