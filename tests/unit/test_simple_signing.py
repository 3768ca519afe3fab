"""Simple signing: the atomic signature payload, OpenPGP verification and signing (no gpg binary).

Vectors (tests/vectors/README.md, /work/shared/vectors/README.md): image-rs ``signature/signatures/signature-1``
and ``-2`` verify with ``signature/pubring.gpg`` (SHA-1 signatures by RSA key 7EFD4C926F9311E2, primary
2183156095E072685518F8A97EFD4C926F9311E2); ``simple-signing-scheme/signatures.tar`` holds a signature by the
key in ``pubkey.gpg`` (which expired in September 2022) and one by a key that is not there.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pysequoia
import pytest

from cocoguest.crypto.openpgp_sign import keyring_fingerprints, sign_message, verify_signed_message
from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, SignatureError
from cocoguest.signature.simple_signing import (
    GpgSimpleSigningVerifier,
    SimpleSigningPayload,
    sign_image,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs"
PUBRING = VECTORS / "signature" / "pubring.gpg"
ALPINE_SIGNATURES = [VECTORS / "signature" / "signatures" / f"signature-{n}" for n in (1, 2)]
ALPINE_DIGEST = Digest.parse("sha256:69704ef328d05a9f806b6b8502915e6a0a4faa4d72018dc42343f511490daf8a")
ALPINE_REFERENCE = "quay.io/ali_os_security/alpine:latest"
ALPINE_SIGNER = "2183156095E072685518F8A97EFD4C926F9311E2"
KATA_DIR = "kata-containers/confidential-containers@sha256="
KATA_GOOD = "febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b"
KATA_OTHER_KEY = "7250923ba3543110040462388756ef099331822c6172a050b12c7a38361ea46f"
KATA_SIGNER = "67B24AACC459679E0283D7EE58F6ED07EEA6B429"
KEY_VALID_AT = 1_634_200_000.0  # October 2021: the kata key (1 year validity from 2021-09-23) was valid
DIGEST = Digest.parse("sha256:" + "ab" * 32)


def _kata_signature(digest_hex: str) -> bytes:
    with tarfile.open(VECTORS / "simple-signing-scheme" / "signatures.tar") as tar:
        member = tar.extractfile(f"{KATA_DIR}{digest_hex}/signature-1")
        assert member is not None
        return member.read()


@pytest.fixture(scope="module")
def rsa_key() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("RSA signer <rsa@example.com>", cipher_suite=pysequoia.CipherSuite.RSA2k)


@pytest.fixture(scope="module")
def ed_key() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("Ed25519 signer <ed@example.com>", cipher_suite=pysequoia.CipherSuite.Cv25519)


@pytest.fixture(scope="module")
def p256_key() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("P-256 signer <p256@example.com>", cipher_suite=pysequoia.CipherSuite.P256)


def _public(tsk: pysequoia.Tsk) -> bytes:
    return bytes(tsk.extract_certificate())


def _fingerprint(tsk: pysequoia.Tsk) -> str:
    return str(tsk.extract_certificate().fingerprint).upper()


# --- vectors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALPINE_SIGNATURES, ids=lambda p: p.name)
def test_image_rs_vectors_verify(path: Path) -> None:
    signed = GpgSimpleSigningVerifier().verify(path.read_bytes(), [PUBRING.read_bytes()])
    assert signed.docker_reference == ALPINE_REFERENCE
    assert signed.manifest_digest == ALPINE_DIGEST
    assert signed.signer == ALPINE_SIGNER
    assert signed.kind == "simple"


def test_image_rs_vector_payload_reserializes_identically() -> None:
    payload = verify_signed_message(ALPINE_SIGNATURES[0].read_bytes(), [PUBRING.read_bytes()]).payload
    parsed = SimpleSigningPayload.parse(payload)
    assert parsed.creator == "atomic 2.0.0"
    assert parsed.timestamp == 1634533638
    assert parsed.to_json() == payload  # containers/image's serialisation: sorted keys, compact


def test_simple_signing_scheme_vector_verifies_while_the_key_was_valid() -> None:
    keyring = (VECTORS / "simple-signing-scheme" / "pubkey.gpg").read_bytes()
    signed = GpgSimpleSigningVerifier(clock=lambda: KEY_VALID_AT).verify(_kata_signature(KATA_GOOD), [keyring])
    assert signed.manifest_digest == Digest.parse(f"sha256:{KATA_GOOD}")
    assert signed.docker_reference == "quay.io/kata-containers/confidential-containers:signed"
    assert signed.signer == KATA_SIGNER


def test_expired_key_is_rejected() -> None:
    keyring = (VECTORS / "simple-signing-scheme" / "pubkey.gpg").read_bytes()
    with pytest.raises(SignatureError, match="expired"):
        GpgSimpleSigningVerifier().verify(_kata_signature(KATA_GOOD), [keyring])


def test_signature_by_a_key_not_in_the_keyring_is_rejected() -> None:
    keyring = (VECTORS / "simple-signing-scheme" / "pubkey.gpg").read_bytes()
    with pytest.raises(SignatureError, match=r"D8D28A0E43238696.*not in the trusted keyrings"):
        GpgSimpleSigningVerifier(clock=lambda: KEY_VALID_AT).verify(_kata_signature(KATA_OTHER_KEY), [keyring])


def test_vector_with_the_wrong_keyring_is_rejected() -> None:
    keyring = (VECTORS / "simple-signing-scheme" / "pubkey.gpg").read_bytes()
    with pytest.raises(SignatureError, match="7EFD4C926F9311E2"):
        GpgSimpleSigningVerifier(clock=lambda: KEY_VALID_AT).verify(ALPINE_SIGNATURES[0].read_bytes(), [keyring])


def test_keyring_fingerprints() -> None:
    assert ALPINE_SIGNER in keyring_fingerprints([PUBRING.read_bytes()])
    armored = pysequoia.armor(PUBRING.read_bytes(), pysequoia.ArmorKind.PublicKey)
    assert keyring_fingerprints([armored.encode()]) == keyring_fingerprints([PUBRING.read_bytes()])


def test_not_a_keyring_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="keyring"):
        GpgSimpleSigningVerifier().verify(ALPINE_SIGNATURES[0].read_bytes(), [b"not a keyring"])
    with pytest.raises(ConfigError, match="keyring"):
        GpgSimpleSigningVerifier().verify(ALPINE_SIGNATURES[0].read_bytes(), [ALPINE_SIGNATURES[0].read_bytes()])


# --- tampering (valid / appended / truncated / bit flipped) --------------------------------------------


def test_tampered_vector_is_rejected() -> None:
    good = ALPINE_SIGNATURES[0].read_bytes()
    keyring = [PUBRING.read_bytes()]
    verifier = GpgSimpleSigningVerifier()
    verifier.verify(good, keyring)
    for bad in (good + b"\x00", good[:-1], good[: len(good) // 2]):
        with pytest.raises(SignatureError):
            verifier.verify(bad, keyring)
    for offset in (len(good) - 3, len(good) // 2, 40):  # signature MPI, compressed literal data, header area
        flipped = bytearray(good)
        flipped[offset] ^= 0x01
        with pytest.raises(SignatureError):
            verifier.verify(bytes(flipped), keyring)


@pytest.mark.parametrize("key_name", ["rsa_key", "ed_key", "p256_key"])
def test_sign_and_verify_round_trip(key_name: str, request: pytest.FixtureRequest) -> None:
    tsk: pysequoia.Tsk = request.getfixturevalue(key_name)
    signature = sign_image(DIGEST, "registry.example.com/app:v1", key=bytes(tsk), timestamp=1_700_000_000)
    signed = GpgSimpleSigningVerifier().verify(signature, [_public(tsk)])
    assert signed.manifest_digest == DIGEST
    assert signed.docker_reference == "registry.example.com/app:v1"
    assert signed.signer == _fingerprint(tsk)
    # sequoia itself agrees that the signature is good
    checked = pysequoia.verify(signature, lambda _ids: [tsk.extract_certificate()])
    assert checked.bytes is not None
    payload = SimpleSigningPayload.parse(checked.bytes)
    assert payload.timestamp == 1_700_000_000
    assert payload.creator is not None
    assert payload.creator.startswith("cocoguest ")


def test_payload_tampering_is_detected(rsa_key: pysequoia.Tsk) -> None:
    payload = SimpleSigningPayload(DIGEST, "registry.example.com/app:v1").to_json()
    message = sign_message(payload, bytes(rsa_key))
    index = message.index(b"registry.example.com")
    tampered = message[:index] + b"R" + message[index + 1 :]
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_signed_message(tampered, [_public(rsa_key)])


def test_wrong_key_is_rejected(rsa_key: pysequoia.Tsk, ed_key: pysequoia.Tsk) -> None:
    signature = sign_image(DIGEST, "registry.example.com/app:v1", key=bytes(rsa_key))
    with pytest.raises(SignatureError, match="not in the trusted keyrings"):
        GpgSimpleSigningVerifier().verify(signature, [_public(ed_key)])
    # any of several keyrings may hold the signer
    signed = GpgSimpleSigningVerifier().verify(signature, [_public(ed_key), _public(rsa_key)])
    assert signed.signer == _fingerprint(rsa_key)


def test_revoked_key_is_rejected(ed_key: pysequoia.Tsk) -> None:
    cert = ed_key.extract_certificate()
    revocation = cert.revoke(ed_key.certifier())
    revoked = bytes(pysequoia.Cert.from_bytes(bytes(cert) + bytes(revocation)))  # sequoia puts it in place
    signature = sign_image(DIGEST, "registry.example.com/app:v1", key=bytes(ed_key))
    with pytest.raises(SignatureError, match="revoked"):
        GpgSimpleSigningVerifier().verify(signature, [revoked])


def test_key_expired_by_the_clock(ed_key: pysequoia.Tsk) -> None:
    signature = sign_image(DIGEST, "registry.example.com/app:v1", key=bytes(ed_key))
    far_future = 4_102_444_800.0  # 2100: Tsk.generate keys have no expiry, so still valid
    signed = GpgSimpleSigningVerifier(clock=lambda: far_future).verify(signature, [_public(ed_key)])
    assert signed.signer == _fingerprint(ed_key)
    expiring = pysequoia.Tsk.generate("Short <short@example.com>", validity_seconds=3600)
    signature = sign_image(DIGEST, "registry.example.com/app:v1", key=bytes(expiring))
    GpgSimpleSigningVerifier().verify(signature, [_public(expiring)])
    with pytest.raises(SignatureError, match="expired"):
        GpgSimpleSigningVerifier(clock=lambda: far_future).verify(signature, [_public(expiring)])


def test_signing_key_selection_and_passphrase(rsa_key: pysequoia.Tsk, ed_key: pysequoia.Tsk) -> None:
    both = bytes(rsa_key) + bytes(ed_key)
    with pytest.raises(ConfigError, match="holds 2"):
        sign_image(DIGEST, "r.example.com/a:b", key=both)
    signature = sign_image(DIGEST, "r.example.com/a:b", key=both, fingerprint=_fingerprint(ed_key))
    assert GpgSimpleSigningVerifier().verify(signature, [_public(ed_key)]).signer == _fingerprint(ed_key)
    with pytest.raises(ConfigError, match="no OpenPGP secret key with fingerprint"):
        sign_image(DIGEST, "r.example.com/a:b", key=both, fingerprint="00" * 20)
    with pytest.raises(ConfigError, match="cannot sign"):
        sign_image(DIGEST, "r.example.com/a:b", key=_public(ed_key))
    with pytest.raises(ConfigError, match="GnuPG home"):
        sign_image(DIGEST, "r.example.com/a:b")


def test_not_a_signed_message() -> None:
    keyring = [PUBRING.read_bytes()]
    for junk in (b"", b"hello", PUBRING.read_bytes()):
        with pytest.raises(SignatureError):
            verify_signed_message(junk, keyring)


# --- payload strictness ------------------------------------------------------------------------------


def _payload(**critical_overrides: object) -> dict[str, object]:
    critical: dict[str, object] = {
        "type": "atomic container signature",
        "image": {"docker-manifest-digest": str(DIGEST)},
        "identity": {"docker-reference": "example.com/a:b"},
    }
    critical.update(critical_overrides)
    return {"critical": critical, "optional": {"creator": "me", "timestamp": 5}}


def test_payload_round_trip() -> None:
    payload = SimpleSigningPayload(DIGEST, "example.com/ns/a:b", "me", 1_700_000_000)
    assert SimpleSigningPayload.parse(payload.to_json()) == payload
    minimal = SimpleSigningPayload(DIGEST, "example.com/a@" + str(DIGEST))
    assert SimpleSigningPayload.parse(minimal.to_json()) == minimal
    assert json.loads(minimal.to_json())["optional"] == {}


def test_payload_accepts_unknown_optional_fields_and_float_integral_timestamp() -> None:
    document = _payload()
    document["optional"] = {"timestamp": 5.0, "whatever": {"nested": [1, 2]}}
    parsed = SimpleSigningPayload.parse(json.dumps(document).encode())
    assert parsed.timestamp == 5
    assert parsed.creator is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (json.dumps(_payload(extra=1)), "unknown key 'extra'"),
        (json.dumps(_payload(type="atomic container signature v2")), "unrecognized signature type"),
        (json.dumps(_payload(image={"docker-manifest-digest": "sha256:abc"})), "invalid docker-manifest-digest"),
        (json.dumps(_payload(image={"docker-manifest-digest": str(DIGEST), "x": 1})), "unknown key 'x'"),
        (json.dumps(_payload(identity={})), "key 'docker-reference' missing"),
        (json.dumps(_payload(identity={"docker-reference": 5})), "string expected"),
        (json.dumps(_payload(image=[str(DIGEST)])), "JSON object expected"),
        (json.dumps({"critical": _payload()["critical"]}), "key 'optional' missing"),
        (json.dumps({**_payload(), "extra": {}}), "unknown key 'extra'"),
        (json.dumps({**_payload(), "optional": {"timestamp": 1.5}}), "not an integer"),
        (json.dumps({**_payload(), "optional": {"timestamp": True}}), "number expected"),
        (json.dumps({**_payload(), "optional": {"timestamp": "5"}}), "number expected"),
        (json.dumps({**_payload(), "optional": {"creator": 5}}), "string expected"),
        (json.dumps({**_payload(), "optional": []}), "JSON object expected"),
        (json.dumps(_payload()) + " {}", "not valid JSON"),
        ('{"critical": {}, "critical": {}, "optional": {}}', "duplicate member 'critical'"),
        (json.dumps({**_payload(), "optional": {"timestamp": float("nan")}}), "not valid JSON"),
        ("[]", "JSON object expected"),
    ],
)
def test_payload_strictness(raw: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        SimpleSigningPayload.parse(raw.encode())


def test_payload_must_be_utf8() -> None:
    with pytest.raises(SignatureError, match="not valid JSON"):
        SimpleSigningPayload.parse(json.dumps(_payload()).encode("utf-16"))


def test_signed_but_malformed_payload_names_the_signer(rsa_key: pysequoia.Tsk) -> None:
    message = sign_message(json.dumps(_payload(extra=1)).encode(), bytes(rsa_key))
    with pytest.raises(SignatureError, match=rf"signature by key {_fingerprint(rsa_key)}: .*unknown key .extra."):
        GpgSimpleSigningVerifier().verify(message, [_public(rsa_key)])
