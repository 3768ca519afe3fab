"""The pkcs7 key wrapper (ocicrypt.md §5.2), its CMS layer and the DER reader/writer under it."""

from __future__ import annotations

import contextlib
import datetime
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.crypto import cms, der
from cocoguest.crypto.keys import PrivateKeyMaterial, load_certificates, load_private_key
from cocoguest.errors import ConfigError, KeyUnwrapError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.keywrap.pkcs7 import ANNOTATION_KEY, Pkcs7Unwrapper, Pkcs7Wrapper

VECTORS = Path(__file__).parents[1] / "vectors" / "ocicrypt-rs"
OPTIONS = b'{"cipher":"AES_256_CTR_HMAC_SHA256","symkey":"' + b"A" * 44 + b'","cipheroptions":{"nonce":"x"}}'
RSA_ENCRYPTION_ALG = bytes.fromhex("300b06092a864886f70d010101")  # no NULL parameters
AES128_GCM_OID = bytes.fromhex("0609608648016503040106")

Party = tuple[x509.Certificate, PrivateKeyMaterial]


def _party(name: str, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None) -> Party:
    key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, PrivateKeyMaterial(key, f"{name}.key.pem")


@pytest.fixture(scope="module")
def parties() -> list[Party]:
    return [_party(f"recipient{i}") for i in range(3)]


def _wrapper(parties: list[Party]) -> Pkcs7Wrapper:
    return Pkcs7Wrapper([(cert, f"{key.source}.crt") for cert, key in parties])


def _unwrap(entry: bytes, keys: list[PrivateKeyMaterial], certs: list[x509.Certificate] | None = None) -> bytes:
    return Pkcs7Unwrapper(keys, [(c, "cert.pem") for c in certs or []]).unwrap(ANNOTATION_KEY, entry)


# ------------------------------------------------------------------------------------------- wrapper


def test_protocols_and_names(parties: list[Party]) -> None:
    wrapper, unwrapper = _wrapper(parties[:1]), Pkcs7Unwrapper([parties[0][1]], [])
    assert isinstance(wrapper, KeyWrapper)
    assert isinstance(unwrapper, KeyUnwrapper)
    assert wrapper.annotation_key == "org.opencontainers.image.enc.keys.pkcs7"
    assert unwrapper.scheme == "pkcs7"
    assert unwrapper.handles("org.opencontainers.image.enc.keys.pkcs7")
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe")


def test_round_trip_one_certificate(parties: list[Party]) -> None:
    cert, key = parties[0]
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    assert _unwrap(entry, [key]) == OPTIONS
    assert _unwrap(entry, [key], [cert]) == OPTIONS


def test_round_trip_three_certificates_each_key_decrypts(parties: list[Party]) -> None:
    entry = _wrapper(parties).wrap(OPTIONS)
    assert len(_recipient_infos(entry)) == 3
    for i, (cert, key) in enumerate(parties):
        assert _unwrap(entry, [key]) == OPTIONS
        assert _unwrap(entry, [key], [cert]) == OPTIONS
        other_cert = parties[(i + 1) % 3][0]  # a certificate of another recipient does not get in the way
        assert _unwrap(entry, [key], [other_cert]) == OPTIONS


def test_ocicrypt_rs_vector_certificate_round_trip() -> None:
    certs = load_certificates((VECTORS / "certificate.pem").read_bytes(), "certificate.pem")
    key = load_private_key((VECTORS / "certificate_key.pem").read_bytes(), "certificate_key.pem")
    assert certs is not None
    assert key is not None
    entry = Pkcs7Wrapper([(certs[0], "certificate.pem")]).wrap(OPTIONS)
    assert _unwrap(entry, [key], certs) == OPTIONS
    assert _unwrap(entry, [key]) == OPTIONS


def test_wrapper_rejects_non_rsa_certificate() -> None:
    cert, _ = _party("ec", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match=r"ec\.crt.*RSA"):
        Pkcs7Wrapper([(cert, "ec.crt")])


# ------------------------------------------------------------------------------------------- structure


def _recipient_infos(entry: bytes) -> list[der.Tlv]:
    return _enveloped(entry)[1].children()


def _enveloped(entry: bytes) -> list[der.Tlv]:
    content_info = der.decode(entry).children()
    return content_info[1].children()[0].children()


def test_exact_structure(parties: list[Party]) -> None:
    entry = _wrapper(parties).wrap(OPTIONS)
    assert bytes.fromhex("10133011840c") in entry
    top = der.decode(entry)
    assert top.tag == 0x30
    content_type, explicit = top.children()
    assert content_type.encoded == bytes.fromhex("06092a864886f70d010703")
    assert explicit.tag == 0xA0
    version, infos, eci = _enveloped(entry)
    assert version.encoded == b"\x02\x01\x00"
    assert infos.tag == 0x31
    assert infos.contents == b"".join(sorted(i.encoded for i in infos.children()))  # DER SET OF order
    by_serial = {cert.serial_number: cert for cert, _ in parties}
    for info in infos.children():
        ri_version, rid, algorithm, encrypted_key = info.children()
        assert ri_version.encoded == b"\x02\x01\x00"
        issuer, serial = rid.children()
        cert = by_serial[serial.as_int()]
        assert issuer.encoded == cert.issuer.public_bytes()
        assert algorithm.encoded == RSA_ENCRYPTION_ALG
        assert encrypted_key.tag == 0x04
        assert len(encrypted_key.contents) == 256
    data_oid, algorithm, content = eci.children()
    assert data_oid.encoded == bytes.fromhex("06092a864886f70d010701")
    alg = algorithm.encoded
    assert alg[:2] == bytes.fromhex("3020")
    assert alg[2:13] == AES128_GCM_OID
    assert alg[13:19] == bytes.fromhex("10133011840c")
    assert alg[31:] == bytes.fromhex("020110")
    assert content.tag == 0x80
    assert len(content.contents) == len(OPTIONS) + 16


# ------------------------------------------------------------------------------------------- variants


@pytest.mark.parametrize("constructed_content", [False, True])
@pytest.mark.parametrize("rfc5084_params", [False, True])
def test_reader_accepts_both_content_forms_and_parameter_encodings(
    parties: list[Party], constructed_content: bool, rfc5084_params: bool
) -> None:
    cert, key = parties[0]
    recipient = cms.recipient_from_certificate(cert, "c.pem")
    entry = cms.build_enveloped_data(
        OPTIONS, [recipient], constructed_content=constructed_content, rfc5084_params=rfc5084_params
    )
    content = _enveloped(entry)[2].children()[2]
    assert content.tag == (0xA0 if constructed_content else 0x80)
    params = _enveloped(entry)[2].children()[1].children()[1]
    assert params.tag == (0x30 if rfc5084_params else 0x10)
    assert _unwrap(entry, [key]) == OPTIONS


def _rebuild(entry: bytes, params: Callable[[bytes], bytes], content: Callable[[bytes], bytes]) -> bytes:
    """Re-encode the EncryptedContentInfo of ``entry`` with other parameter and content encodings."""
    version, infos, eci = _enveloped(entry)
    data_oid, algorithm, sealed = eci.children()
    alg_oid, quirk = algorithm.children()
    nonce = quirk.children()[0].children()[0].contents
    new_eci = der.sequence(data_oid.encoded, der.sequence(alg_oid.encoded, params(nonce)), content(sealed.contents))
    enveloped = der.sequence(version.encoded, infos.encoded, new_eci)
    return der.sequence(der.oid(cms.OID_ENVELOPED_DATA), der.encode(0xA0, enveloped))


def test_reader_accepts_hand_built_variants(parties: list[Party]) -> None:
    _, key = parties[0]
    entry = _wrapper(parties[:1]).wrap(OPTIONS)

    def segmented(sealed: bytes) -> bytes:
        return der.encode(0xA0, der.octet_string(sealed[:7]) + der.octet_string(sealed[7:]))

    def sequence_with_quirk_nonce(nonce: bytes) -> bytes:
        return der.sequence(der.encode(0x84, nonce), der.integer(16))

    def quirk_with_octet_string_nonce(nonce: bytes) -> bytes:
        return der.encode(0x10, der.sequence(der.octet_string(nonce), der.integer(16)))

    for params, content in [
        (sequence_with_quirk_nonce, segmented),
        (quirk_with_octet_string_nonce, lambda s: der.encode(0x80, s)),
    ]:
        assert _unwrap(_rebuild(entry, params, content), [key]) == OPTIONS

    def bad_icv(nonce: bytes) -> bytes:
        return der.encode(0x10, der.sequence(der.encode(0x84, nonce), der.integer(12)))

    with pytest.raises(KeyUnwrapError, match="malformed PKCS7"):
        _unwrap(_rebuild(entry, bad_icv, lambda s: der.encode(0x80, s)), [key])


# ------------------------------------------------------------------------------------------- failures


def test_wrong_key_is_key_unwrap_error(parties: list[Party]) -> None:
    entry = _wrapper(parties[:2]).wrap(OPTIONS)
    cert, key = parties[2]
    with pytest.raises(KeyUnwrapError, match=r"pkcs7.*recipient2\.key\.pem"):
        _unwrap(entry, [key], [cert])


def test_non_rsa_keys_are_ignored(parties: list[Party]) -> None:
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    ec_key = PrivateKeyMaterial(ec.generate_private_key(ec.SECP256R1()), "ec.pem")
    with pytest.raises(KeyUnwrapError, match="pkcs7"):
        _unwrap(entry, [ec_key])
    assert _unwrap(entry, [ec_key, parties[0][1]]) == OPTIONS


@pytest.mark.parametrize("where", [-1, -17, -40])
def test_flipped_bit_in_encrypted_content_is_key_unwrap_error(parties: list[Party], where: int) -> None:
    entry = bytearray(_wrapper(parties[:1]).wrap(OPTIONS))
    entry[where] ^= 0x01  # the last bytes of the DER are the GCM ciphertext and tag
    with pytest.raises(KeyUnwrapError, match="pkcs7"):
        _unwrap(bytes(entry), [parties[0][1]])


def test_flipped_bit_in_encrypted_key_is_key_unwrap_error(parties: list[Party]) -> None:
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    encrypted_key = _recipient_infos(entry)[0].children()[3]
    mutated = bytearray(entry)
    mutated[encrypted_key.content_start + 100] ^= 0x40
    with pytest.raises(KeyUnwrapError, match="pkcs7"):
        _unwrap(bytes(mutated), [parties[0][1]])


def test_truncated_der_is_key_unwrap_error(parties: list[Party]) -> None:
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    for cut in (0, 1, 2, 10, 100, len(entry) // 2, len(entry) - 1):
        with pytest.raises(KeyUnwrapError, match="malformed PKCS7") as info:
            _unwrap(entry[:cut], [parties[0][1]])
        assert isinstance(info.value.__cause__, ProtocolError)


def test_trailing_garbage_and_other_content_types_are_malformed(parties: list[Party]) -> None:
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    signed_data = der.sequence(der.oid("1.2.840.113549.1.7.2"), der.encode(0xA0, der.sequence()))
    for bad in (entry + b"\x00", signed_data, der.sequence(), b"\x04\x00"):
        with pytest.raises(KeyUnwrapError, match="malformed PKCS7"):
            _unwrap(bad, [parties[0][1]])


def test_content_larger_than_the_limit_is_refused(parties: list[Party]) -> None:
    entry = _wrapper(parties[:1]).wrap(OPTIONS)
    unwrapper = Pkcs7Unwrapper([parties[0][1]], [], limits=Limits(max_private_options_bytes=len(OPTIONS) - 1))
    with pytest.raises(KeyUnwrapError, match="limit"):
        unwrapper.unwrap(ANNOTATION_KEY, entry)


@given(st.binary(max_size=400))
def test_cms_parser_raises_only_protocol_error(noise: bytes) -> None:
    candidates = [noise, der.sequence(der.oid(cms.OID_ENVELOPED_DATA), der.encode(0xA0, noise))]
    for candidate in candidates:
        with contextlib.suppress(ProtocolError):
            cms.parse_enveloped_data(candidate)


# ------------------------------------------------------------------------------------------- der.py


@pytest.mark.parametrize(
    ("length", "encoded"),
    [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"), (65536, "83010000")],
)
def test_der_length_encoding(length: int, encoded: str) -> None:
    assert der.encode_length(length).hex() == encoded
    tlv = der.decode(der.encode(0x04, b"\x00" * length))
    assert len(tlv.contents) == length


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "020100"), (16, "020110"), (127, "02017f"), (128, "02020080"), (-1, "0201ff"), (-129, "0202ff7f")],
)
def test_der_integer(value: int, encoded: str) -> None:
    assert der.integer(value).hex() == encoded
    assert der.decode(bytes.fromhex(encoded)).as_int() == value


@pytest.mark.parametrize(
    "bad",
    [
        "",  # empty
        "30",  # no length
        "3005020100",  # length past the end
        "3080020100 0000",  # indefinite length
        "1f0100",  # high tag number form
        "3085 0000000001 00",  # five length octets
        "3084ffffffff",  # four length octets, far past the end
        "3082 00",  # long form cut short
        "020100 00",  # trailing byte
    ],
)
def test_der_rejects_malformed(bad: str) -> None:
    with pytest.raises(ProtocolError, match="DER"):
        der.decode(bytes.fromhex(bad.replace(" ", "")))


def test_der_child_length_must_fit_its_parent() -> None:
    # the outer SEQUENCE is well formed, but its child claims 5 bytes of the 3 it has
    tlv = der.decode(bytes.fromhex("3003040500"))
    with pytest.raises(ProtocolError, match="past the end"):
        tlv.children()


def test_der_nesting_depth_is_capped() -> None:
    data = b"\x05\x00"
    for _ in range(DEFAULT_LIMITS.max_der_depth + 5):
        data = der.sequence(data)
    tlvs = [der.decode(data)]
    for _ in range(DEFAULT_LIMITS.max_der_depth):
        tlvs = tlvs[0].children()
    with pytest.raises(ProtocolError, match="nesting"):
        tlvs[0].children()


def test_der_oid() -> None:
    assert der.oid("1.2.840.113549.1.7.3").hex() == "06092a864886f70d010703"
    assert der.decode(AES128_GCM_OID).as_oid() == "2.16.840.1.101.3.4.1.6"
    assert der.decode(der.oid("2.999.1")).as_oid() == "2.999.1"
    for bad in ("0601 86", "0600", "0602 8001"):
        with pytest.raises(ProtocolError):
            der.decode(bytes.fromhex(bad.replace(" ", ""))).as_oid()


def test_der_set_of_is_sorted() -> None:
    assert der.set_of(b"\x02\x01\x05", b"\x02\x01\x01") == bytes.fromhex("3106020101020105")


Tree = tuple[int, Any]  # (tag, bytes) for primitive, (tag, list[Tree]) for constructed

_leaves = st.tuples(st.sampled_from([0x02, 0x04, 0x05, 0x06, 0x0C, 0x10, 0x80, 0x84]), st.binary(max_size=300))
_trees = st.recursive(
    _leaves,
    lambda children: st.tuples(st.sampled_from([0x30, 0x31, 0xA0, 0xA3]), st.lists(children, max_size=4)),
    max_leaves=20,
)


def _encode_tree(tree: Tree) -> bytes:
    tag, value = tree
    if isinstance(value, bytes):
        return der.encode(tag, value)
    return der.encode(tag, b"".join(_encode_tree(child) for child in value))


def _decode_tree(tlv: der.Tlv) -> Tree:
    if tlv.constructed:
        return tlv.tag, [_decode_tree(child) for child in tlv.children()]
    return tlv.tag, tlv.contents


@given(_trees)
def test_der_round_trip_property(tree: Tree) -> None:
    encoded = _encode_tree(tree)
    tlv = der.decode(encoded)
    assert _decode_tree(tlv) == tree
    assert tlv.encoded == encoded


@given(st.binary(max_size=200))
def test_der_reader_raises_only_protocol_error(noise: bytes) -> None:
    def walk(tlv: der.Tlv) -> None:
        if tlv.constructed:
            for child in tlv.children():
                walk(child)

    with contextlib.suppress(ProtocolError):
        walk(der.decode(noise))


# ------------------------------------------------------------------------------------------- interop


def _write_party(tmp_path: Path, party: Party, name: str) -> tuple[Path, Path]:
    cert, key = party
    cert_path, key_path = tmp_path / f"{name}.crt.pem", tmp_path / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert isinstance(key.key, rsa.RSAPrivateKey)
    key_path.write_bytes(
        key.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("keyid", [False, True])
def test_openssl_cms_aes_gcm_output_unwraps(tmp_path: Path, parties: list[Party], keyid: bool) -> None:
    # OpenSSL 3 cannot read ocicrypt's quirk parameters (and writes AES-GCM as AuthEnvelopedData with
    # RFC 5084 parameters), so interop is tested in this direction: openssl writes, we read.
    paths = [_write_party(tmp_path, party, f"p{i}") for i, party in enumerate(parties[:2])]
    message = tmp_path / "options.json"
    message.write_bytes(OPTIONS)
    out = tmp_path / "out.der"
    subprocess.run(
        [
            "openssl", "cms", "-encrypt", "-aes-128-gcm", "-binary", "-outform", "DER",
            *(["-keyid"] if keyid else []),
            "-in", str(message), "-out", str(out), *(str(cert) for cert, _ in paths),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    entry = out.read_bytes()
    for cert, key in parties[:2]:
        assert _unwrap(entry, [key]) == OPTIONS
        assert _unwrap(entry, [key], [cert]) == OPTIONS
    with pytest.raises(KeyUnwrapError, match="pkcs7"):
        _unwrap(entry, [parties[2][1]])
    tampered = bytearray(entry)
    tampered[-1] ^= 0x01  # the AuthEnvelopedData mac
    with pytest.raises(KeyUnwrapError, match="pkcs7"):
        _unwrap(bytes(tampered), [parties[0][1]])
