"""Tests of the JWE key wrapper (ocicrypt.md §5.1): format, round trips, whitelist, tampering, vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from cocoguest.crypto.keys import (
    PrivateKey,
    PrivateKeyMaterial,
    PublicKeyMaterial,
    load_private_key,
    load_public_key,
)
from cocoguest.errors import KeyUnwrapError
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.keywrap.jwe import JweUnwrapper, JweWrapper

VECTORS = Path(__file__).parents[1] / "vectors" / "ocicrypt-rs"
ANNOTATION = "org.opencontainers.image.enc.keys.jwe"
OPTIONS = b'{"symkey":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=","digest":"","cipheroptions":{}}'
KEY_KINDS = ["rsa2048", "rsa4096", "p256", "p384", "p521"]


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def protected_header(obj: dict[str, object]) -> dict[str, object]:
    value = obj["protected"]
    assert isinstance(value, str)
    header = json.loads(b64u_decode(value))
    assert isinstance(header, dict)
    return header


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "rsa4096": rsa.generate_private_key(65537, 4096),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
    }


def pub(key: PrivateKey, name: str = "pub.pem", kid: str | None = None) -> PublicKeyMaterial:
    return PublicKeyMaterial(key.public_key(), name, kid)


def priv(key: PrivateKey, name: str = "key.pem") -> PrivateKeyMaterial:
    return PrivateKeyMaterial(key, name)


def unwrap(entry: bytes, *private: PrivateKey) -> bytes:
    return JweUnwrapper([priv(k, f"key{i}.pem") for i, k in enumerate(private)]).unwrap(ANNOTATION, entry)


def jwcrypto_encrypt(plaintext: bytes, key: PrivateKey, alg: str, enc: str, *, compact: bool = False) -> bytes:
    token = jwcrypto_jwe.JWE(plaintext, protected=json.dumps({"alg": alg, "enc": enc}))
    token.allowed_algs = [alg, enc]
    token.add_recipient(jwcrypto_jwk.JWK.from_pyca(key.public_key()))
    return str(token.serialize(compact=compact)).encode()


def test_protocols_and_names(keys: dict[str, PrivateKey]) -> None:
    wrapper = JweWrapper([pub(keys["p256"])])
    unwrapper = JweUnwrapper([priv(keys["p256"])])
    assert isinstance(wrapper, KeyWrapper)
    assert isinstance(unwrapper, KeyUnwrapper)
    assert wrapper.annotation_key == ANNOTATION
    assert unwrapper.scheme == "jwe"
    assert unwrapper.handles(ANNOTATION)
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.pkcs7")
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe2")


def test_wrapper_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        JweWrapper([])


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_round_trip(keys: dict[str, PrivateKey], kind: str) -> None:
    entry = JweWrapper([pub(keys[kind])]).wrap(OPTIONS)
    assert unwrap(entry, keys[kind]) == OPTIONS


@pytest.mark.parametrize(
    ("kind", "alg", "crv"),
    [("rsa2048", "RSA-OAEP", None), ("p256", "ECDH-ES+A256KW", "P-256"), ("p521", "ECDH-ES+A256KW", "P-521")],
)
def test_one_recipient_is_flattened_like_go(keys: dict[str, PrivateKey], kind: str, alg: str, crv: str | None) -> None:
    obj = json.loads(JweWrapper([pub(keys[kind])]).wrap(OPTIONS))
    assert set(obj) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    raw = b64u_decode(obj["protected"])
    header = json.loads(raw)
    # go-jose marshals the header from a map: sorted keys, no blanks.
    assert raw == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert header["alg"] == alg
    assert header["enc"] == "A256GCM"
    assert len(b64u_decode(obj["iv"])) == 12
    assert len(b64u_decode(obj["tag"])) == 16
    if crv is None:
        assert set(header) == {"alg", "enc"}
        assert len(b64u_decode(obj["encrypted_key"])) == 256
    else:
        assert set(header) == {"alg", "enc", "epk"}
        assert set(header["epk"]) == {"kty", "crv", "x", "y"}
        assert header["epk"]["kty"] == "EC"
        assert header["epk"]["crv"] == crv
        size = {"P-256": 32, "P-521": 66}[crv]
        assert len(b64u_decode(header["epk"]["x"])) == size
        assert len(b64u_decode(header["epk"]["y"])) == size
        assert len(b64u_decode(obj["encrypted_key"])) == 40  # RFC 3394 wrap of a 32-byte CEK


def test_several_recipients_use_general_form_and_each_key_decrypts(keys: dict[str, PrivateKey]) -> None:
    entry = JweWrapper([pub(keys[k]) for k in KEY_KINDS]).wrap(OPTIONS)
    obj = json.loads(entry)
    assert set(obj) == {"protected", "recipients", "iv", "ciphertext", "tag"}
    assert b64u_decode(obj["protected"]) == b'{"enc":"A256GCM"}'
    algs = [r["header"]["alg"] for r in obj["recipients"]]
    assert algs == ["RSA-OAEP", "RSA-OAEP", "ECDH-ES+A256KW", "ECDH-ES+A256KW", "ECDH-ES+A256KW"]
    assert all(set(r) == {"header", "encrypted_key"} for r in obj["recipients"])
    for kind in KEY_KINDS:
        assert unwrap(entry, keys[kind]) == OPTIONS


def test_kid_is_copied(keys: dict[str, PrivateKey]) -> None:
    one = json.loads(JweWrapper([pub(keys["rsa2048"], kid="rsa-kid")]).wrap(OPTIONS))
    assert protected_header(one)["kid"] == "rsa-kid"
    two = json.loads(JweWrapper([pub(keys["rsa2048"]), pub(keys["p256"], kid="ec-kid")]).wrap(OPTIONS))
    assert "kid" not in two["recipients"][0]["header"]
    assert two["recipients"][1]["header"]["kid"] == "ec-kid"


def test_stray_top_level_encrypted_key_of_go_jose_is_ignored(keys: dict[str, PrivateKey]) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"]), pub(keys["p384"])]).wrap(OPTIONS))
    obj["encrypted_key"] = obj["recipients"][0]["encrypted_key"]  # what go-jose writes
    entry = json.dumps(obj).encode()
    assert unwrap(entry, keys["p384"]) == OPTIONS
    assert unwrap(entry, keys["rsa2048"]) == OPTIONS


@pytest.mark.parametrize(
    ("kind", "alg", "enc"),
    [
        ("rsa2048", "RSA-OAEP-256", "A256GCM"),
        ("rsa2048", "RSA-OAEP", "A128CBC-HS256"),
        ("p256", "ECDH-ES+A128KW", "A128GCM"),
        ("p384", "ECDH-ES+A192KW", "A256CBC-HS512"),
    ],
)
def test_decrypts_whitelisted_jwcrypto_jwe(keys: dict[str, PrivateKey], kind: str, alg: str, enc: str) -> None:
    assert unwrap(jwcrypto_encrypt(OPTIONS, keys[kind], alg, enc), keys[kind]) == OPTIONS


def test_decrypts_compact_serialization(keys: dict[str, PrivateKey]) -> None:
    entry = jwcrypto_encrypt(OPTIONS, keys["p256"], "ECDH-ES+A256KW", "A256GCM", compact=True)
    assert entry.count(b".") == 4
    assert unwrap(entry, keys["p256"]) == OPTIONS


def test_tries_every_key(keys: dict[str, PrivateKey]) -> None:
    entry = JweWrapper([pub(keys["p384"])]).wrap(OPTIONS)
    assert unwrap(entry, keys["rsa2048"], keys["p256"], keys["p384"]) == OPTIONS


def test_wrong_key_names_the_key_files(keys: dict[str, PrivateKey]) -> None:
    entry = JweWrapper([pub(keys["rsa2048"]), pub(keys["p256"])]).wrap(OPTIONS)
    other_rsa = rsa.generate_private_key(65537, 2048)
    other_ec = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyUnwrapError, match=r"none of the 2 private keys \(files: key0.pem, key1.pem\)"):
        unwrap(entry, other_rsa, other_ec)
    with pytest.raises(KeyUnwrapError, match="none of the 0 private keys"):
        unwrap(entry)


@pytest.mark.parametrize("member", ["ciphertext", "tag", "iv", "encrypted_key", "protected"])
def test_flipped_bit_is_rejected(keys: dict[str, PrivateKey], member: str) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"])]).wrap(OPTIONS))
    data = bytearray(b64u_decode(obj[member]))
    data[len(data) // 2] ^= 0x01
    obj[member] = b64u(bytes(data))
    with pytest.raises(KeyUnwrapError):
        unwrap(json.dumps(obj).encode(), keys["rsa2048"])


def test_flipped_bit_in_general_form_is_rejected(keys: dict[str, PrivateKey]) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"]), pub(keys["p256"])]).wrap(OPTIONS))
    tag = bytearray(b64u_decode(obj["tag"]))
    tag[0] ^= 0x80
    obj["tag"] = b64u(bytes(tag))
    with pytest.raises(KeyUnwrapError, match="none of the 2 private keys"):
        unwrap(json.dumps(obj).encode(), keys["rsa2048"], keys["p256"])


def test_rsa1_5_is_rejected_even_with_the_right_key(keys: dict[str, PrivateKey]) -> None:
    entry = jwcrypto_encrypt(OPTIONS, keys["rsa2048"], "RSA1_5", "A256GCM")
    with pytest.raises(KeyUnwrapError, match="key management algorithm 'RSA1_5' is not allowed"):
        unwrap(entry, keys["rsa2048"])


def test_dir_is_rejected(keys: dict[str, PrivateKey]) -> None:
    token = jwcrypto_jwe.JWE(OPTIONS, protected=json.dumps({"alg": "dir", "enc": "A256GCM"}))
    token.add_recipient(jwcrypto_jwk.JWK.generate(kty="oct", size=256))
    with pytest.raises(KeyUnwrapError, match="key management algorithm 'dir' is not allowed"):
        unwrap(token.serialize().encode(), keys["rsa2048"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alg": "none"}, "key management algorithm 'none' is not allowed"),
        ({"alg": "PBES2-HS256+A128KW"}, "key management algorithm 'PBES2-HS256\\+A128KW' is not allowed"),
        ({"enc": "A256CTR"}, "content encryption algorithm 'A256CTR' is not allowed"),
        ({"zip": "DEF"}, "compressed JWE"),
    ],
)
def test_other_disallowed_headers_are_rejected(
    keys: dict[str, PrivateKey], change: dict[str, str], message: str
) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"])]).wrap(OPTIONS))
    obj["protected"] = b64u(json.dumps(protected_header(obj) | change).encode())
    with pytest.raises(KeyUnwrapError, match=message):
        unwrap(json.dumps(obj).encode(), keys["rsa2048"])


def test_one_disallowed_recipient_rejects_the_whole_jwe(keys: dict[str, PrivateKey]) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"]), pub(keys["p256"])]).wrap(OPTIONS))
    obj["recipients"][1]["header"]["alg"] = "RSA1_5"
    with pytest.raises(KeyUnwrapError, match="'RSA1_5' is not allowed"):
        unwrap(json.dumps(obj).encode(), keys["rsa2048"])


@pytest.mark.parametrize(
    "entry",
    [
        b"\xff\xfe",
        b"not a jwe",
        b"a.b.c.d",
        b"!!.a.b.c.d",
        b"[]",
        b"{}",
        b'{"protected":"e30","iv":"","ciphertext":"","tag":""',
        b'{"protected":"!!","iv":"","ciphertext":"","tag":""}',
        b'{"protected":"W10","iv":"","ciphertext":"","tag":""}',
        b'{"protected":"e30","recipients":[],"iv":"","ciphertext":"","tag":""}',
        b'{"protected":"e30","recipients":[1],"iv":"","ciphertext":"","tag":""}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_entry(keys: dict[str, PrivateKey], entry: bytes) -> None:
    with pytest.raises(KeyUnwrapError, match="malformed JWE"):
        unwrap(entry, keys["rsa2048"])


def test_duplicate_header_parameter_is_malformed(keys: dict[str, PrivateKey]) -> None:
    obj = json.loads(JweWrapper([pub(keys["rsa2048"]), pub(keys["p256"])]).wrap(OPTIONS))
    obj["recipients"][0]["header"]["enc"] = "A128GCM"
    with pytest.raises(KeyUnwrapError, match="malformed JWE: header parameter 'enc' appears twice"):
        unwrap(json.dumps(obj).encode(), keys["rsa2048"])


def test_too_many_recipients_is_malformed(keys: dict[str, PrivateKey]) -> None:
    obj = json.loads(JweWrapper([pub(keys["p256"]), pub(keys["p256"])]).wrap(OPTIONS))
    obj["recipients"] *= 100
    with pytest.raises(KeyUnwrapError, match="malformed JWE: 200 recipients"):
        unwrap(json.dumps(obj).encode(), keys["p256"])


def test_unwrap_refuses_other_annotations(keys: dict[str, PrivateKey]) -> None:
    with pytest.raises(ValueError, match="cannot unwrap"):
        JweUnwrapper([priv(keys["p256"])]).unwrap("org.opencontainers.image.enc.keys.pgp", b"{}")


@pytest.mark.parametrize(
    ("public_file", "private_file"),
    [
        ("RSA_public.jwk", "RSA_private.jwk"),
        ("public_key.pem", "private_key.pem"),
        ("public_key_ec.der", "private_key_ec.der"),
    ],
)
def test_vector_key_files(public_file: str, private_file: str) -> None:
    public = load_public_key((VECTORS / public_file).read_bytes(), public_file)
    private = load_private_key((VECTORS / private_file).read_bytes(), private_file)
    assert public is not None
    assert private is not None
    entry = JweWrapper([public]).wrap(OPTIONS)
    assert JweUnwrapper([private]).unwrap(ANNOTATION, entry) == OPTIONS
    expected_alg = "ECDH-ES+A256KW" if public_file.endswith("ec.der") else "RSA-OAEP"
    assert protected_header(json.loads(entry))["alg"] == expected_alg


def test_vector_keys_cross_format() -> None:
    # The JWK pair and the PEM pair are different keys: each private key opens only its own entry.
    jwk_pub = load_public_key((VECTORS / "RSA_public.jwk").read_bytes(), "RSA_public.jwk")
    pem_priv = load_private_key((VECTORS / "private_key.pem").read_bytes(), "private_key.pem")
    assert jwk_pub is not None
    assert pem_priv is not None
    if jwk_pub.key.public_numbers() == pem_priv.key.public_key().public_numbers():  # pragma: no cover
        pytest.skip("vector JWK and PEM are the same key")
    entry = JweWrapper([jwk_pub]).wrap(OPTIONS)
    with pytest.raises(KeyUnwrapError, match=r"files: private_key.pem"):
        JweUnwrapper([pem_priv]).unwrap(ANNOTATION, entry)


# ------------------------------------------------------------------ interop with jwcrypto used directly


@pytest.mark.interop
@pytest.mark.parametrize(("kind", "alg"), [("rsa2048", "RSA-OAEP"), ("p256", "ECDH-ES+A256KW")])
def test_interop_flattened_jwe_made_by_jwcrypto(keys: dict[str, PrivateKey], kind: str, alg: str) -> None:
    entry = jwcrypto_encrypt(OPTIONS, keys[kind], alg, "A256GCM")
    assert set(json.loads(entry)) >= {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    assert unwrap(entry, keys[kind]) == OPTIONS


@pytest.mark.interop
@pytest.mark.parametrize("kinds", [["p521"], ["rsa2048"], ["p256", "rsa4096", "p384"]])
def test_interop_our_jwe_decrypts_with_jwcrypto(keys: dict[str, PrivateKey], kinds: list[str]) -> None:
    entry = JweWrapper([pub(keys[k]) for k in kinds]).wrap(OPTIONS)
    for kind in kinds:
        token = jwcrypto_jwe.JWE()
        token.deserialize(entry.decode(), key=jwcrypto_jwk.JWK.from_pyca(keys[kind]))
        assert token.plaintext == OPTIONS
