"""Layer encryption API: descriptor rewrite, decryption, re-wrapping, unwrap-only, tampering."""

from __future__ import annotations

import base64
import io
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cocoguest.crypto.keys import PrivateKeyMaterial, PublicKeyMaterial
from cocoguest.digest import Digest
from cocoguest.errors import (
    DecryptionIntegrityError,
    KeyUnwrapError,
    MissingKeyError,
    ProtocolError,
    UnsupportedError,
)
from cocoguest.oci import media_types as mt
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt import annotations as enc
from cocoguest.ocicrypt.keywrap.jwe import JweUnwrapper, JweWrapper
from cocoguest.ocicrypt.layer import (
    add_recipients,
    check_authorization,
    decrypt_layer,
    encrypt_layer,
    unwrap_layer_key,
)

BLOB = b"pretend this is a gzip'd tar layer " * 1000


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _plain() -> Descriptor:
    return Descriptor(mt.OCI_LAYER_GZIP, Digest.of_bytes(BLOB), len(BLOB), {"keep": "me"})


def _encrypt(key: rsa.RSAPrivateKey) -> tuple[Descriptor, bytes]:
    out = io.BytesIO()
    desc = encrypt_layer(io.BytesIO(BLOB), out, _plain(), [JweWrapper([PublicKeyMaterial(key.public_key(), "pub")])])
    return desc, out.getvalue()


def _unwrapper(*keys: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> JweUnwrapper:
    return JweUnwrapper([PrivateKeyMaterial(k, f"key{i}") for i, k in enumerate(keys)])


def test_encrypt_rewrites_descriptor(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    assert desc.media_type == mt.OCI_LAYER_GZIP_ENC
    assert desc.size == len(BLOB) == len(ciphertext)
    assert desc.digest == Digest.of_bytes(ciphertext)
    assert ciphertext != BLOB
    assert desc.annotations["keep"] == "me"
    pub = json.loads(base64.b64decode(desc.annotations[enc.PUBOPTS]))
    assert set(pub) == {"cipher", "hmac", "cipheroptions"}
    assert enc.keys_annotation("jwe") in desc.annotations


def test_decrypt_restores_original(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    out = io.BytesIO()
    plain = decrypt_layer(io.BytesIO(ciphertext), out, desc, [_unwrapper(rsa_key)])
    assert out.getvalue() == BLOB
    assert plain == _plain()
    assert not any(k.startswith(enc.ENC_PREFIX) for k in plain.annotations)


def test_private_digest_is_the_plaintext_digest(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, _ = _encrypt(rsa_key)
    unwrapped = unwrap_layer_key(desc, [_unwrapper(rsa_key)])
    assert unwrapped.options.digest == str(Digest.of_bytes(BLOB))
    assert unwrapped.scheme == "jwe"


def test_add_recipients_appends_an_entry(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    more = add_recipients(desc, [JweWrapper([PublicKeyMaterial(ec_key.public_key(), "ec")])], [_unwrapper(rsa_key)])
    assert more.digest == desc.digest
    assert len(more.annotations[enc.keys_annotation("jwe")].split(",")) == 2
    out = io.BytesIO()
    decrypt_layer(io.BytesIO(ciphertext), out, more, [_unwrapper(ec_key)])
    assert out.getvalue() == BLOB


def test_wrong_key_and_no_key(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    with pytest.raises(KeyUnwrapError, match=f"layer {desc.digest}: none of the given keys"):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), desc, [_unwrapper(ec_key)])
    with pytest.raises(MissingKeyError, match=r"missing private key.*jwe"):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), desc, [])


@pytest.mark.parametrize("position", [0, len(BLOB) // 2, len(BLOB) - 1])
def test_flipped_bit_is_detected(rsa_key: rsa.RSAPrivateKey, position: int) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    tampered = bytearray(ciphertext)
    tampered[position] ^= 0x01
    # The descriptor is re-pointed at the tampered bytes so that only the HMAC can catch it.
    desc = desc.with_changes(digest=Digest.of_bytes(bytes(tampered)))
    with pytest.raises(DecryptionIntegrityError, match="HMAC"):
        decrypt_layer(io.BytesIO(bytes(tampered)), io.BytesIO(), desc, [_unwrapper(rsa_key)])


def _with_pubopts(desc: Descriptor, **changes: object) -> Descriptor:
    pub = json.loads(base64.b64decode(desc.annotations[enc.PUBOPTS]))
    pub.update(changes)
    raw = base64.b64encode(json.dumps(pub).encode()).decode()
    return desc.with_changes(annotations={**desc.annotations, enc.PUBOPTS: raw})


def test_tampered_pubopts(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    bad_hmac = _with_pubopts(desc, hmac=base64.b64encode(bytes(32)).decode())
    with pytest.raises(DecryptionIntegrityError):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), bad_hmac, [_unwrapper(rsa_key)])
    with pytest.raises(UnsupportedError, match="unknown cipher"):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), _with_pubopts(desc, cipher="ROT13"), [_unwrapper(rsa_key)])
    no_pub = desc.with_changes(annotations={k: v for k, v in desc.annotations.items() if k != enc.PUBOPTS})
    with pytest.raises(ProtocolError, match="no cipher type"):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), no_pub, [_unwrapper(rsa_key)])


def test_tampered_key_annotation(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    key = enc.keys_annotation("jwe")
    entry = bytearray(base64.b64decode(desc.annotations[key]))
    entry[len(entry) // 2] ^= 0x04
    tampered = desc.with_changes(annotations={**desc.annotations, key: base64.b64encode(bytes(entry)).decode()})
    with pytest.raises(KeyUnwrapError):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), tampered, [_unwrapper(rsa_key)])
    garbage = desc.with_changes(annotations={**desc.annotations, key: "not base64!"})
    with pytest.raises(ProtocolError, match="not valid base64"):
        decrypt_layer(io.BytesIO(ciphertext), io.BytesIO(), garbage, [_unwrapper(rsa_key)])


def test_encrypting_twice_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    desc, ciphertext = _encrypt(rsa_key)
    with pytest.raises(ValueError, match="already encrypted"):
        encrypt_layer(
            io.BytesIO(ciphertext),
            io.BytesIO(),
            desc,
            [JweWrapper([PublicKeyMaterial(rsa_key.public_key(), "p")])],
        )


def test_check_authorization_checks_every_layer(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    first, _ = _encrypt(rsa_key)
    out = io.BytesIO()
    second = encrypt_layer(
        io.BytesIO(BLOB), out, _plain(), [JweWrapper([PublicKeyMaterial(ec_key.public_key(), "ec")])]
    )
    assert check_authorization([_plain(), first], [_unwrapper(rsa_key)]) == 1
    assert check_authorization([first, second], [_unwrapper(rsa_key, ec_key)]) == 2
    # The first layer passes with the RSA key alone; the second must still be checked and fail.
    with pytest.raises(KeyUnwrapError, match=str(second.digest)):
        check_authorization([first, second], [_unwrapper(rsa_key)])
