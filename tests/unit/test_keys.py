"""Key loading: every private/public key format skopeo takes, and clear errors for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk

from cocoguest.crypto.keys import load_certificates, load_private_key, load_public_key
from cocoguest.errors import ConfigError

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP384R1())
PEM, DER = ser.Encoding.PEM, ser.Encoding.DER
PKCS8, TRAD = ser.PrivateFormat.PKCS8, ser.PrivateFormat.TraditionalOpenSSL
NONE = ser.NoEncryption()
PW = ser.BestAvailableEncryption(b"hunter2")


@pytest.mark.parametrize(
    ("key", "encoding", "fmt"),
    [
        (RSA, PEM, PKCS8), (RSA, PEM, TRAD), (RSA, DER, PKCS8), (RSA, DER, TRAD),
        (EC, PEM, PKCS8), (EC, PEM, TRAD), (EC, DER, PKCS8), (EC, DER, TRAD),  # TRAD for EC = SEC1
    ],
)  # fmt: skip
def test_private_key_formats(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, encoding: ser.Encoding,
                             fmt: ser.PrivateFormat) -> None:  # fmt: skip
    loaded = load_private_key(key.private_bytes(encoding, fmt, NONE), "k")
    assert loaded is not None
    assert loaded.key.public_key().public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("fmt", [PKCS8, TRAD])  # encrypted PKCS#8 and legacy "Proc-Type: 4,ENCRYPTED" PEM
def test_encrypted_private_keys(fmt: ser.PrivateFormat) -> None:
    data = RSA.private_bytes(PEM, fmt, PW)
    loaded = load_private_key(data, "k.pem", b"hunter2")
    assert loaded is not None
    with pytest.raises(ConfigError, match=r"k\.pem: private key is encrypted; give its password"):
        load_private_key(data, "k.pem")
    with pytest.raises(ConfigError, match="wrong password"):
        load_private_key(data, "k.pem", b"wrong")


def test_password_for_unencrypted_key_is_harmless() -> None:
    assert load_private_key(RSA.private_bytes(PEM, PKCS8, NONE), "k", b"unused") is not None


def test_jwk_private_and_public() -> None:
    key = jwk.JWK.from_pyca(RSA)
    private = load_private_key(key.export_private().encode(), "k.jwk")
    assert private is not None
    public_obj = json.loads(key.export_public())
    public_obj["kid"] = "my-key"
    public = load_public_key(json.dumps(public_obj).encode(), "k.pub.jwk")
    assert public is not None
    assert public.kid == "my-key"
    assert load_private_key(json.dumps(public_obj).encode(), "k.pub.jwk") is None


@pytest.mark.parametrize("encoding", [PEM, DER])
def test_public_keys(encoding: ser.Encoding) -> None:
    for key in (RSA, EC):
        loaded = load_public_key(key.public_key().public_bytes(encoding, ser.PublicFormat.SubjectPublicKeyInfo), "p")
        assert loaded is not None
        assert loaded.key.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("data", [b"garbage", b"{}", b'{"kty": "oct"', b"\x30\x03\x02\x01\x00"])
def test_not_a_key_is_none(data: bytes) -> None:
    assert load_public_key(data, "x") is None
    assert load_private_key(data, "x") is None
    assert load_certificates(data, "x") is None


def test_truncated_pem_private_key_is_an_error() -> None:
    data = RSA.private_bytes(PEM, PKCS8, NONE)
    with pytest.raises(ConfigError, match=r"key file half\.pem: malformed PEM private key"):
        load_private_key(data[: len(data) // 2] + b"\n-----END PRIVATE KEY-----\n", "half.pem")


def test_unsupported_key_types() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ConfigError, match="not supported"):
        load_private_key(ed.private_bytes(PEM, PKCS8, NONE), "ed.pem")
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ConfigError, match="curve secp256k1 is not supported"):
        load_public_key(k1.public_key().public_bytes(PEM, ser.PublicFormat.SubjectPublicKeyInfo), "k1.pem")


def test_vector_files() -> None:
    vectors = Path(__file__).parents[1] / "vectors" / "ocicrypt-rs"
    for name in ("private_key.pem", "private_key.der", "private_key8.pem", "private_key8.der", "private_key_ec.der"):
        assert load_private_key((vectors / name).read_bytes(), name) is not None, name
    for name in ("public_key.pem", "public_key_ec.der"):
        assert load_public_key((vectors / name).read_bytes(), name) is not None, name
    assert load_certificates((vectors / "certificate.pem").read_bytes(), "certificate.pem")
