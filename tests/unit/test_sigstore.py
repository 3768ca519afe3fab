"""Sigstore (cosign) signatures: payload signatures, cosign keys, keyless Fulcio + Rekor checks, attachments.

Keys and a test PKI (root + intermediate CA, Fulcio-style leaf certificates, a Rekor key) are generated at test
time; the cosign key vectors come from image-rs (tests/vectors/image-rs/signature/cosign/).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoguest.crypto import sigstore_crypto as sc
from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, DigestMismatchError, ResourceNotFoundError, SignatureError
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor, ImageManifest
from cocoguest.registry import sigstore_attachments as sa
from cocoguest.registry.types import SigstoreSignature
from cocoguest.signature.policy.identity import MatchRepoDigestOrExact
from cocoguest.signature.policy.model import FulcioTrustRoot, SigstoreKeys, SigstoreSigned
from cocoguest.signature.sigstore import CosignVerifier, make_sigstore_payload, parse_sigstore_payload, sign_sigstore

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs" / "signature" / "cosign"
DIGEST = Digest.of_bytes(b"the signed manifest")
OTHER_DIGEST = Digest.of_bytes(b"another manifest")
REFERENCE = "registry.example/ns/app:v1"
REQUIREMENT = SigstoreSigned(MatchRepoDigestOrExact())
FAST_SCRYPT_N = 1024  # encrypted test keys: keep scrypt cheap (cosign uses 32768)
ISSUER = "https://oidc.example"
EMAIL = "signer@example.com"

# The public key of tests/vectors/.../cosign.key (empty passphrase). It is the cosign1.pub of image-rs before
# guest-components commit 6b16b852 ("fixup signature tests with new cosign key", 2026-04), which replaced
# cosign1.pub with the key of re-signed test images but kept the old cosign.key.
COSIGN_KEY_PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwQEjdCiL3ILUf07NDkDVhgKCj1C6
BsCfmM/zt1kNSj0/+nAqA+25XfyClYq2lJFJ6TkgCsf57cTCkXYDz9c+Yg==
-----END PUBLIC KEY-----
"""

verifier = CosignVerifier()


def _pub_pem(key: sc.SigstorePrivateKey) -> bytes:
    return key.public_key.pem


def _signed(key: sc.SigstorePrivateKey, payload: bytes) -> SigstoreSignature:
    return SigstoreSignature(payload, base64.b64encode(key.sign(payload)).decode())


def _keys(*public_pems: bytes, rekor: Sequence[bytes] = ()) -> SigstoreKeys:
    return SigstoreKeys(public_keys=tuple(public_pems), rekor_public_keys=tuple(rekor))


# --- payload signatures with keys ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"])
def signing_key(request: pytest.FixtureRequest) -> sc.SigstorePrivateKey:
    return sc.generate_sigstore_key(request.param)


def test_sign_and_verify_each_key_type(signing_key: sc.SigstorePrivateKey) -> None:
    encrypted = sc.encrypt_sigstore_private_key(signing_key, b"pw", scrypt_n=FAST_SCRYPT_N)
    payload, signature_b64 = sign_sigstore(DIGEST, REFERENCE, encrypted, b"pw", timestamp=1700000000)
    result = verifier.verify(SigstoreSignature(payload, signature_b64), REQUIREMENT, _keys(_pub_pem(signing_key)))
    assert result.manifest_digest == DIGEST
    assert result.docker_reference == REFERENCE
    assert result.kind == "sigstore"
    assert signing_key.public_key.fingerprint in result.signer
    claims = json.loads(payload)
    assert claims["critical"]["type"] == "cosign container image signature"
    assert claims["optional"] == {"creator": "cocoguest", "timestamp": 1700000000}


def test_wrong_key_rejected(signing_key: sc.SigstorePrivateKey) -> None:
    other = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(signing_key, make_sigstore_payload(DIGEST, REFERENCE))
    with pytest.raises(SignatureError, match="does not verify with ECDSA P-256 key"):
        verifier.verify(signature, REQUIREMENT, _keys(_pub_pem(other)))


def test_any_of_several_keys_accepts() -> None:
    good, other = sc.generate_sigstore_key("ed25519"), sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(good, make_sigstore_payload(DIGEST, REFERENCE))
    result = verifier.verify(signature, REQUIREMENT, _keys(_pub_pem(other), _pub_pem(good)))
    assert good.public_key.fingerprint in result.signer


def _mutations(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    return {"appended": data + b" ", "truncated": data[:-1], "bit flipped": bytes(flipped)}


@pytest.mark.parametrize("mutation", ["appended", "truncated", "bit flipped"])
def test_tampered_payload_rejected(signing_key: sc.SigstorePrivateKey, mutation: str) -> None:
    signature = _signed(signing_key, make_sigstore_payload(DIGEST, REFERENCE))
    tampered = replace(signature, payload=_mutations(signature.payload)[mutation])
    with pytest.raises(SignatureError):
        verifier.verify(tampered, REQUIREMENT, _keys(_pub_pem(signing_key)))


@pytest.mark.parametrize("mutation", ["appended", "truncated", "bit flipped"])
def test_tampered_signature_rejected(mutation: str) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    payload = make_sigstore_payload(DIGEST, REFERENCE)
    raw = _mutations(key.sign(payload))[mutation]
    with pytest.raises(SignatureError):
        verifier.verify(SigstoreSignature(payload, base64.b64encode(raw).decode()), REQUIREMENT, _keys(_pub_pem(key)))


def test_payload_of_another_digest_reports_that_digest() -> None:
    # A signature for OTHER_DIGEST copied to DIGEST's .sig tag verifies cryptographically; the payload says
    # OTHER_DIGEST, which the evaluator compares with the pulled manifest.
    key = sc.generate_sigstore_key("ecdsa-p256")
    result = verifier.verify(_signed(key, make_sigstore_payload(OTHER_DIGEST, REFERENCE)), REQUIREMENT,
                             _keys(_pub_pem(key)))  # fmt: skip
    assert result.manifest_digest == OTHER_DIGEST
    assert result.manifest_digest != DIGEST


def test_changing_the_digest_in_a_signed_payload_breaks_the_signature() -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(key, make_sigstore_payload(OTHER_DIGEST, REFERENCE, timestamp=1))
    moved = replace(signature, payload=make_sigstore_payload(DIGEST, REFERENCE, timestamp=1))
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(moved, REQUIREMENT, _keys(_pub_pem(key)))


def test_invalid_base64_signature_rejected() -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    with pytest.raises(SignatureError, match="invalid base64"):
        verifier.verify(SigstoreSignature(make_sigstore_payload(DIGEST, REFERENCE), "not base64!"), REQUIREMENT,
                        _keys(_pub_pem(key)))  # fmt: skip


def test_rsa_pss_not_accepted() -> None:
    key = sc.generate_sigstore_key("rsa-2048")
    assert isinstance(key.key, rsa.RSAPrivateKey)
    payload = make_sigstore_payload(DIGEST, REFERENCE)
    pss = key.key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(SignatureError):
        verifier.verify(SigstoreSignature(payload, base64.b64encode(pss).decode()), REQUIREMENT, _keys(_pub_pem(key)))


def test_ecdsa_hash_choice() -> None:
    payload = make_sigstore_payload(DIGEST, REFERENCE)
    p384 = sc.generate_sigstore_key("ecdsa-p384")
    p256 = sc.generate_sigstore_key("ecdsa-p256")
    assert isinstance(p384.key, ec.EllipticCurvePrivateKey)
    assert isinstance(p256.key, ec.EllipticCurvePrivateKey)
    # P-384 with SHA-384 (newer cosign's default) is accepted besides SHA-256 ...
    sig384 = p384.key.sign(payload, ec.ECDSA(hashes.SHA384()))
    verifier.verify(SigstoreSignature(payload, base64.b64encode(sig384).decode()), REQUIREMENT, _keys(_pub_pem(p384)))
    # ... but a P-256 key verifies with SHA-256 only.
    sig = p256.key.sign(payload, ec.ECDSA(hashes.SHA384()))
    with pytest.raises(SignatureError):
        verifier.verify(SigstoreSignature(payload, base64.b64encode(sig).decode()), REQUIREMENT, _keys(_pub_pem(p256)))


def test_bad_public_key_material_is_a_config_error() -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(key, make_sigstore_payload(DIGEST, REFERENCE))
    with pytest.raises(ConfigError, match="public key 1"):
        verifier.verify(signature, REQUIREMENT, _keys(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 - testing refusal
    small_pem = small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigError, match="RSA key of 1024 bits"):
        verifier.verify(signature, REQUIREMENT, _keys(small_pem))
    with pytest.raises(ConfigError, match="neither public keys nor a Fulcio"):
        verifier.verify(signature, REQUIREMENT, SigstoreKeys())


# --- payload format ------------------------------------------------------------------------------------


def _payload(critical: object, optional: object = None) -> bytes:
    return json.dumps({"critical": critical, "optional": optional}).encode()


def _critical(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "identity": {"docker-reference": REFERENCE},
        "image": {"docker-manifest-digest": str(DIGEST)},
        "type": "cosign container image signature",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_cosign_payload_with_null_optional_parses() -> None:
    parsed = parse_sigstore_payload(_payload(_critical()), "sig")
    assert (parsed.untrusted_manifest_digest, parsed.untrusted_docker_reference) == (DIGEST, REFERENCE)
    assert parsed.untrusted_creator is None


def test_optional_annotations_are_ignored() -> None:
    parsed = parse_sigstore_payload(_payload(_critical(), {"creator": "x", "timestamp": 5.0, "anything": [1]}), "s")
    assert (parsed.untrusted_creator, parsed.untrusted_timestamp) == ("x", 5)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_payload(_critical(type="atomic container signature")), "unrecognized signature type"),
        (_payload(_critical(extra="x")), "unknown member 'extra'"),
        (_payload(_critical(image=None)), "member 'image' missing"),
        (_payload(_critical(image={"docker-manifest-digest": "sha256:abc"})), "invalid docker-manifest-digest"),
        (_payload(_critical(identity={"docker-reference": 5})), "must be strings"),
        (_payload(_critical(), {"timestamp": 1.5}), "not an integer"),
        (_payload(_critical(), "text"), "object or null"),
        (b'{"critical":{},"critical":{},"optional":null}', "duplicate member"),
        (b'{"critical":' + json.dumps(_critical()).encode() + b',"optional":null,"x":1}', "unknown member 'x'"),
        (b"[]", "expected a JSON object"),
        (b'{"critical": NaN, "optional": null}', "NaN is not JSON"),
    ],
)
def test_malformed_payloads_rejected(payload: bytes, match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        parse_sigstore_payload(payload, "sig")


def test_malformed_payload_rejected_after_signature_check() -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(key, _payload(_critical(type="something else")))
    with pytest.raises(SignatureError, match="unrecognized signature type"):
        verifier.verify(signature, REQUIREMENT, _keys(_pub_pem(key)))


# --- cosign key vectors and the encrypted key format -----------------------------------------------------


def test_image_rs_cosign2_key_signs_for_cosign2_pub() -> None:
    payload, signature_b64 = sign_sigstore(DIGEST, REFERENCE, (VECTORS / "cosign2.key").read_bytes(), b"")
    pub = (VECTORS / "cosign2.pub").read_bytes()
    assert verifier.verify(SigstoreSignature(payload, signature_b64), REQUIREMENT, _keys(pub)).manifest_digest == DIGEST
    with pytest.raises(SignatureError):
        verifier.verify(SigstoreSignature(payload, signature_b64), REQUIREMENT, _keys(COSIGN_KEY_PUBLIC_PEM))


def test_image_rs_cosign_key_decrypts_with_the_empty_passphrase() -> None:
    key = sc.load_sigstore_private_key((VECTORS / "cosign.key").read_bytes(), None, "cosign.key")
    assert key.public_key.spki_der == sc.SigstorePublicKey.from_pem(COSIGN_KEY_PUBLIC_PEM, "old").spki_der
    payload, signature_b64 = sign_sigstore(DIGEST, REFERENCE, (VECTORS / "cosign.key").read_bytes(), b"")
    signature = SigstoreSignature(payload, signature_b64)
    verifier.verify(signature, REQUIREMENT, _keys(COSIGN_KEY_PUBLIC_PEM))
    # The current cosign1.pub is another key (see COSIGN_KEY_PUBLIC_PEM): a wrong key for this signature.
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(signature, REQUIREMENT, _keys((VECTORS / "cosign1.pub").read_bytes()))


def test_vector_key_wrong_passphrase() -> None:
    with pytest.raises(ConfigError, match="wrong passphrase"):
        sc.load_sigstore_private_key((VECTORS / "cosign.key").read_bytes(), b"not-it", "cosign.key")


@pytest.mark.parametrize("pem_type", [sc.ENCRYPTED_SIGSTORE_KEY_PEM, sc.ENCRYPTED_COSIGN_KEY_PEM])
def test_encrypted_key_round_trip(pem_type: str) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    pem = sc.encrypt_sigstore_private_key(key, b"secret", pem_type=pem_type, scrypt_n=FAST_SCRYPT_N)
    assert pem.startswith(f"-----BEGIN {pem_type}-----\n".encode())
    loaded = sc.load_sigstore_private_key(pem, b"secret", "k")
    assert loaded.public_key.spki_der == key.public_key.spki_der
    with pytest.raises(ConfigError, match="wrong passphrase"):
        sc.load_sigstore_private_key(pem, b"Secret", "k")


def _reencode(pem: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    (kind, body), = sc.pem_blocks(pem, "k")  # fmt: skip
    document = json.loads(body)
    change(document)
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    return f"-----BEGIN {kind}-----\n{encoded}\n-----END {kind}-----\n".encode()


def _set_path(path: Sequence[str], value: object) -> Callable[[dict[str, object]], None]:
    def change(document: dict[str, object]) -> None:
        target: dict[str, object] = document
        for name in path[:-1]:
            child = target[name]
            assert isinstance(child, dict)
            target = child
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("kdf", "params", "N"), 2**24, "too expensive"),
        (("kdf", "params", "N"), 1000, "invalid or too expensive"),
        (("kdf", "params", "p"), 64, "too expensive"),
        (("kdf", "name"), "pbkdf2", "unsupported key encryption"),
        (("cipher", "nonce"), base64.b64encode(b"short").decode(), "nonce of 5 bytes"),
        (("ciphertext",), "%%%", "invalid base64"),
        (("extra",), 1, "unknown member"),
    ],
)
def test_hostile_encrypted_key_rejected(path: Sequence[str], value: object, match: str) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    pem = _reencode(sc.encrypt_sigstore_private_key(key, b"", scrypt_n=FAST_SCRYPT_N), _set_path(path, value))
    with pytest.raises(ConfigError, match=match):
        sc.load_sigstore_private_key(pem, b"", "k")


def test_plain_pem_private_key_accepted() -> None:
    key = sc.generate_sigstore_key("ed25519")
    pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert sc.load_sigstore_private_key(pem, None, "k").public_key.spki_der == key.public_key.spki_der
    with pytest.raises(ConfigError, match="unexpected data outside PEM blocks"):
        sc.load_sigstore_private_key(b"garbage", None, "k")
    with pytest.raises(ConfigError, match="exactly one PEM block, found 2"):
        sc.load_sigstore_private_key(pem + pem, None, "k")


# --- canonical JSON (RFC 8785) --------------------------------------------------------------------------


def test_canonical_json() -> None:
    value = {"logIndex": 3, "body": 'a\u20ac\n\x01"\\', "logID": "x", "integratedTime": -2}
    assert (
        sc.canonical_json(value)
        == '{"body":"a€\\n\\u0001\\"\\\\","integratedTime":-2,"logID":"x","logIndex":3}'.encode()
    )
    for bad in ({"x": 1.5}, {"x": 2**60}, {"x": "\ud800"}):
        with pytest.raises(ValueError):  # noqa: PT011 - the message varies
            sc.canonical_json(bad)


# --- keyless: a test PKI and a test Rekor -----------------------------------------------------------------


NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
    *, path_length: int | None, eku: bool = False,
) -> x509.Certificate:  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if eku:  # Fulcio's intermediate carries EKU codeSigning
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass
class Pki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    rekor: sc.SigstorePrivateKey

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        return self.intermediate.public_bytes(serialization.Encoding.PEM) + self.root_pem

    def keys(self, *, issuer: str = ISSUER, email: str = EMAIL, rekor: Sequence[bytes] | None = None) -> SigstoreKeys:
        rekor_pems = (_pub_pem(self.rekor),) if rekor is None else tuple(rekor)
        return SigstoreKeys(fulcio=FulcioTrustRoot(self.root_pem, issuer, email), rekor_public_keys=rekor_pems)


def _make_pki() -> Pki:
    root_key, inter_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = _ca_cert("test fulcio root", root_key, "test fulcio root", root_key, path_length=1)
    inter = _ca_cert("test fulcio intermediate", inter_key, "test fulcio root", root_key, path_length=0, eku=True)
    return Pki(root, root_key, inter, inter_key, sc.generate_sigstore_key("ecdsa-p256", "test rekor"))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return _make_pki()


def _issuer_v2(issuer: str) -> bytes:
    raw = issuer.encode()
    return bytes([0x0C, len(raw)]) + raw


def _leaf(
    pki: Pki,
    key: sc.SigstorePrivateKey,
    *,
    emails: Sequence[str] = (EMAIL,),
    issuer_v1: str | None = ISSUER,
    issuer_v2: str | None = ISSUER,
    not_before: dt.datetime = NOW - dt.timedelta(minutes=1),
    lifetime: dt.timedelta = dt.timedelta(minutes=10),
    eku: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CODE_SIGNING,),
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    issuer_cert, issuer_key = signer or (pki.intermediate, pki.intermediate_key)
    public = key.key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))  # Fulcio leaves have an empty subject
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), critical=True)
    )
    if issuer_v1 is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(sc.OID_FULCIO_ISSUER_V1, issuer_v1.encode()), False)
    if issuer_v2 is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(sc.OID_FULCIO_ISSUER_V2, _issuer_v2(issuer_v2)), False
        )
    return builder.sign(issuer_key, hashes.SHA384())


def _keyless_signature(
    pki: Pki,
    *,
    leaf: x509.Certificate | None = None,
    key: sc.SigstorePrivateKey | None = None,
    integrated_time: dt.datetime = NOW,
    rekor: sc.SigstorePrivateKey | None = None,
    set_payload: bytes | None = None,
    chain: bytes | None = None,
) -> SigstoreSignature:
    key = key or sc.generate_sigstore_key("ecdsa-p256")
    leaf = leaf or _leaf(pki, key)
    payload = make_sigstore_payload(DIGEST, REFERENCE)
    raw_signature = key.sign(payload)
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    bundle = sc.make_rekor_set(
        rekor or pki.rekor,
        leaf_pem,
        raw_signature,
        set_payload if set_payload is not None else payload,
        integrated_time=int(integrated_time.timestamp()),
        log_index=42,
        log_id="c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d",
    )
    return SigstoreSignature(
        payload,
        base64.b64encode(raw_signature).decode(),
        certificate_pem=leaf_pem,
        chain_pem=pki.chain_pem if chain is None else chain,
        bundle_json=bundle,
    )


def test_keyless_accepted(pki: Pki) -> None:
    result = verifier.verify(_keyless_signature(pki), REQUIREMENT, pki.keys())
    assert result.manifest_digest == DIGEST
    assert EMAIL in result.signer
    assert ISSUER in result.signer


@pytest.mark.parametrize(("v1", "v2"), [(ISSUER, None), (None, ISSUER)])
def test_keyless_either_issuer_extension(pki: Pki, v1: str | None, v2: str | None) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _keyless_signature(pki, key=key, leaf=_leaf(pki, key, issuer_v1=v1, issuer_v2=v2))
    assert verifier.verify(signature, REQUIREMENT, pki.keys()).manifest_digest == DIGEST


def test_keyless_wrong_issuer_rejected(pki: Pki) -> None:
    with pytest.raises(SignatureError, match=re.escape("OIDC issuer is 'https://oidc.example'")):
        verifier.verify(_keyless_signature(pki), REQUIREMENT, pki.keys(issuer="https://accounts.example"))


def test_keyless_inconsistent_issuer_extensions_rejected(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(pki, key, issuer_v1=ISSUER, issuer_v2="https://evil.example")
    with pytest.raises(SignatureError, match="inconsistent OIDC issuer"):
        verifier.verify(_keyless_signature(pki, key=key, leaf=leaf), REQUIREMENT, pki.keys())


def test_keyless_missing_issuer_rejected(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(pki, key, issuer_v1=None, issuer_v2=None)
    with pytest.raises(SignatureError, match="no OIDC issuer extension"):
        verifier.verify(_keyless_signature(pki, key=key, leaf=leaf), REQUIREMENT, pki.keys())


def test_keyless_wrong_email_rejected(pki: Pki) -> None:
    with pytest.raises(SignatureError, match=re.escape("requires 'someone@example.com'")):
        verifier.verify(_keyless_signature(pki), REQUIREMENT, pki.keys(email="someone@example.com"))


def test_keyless_certificate_expired_at_integrated_time_rejected(pki: Pki) -> None:
    # Valid now, but Rekor recorded the signature after the certificate's ten minutes had passed.
    with pytest.raises(SignatureError, match="not valid at"):
        verifier.verify(_keyless_signature(pki, integrated_time=NOW + dt.timedelta(minutes=30)), REQUIREMENT,
                        pki.keys())  # fmt: skip


def test_keyless_certificate_expired_now_but_valid_at_integrated_time_accepted(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    then = NOW - dt.timedelta(hours=5)
    leaf = _leaf(pki, key, not_before=then)
    signature = _keyless_signature(pki, key=key, leaf=leaf, integrated_time=then + dt.timedelta(minutes=2))
    assert verifier.verify(signature, REQUIREMENT, pki.keys()).manifest_digest == DIGEST


def test_keyless_bad_set_signature_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki)
    assert signature.bundle_json is not None
    bundle = json.loads(signature.bundle_json)
    raw = bytearray(base64.b64decode(bundle["SignedEntryTimestamp"]))
    raw[-1] ^= 1
    bundle["SignedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureError, match="Rekor SET signature does not verify"):
        verifier.verify(replace(signature, bundle_json=json.dumps(bundle).encode()), REQUIREMENT, pki.keys())


def test_keyless_set_with_changed_integrated_time_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki)
    assert signature.bundle_json is not None
    bundle = json.loads(signature.bundle_json)
    bundle["Payload"]["integratedTime"] += 1
    with pytest.raises(SignatureError, match="Rekor SET signature does not verify"):
        verifier.verify(replace(signature, bundle_json=json.dumps(bundle).encode()), REQUIREMENT, pki.keys())


def test_keyless_set_by_another_rekor_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki, rekor=sc.generate_sigstore_key("ecdsa-p256"))
    with pytest.raises(SignatureError, match="Rekor SET signature does not verify"):
        verifier.verify(signature, REQUIREMENT, pki.keys())


def test_keyless_set_for_another_payload_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki, set_payload=b"something else")
    with pytest.raises(SignatureError, match="Rekor entry is for another payload"):
        verifier.verify(signature, REQUIREMENT, pki.keys())


def test_keyless_set_for_another_certificate_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki)
    other = _keyless_signature(pki)
    assert other.certificate_pem is not None
    # The attacker swaps in their own certificate; the SET still names the original one.
    with pytest.raises(SignatureError, match="another public key or certificate"):
        verifier.verify(replace(signature, certificate_pem=other.certificate_pem), REQUIREMENT, pki.keys())


@pytest.mark.parametrize("field", ["bundle_json", "certificate_pem"])
def test_keyless_missing_annotation_rejected(pki: Pki, field: str) -> None:
    full = _keyless_signature(pki)
    signature = replace(full, bundle_json=None) if field == "bundle_json" else replace(full, certificate_pem=None)
    with pytest.raises(SignatureError, match="annotation, which is missing"):
        verifier.verify(signature, REQUIREMENT, pki.keys())


def test_keyless_malformed_set_rejected(pki: Pki) -> None:
    signature = _keyless_signature(pki)
    for bundle in (b"{}", b"[1]", b'{"SignedEntryTimestamp":"","Payload":{"body":"","integratedTime":1.5,'
                   b'"logIndex":1,"logID":""}}'):  # fmt: skip
        with pytest.raises(SignatureError, match="malformed Rekor SET"):
            verifier.verify(replace(signature, bundle_json=bundle), REQUIREMENT, pki.keys())


def test_keyless_untrusted_ca_rejected(pki: Pki) -> None:
    other = _make_pki()
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(other, key)
    # The chain annotation brings the attacker's intermediate and root: roots in annotations are never trusted.
    signature = _keyless_signature(pki, key=key, leaf=leaf, chain=other.chain_pem)
    with pytest.raises(SignatureError, match="is not valid at"):
        verifier.verify(signature, REQUIREMENT, pki.keys())


def test_keyless_leaf_signed_by_root_directly_accepted_without_chain(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(pki, key, signer=(pki.root, pki.root_key))
    signature = _keyless_signature(pki, key=key, leaf=leaf, chain=b"")
    assert verifier.verify(signature, REQUIREMENT, pki.keys()).manifest_digest == DIGEST


def test_keyless_missing_intermediate_rejected(pki: Pki) -> None:
    with pytest.raises(SignatureError, match="is not valid at"):
        verifier.verify(_keyless_signature(pki, chain=b""), REQUIREMENT, pki.keys())


def test_keyless_non_code_signing_certificate_rejected(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(pki, key, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    with pytest.raises(SignatureError, match="is not valid at"):
        verifier.verify(_keyless_signature(pki, key=key, leaf=leaf), REQUIREMENT, pki.keys())


def test_keyless_payload_signed_by_another_key_rejected(pki: Pki) -> None:
    key = sc.generate_sigstore_key("ecdsa-p256")
    leaf = _leaf(pki, sc.generate_sigstore_key("ecdsa-p256"))  # certificate for some other key
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(_keyless_signature(pki, key=key, leaf=leaf), REQUIREMENT, pki.keys())


def test_keyless_without_rekor_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="requires a Rekor public key"):
        verifier.verify(_keyless_signature(pki), REQUIREMENT, pki.keys(rekor=()))


def test_rekor_key_must_be_ecdsa(pki: Pki) -> None:
    ed = sc.generate_sigstore_key("ed25519")
    with pytest.raises(ConfigError, match="must be ECDSA"):
        verifier.verify(_keyless_signature(pki), REQUIREMENT, pki.keys(rekor=[_pub_pem(ed)]))


# --- keys + Rekor ------------------------------------------------------------------------------------------


def _key_signature_with_set(key: sc.SigstorePrivateKey, rekor: sc.SigstorePrivateKey) -> SigstoreSignature:
    payload = make_sigstore_payload(DIGEST, REFERENCE)
    raw = key.sign(payload)
    bundle = sc.make_rekor_set(rekor, _pub_pem(key), raw, payload, integrated_time=1, log_index=1, log_id="x")
    return SigstoreSignature(payload, base64.b64encode(raw).decode(), bundle_json=bundle)


def test_key_with_rekor_set_accepted_and_required(pki: Pki) -> None:
    key, other = sc.generate_sigstore_key("ecdsa-p256"), sc.generate_sigstore_key("rsa-2048")
    signature = _key_signature_with_set(key, pki.rekor)
    keys = _keys(_pub_pem(other), _pub_pem(key), rekor=[_pub_pem(pki.rekor)])
    assert key.public_key.fingerprint in verifier.verify(signature, REQUIREMENT, keys).signer
    with pytest.raises(SignatureError, match=re.escape("no dev.sigstore.cosign/bundle")):
        verifier.verify(replace(signature, bundle_json=None), REQUIREMENT, keys)
    with pytest.raises(SignatureError, match="no public key matches the Rekor SET"):
        verifier.verify(signature, REQUIREMENT, _keys(_pub_pem(other), rekor=[_pub_pem(pki.rekor)]))


# --- property: no single-byte change of a signed payload verifies ------------------------------------------

_PROPERTY_KEY = sc.generate_sigstore_key("ecdsa-p256")
_PROPERTY_PAYLOAD = make_sigstore_payload(DIGEST, REFERENCE, timestamp=0)
_PROPERTY_SIGNATURE = base64.b64encode(_PROPERTY_KEY.sign(_PROPERTY_PAYLOAD)).decode()


@settings(max_examples=50, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(_PROPERTY_PAYLOAD) - 1), delta=st.integers(1, 255))
def test_any_byte_change_rejected(position: int, delta: int) -> None:
    tampered = bytearray(_PROPERTY_PAYLOAD)
    tampered[position] = (tampered[position] + delta) % 256
    with pytest.raises(SignatureError):
        verifier.verify(SigstoreSignature(bytes(tampered), _PROPERTY_SIGNATURE), REQUIREMENT,
                        _keys(_PROPERTY_KEY.public_key.pem))  # fmt: skip


# --- attachments against an in-memory registry repository ------------------------------------------------


class MemoryRepository:
    """One repository: blobs and tagged manifests; implements the ImageSource and destination calls used."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.blobs: dict[Digest, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}

    def describe(self) -> str:
        return f"memory:{self.tag}"

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        if self.tag not in self.manifests:
            raise ResourceNotFoundError(f"{self.tag}: manifest unknown")
        return self.manifests[self.tag]

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return io.BytesIO(self.blobs[desc.digest])

    def close(self) -> None:
        pass

    def has_blob(self, digest: Digest) -> bool:
        return digest in self.blobs

    def put_blob(self, stream: BinaryIO, digest: Digest, size: int) -> None:
        data = stream.read()
        assert Digest.of_bytes(data) == digest
        assert len(data) == size
        self.blobs[digest] = data

    def put_manifest(self, data: bytes, media_type: str, tag_or_digest: str | None = None) -> Digest:
        assert tag_or_digest is not None
        self.manifests[tag_or_digest] = (data, media_type)
        return Digest.of_bytes(data)


def test_signature_tag() -> None:
    assert sa.signature_tag(DIGEST) == f"sha256-{DIGEST.hex}.sig"


def test_missing_tag_means_no_signatures() -> None:
    assert sa.read_sigstore_signatures(MemoryRepository(sa.signature_tag(DIGEST))) == []


def test_push_then_read_round_trip() -> None:
    repo = MemoryRepository(sa.signature_tag(DIGEST))
    key = sc.generate_sigstore_key("ecdsa-p256")
    first = _signed(key, make_sigstore_payload(DIGEST, REFERENCE, timestamp=1))
    second = replace(_signed(key, make_sigstore_payload(DIGEST, REFERENCE, timestamp=2)), certificate_pem=b"C",
                     chain_pem=b"CH", bundle_json=b"{}")  # fmt: skip
    sa.push_sigstore_signature(repo, repo, DIGEST, first)
    sa.push_sigstore_signature(repo, repo, DIGEST, second)
    sa.push_sigstore_signature(repo, repo, DIGEST, first)  # already there: not added twice
    assert sa.read_sigstore_signatures(repo) == [first, second]
    data, media_type = repo.manifests[sa.signature_tag(DIGEST)]
    assert media_type == media_types.OCI_MANIFEST
    manifest = ImageManifest.from_bytes(data)
    assert manifest.config.media_type == media_types.OCI_CONFIG
    assert [layer.media_type for layer in manifest.layers] == [sa.SIMPLESIGNING_MEDIA_TYPE] * 2
    assert dict(manifest.layers[1].annotations) == {
        sa.SIGNATURE_ANNOTATION: second.signature_b64,
        sa.CERTIFICATE_ANNOTATION: "C",
        sa.CHAIN_ANNOTATION: "CH",
        sa.BUNDLE_ANNOTATION: "{}",
    }
    config = json.loads(repo.blobs[manifest.config.digest])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [str(layer.digest) for layer in manifest.layers]}


def test_other_layers_skipped_and_kept() -> None:
    repo = MemoryRepository(sa.signature_tag(DIGEST))
    attestation = b'{"predicate":{}}'
    repo.blobs[Digest.of_bytes(attestation)] = attestation
    config = b"{}"
    repo.blobs[Digest.of_bytes(config)] = config
    existing = ImageManifest(
        media_types.OCI_MANIFEST,
        Descriptor(media_types.OCI_CONFIG, Digest.of_bytes(config), len(config)),
        (Descriptor("application/vnd.dsse.envelope.v1+json", Digest.of_bytes(attestation), len(attestation)),),
    )
    repo.manifests[repo.tag] = (existing.to_bytes(), media_types.OCI_MANIFEST)
    assert sa.read_sigstore_signatures(repo) == []
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(key, make_sigstore_payload(DIGEST, REFERENCE))
    sa.push_sigstore_signature(repo, repo, DIGEST, signature)
    assert sa.read_sigstore_signatures(repo) == [signature]
    assert len(ImageManifest.from_bytes(repo.manifests[repo.tag][0]).layers) == 2


def test_payload_blob_digest_checked() -> None:
    repo = MemoryRepository(sa.signature_tag(DIGEST))
    key = sc.generate_sigstore_key("ecdsa-p256")
    signature = _signed(key, make_sigstore_payload(DIGEST, REFERENCE))
    sa.push_sigstore_signature(repo, repo, DIGEST, signature)
    payload_digest = Digest.of_bytes(signature.payload)
    repo.blobs[payload_digest] = signature.payload.replace(b"sha256", b"sha257")
    with pytest.raises(DigestMismatchError):
        sa.read_sigstore_signatures(repo)
