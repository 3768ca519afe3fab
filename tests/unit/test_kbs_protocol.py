"""The RCAR state machine, RFC 8785 canonical JSON and the TEE key, with no IO (kbs-protocol.md §2-§8).

Vectors: the two canonical-JSON / SHA-384 rows of kbs-protocol.md §8.1 (the AS unit test and the runtime data).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from cocoguest.errors import (
    AttestationError,
    ConfigError,
    DecryptionIntegrityError,
    KbsDeniedError,
    KbsProtocolError,
    KbsStatusError,
    ResourceNotFoundError,
)
from cocoguest.kbs.canonical_json import canonicalize
from cocoguest.kbs.protocol import (
    HandshakeOrderError,
    JweResponse,
    RcarHandshake,
    Step,
    parse_error_information,
    parse_resource_response,
    parse_token,
    resource_path,
    status_error,
)
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import TeeKeyAlgorithm, TeeKeyPair
from tests.fixtures.test_kbs import TestKbs

SPEC_PUBKEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AAAA", "y": "BBBB"}


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, object]) -> str:
    return f"{_b64u(b'{}')}.{_b64u(json.dumps(claims).encode())}.{_b64u(b'sig')}"


# ------------------------------------------------------------------------------------------- JCS


def test_jcs_spec_vectors() -> None:
    canonical = canonicalize({"b": 1, "a": "test", "c": {"d": "e"}})
    assert canonical == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert hashlib.sha384(canonical).hexdigest() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    )
    runtime = {"tee-pubkey": SPEC_PUBKEY, "nonce": "bm9uY2U=", "additional-evidence": ""}
    assert canonicalize(runtime) == (
        b'{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":'
        b'{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}}'
    )


def test_jcs_rfc8785_string_and_order_rules() -> None:
    # RFC 8785 §3.2.2.2: short escapes, \u00xx lowercase for other controls, everything else literal.
    assert canonicalize('\b\f\n\r\t\x01\x1f"\\/€') == '"\\b\\f\\n\\r\\t\\u0001\\u001f\\"\\\\/€"'.encode()
    # §3.2.3: sort by UTF-16 code units: U+1F600 (D83D DE00) sorts before U+FFFF.
    assert canonicalize({"\uffff": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\uffff":1}'.encode()
    assert canonicalize([True, None, False, -0, 2**53]) == b"[true,null,false,0,9007199254740992]"
    for bad in (1.5, 2**53 + 1, "\ud800", {1: "x"}):
        with pytest.raises(ValueError, match=r"."):
            canonicalize(bad)


# ------------------------------------------------------------------------------------------- RCAR


def test_rcar_report_data_matches_spec_vector() -> None:
    handshake = RcarHandshake("sample", SPEC_PUBKEY)
    request = json.loads(handshake.auth_request())
    assert request == {
        "version": "0.4.0",
        "tee": "sample",
        "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512"]},
    }
    report_data = handshake.receive_challenge(b'{"nonce":"bm9uY2U=","extra-params":""}')
    assert report_data.hex() == (
        "d20490d30e5f16cba693abc1ca3c31ed977d2722d0adf01a980972d16913dc38f103c1f12abf477df0523af2b12e4b43"
    )
    evidence = json.dumps({"svn": "1", "report_data": base64.b64encode(report_data).decode()}).encode()
    body = json.loads(handshake.attest_request(evidence))
    assert body == {
        "init-data": None,
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": SPEC_PUBKEY},
        "tee-evidence": {"primary_evidence": json.loads(evidence), "additional_evidence": ""},
    }
    token = handshake.receive_token(json.dumps({"token": _jwt({"exp": 1700000300})}).encode())
    assert token.untrusted_exp == 1700000300.0
    assert "exp=1700000300" in repr(token)
    assert token.raw not in repr(token)


def test_rcar_selected_hash_algorithm_and_init_data() -> None:
    handshake = RcarHandshake("tdx", SPEC_PUBKEY, init_data_toml='version = "0.1.0"')
    handshake.auth_request()
    challenge = b'{"nonce":"n","extra-params":{"selected-hash-algorithm":"SHA512"}}'
    report_data = handshake.receive_challenge(challenge)
    expected = hashlib.sha512(canonicalize({"tee-pubkey": SPEC_PUBKEY, "nonce": "n", "additional-evidence": ""}))
    assert report_data == expected.digest()
    body = json.loads(handshake.attest_request(b"{}"))
    assert body["init-data"] == {"format": "toml", "body": 'version = "0.1.0"'}


# An SeAttestationRequest as Trustee's SE verifier serializes it (serde_json::to_string, runtime_data_digest None
# and therefore absent); the values are placeholders, the client passes them on unchanged.
SE_NONCE = json.dumps(
    {
        "request_blob": base64.b64encode(b"ARCB").decode(),
        "measurement_size": 64,
        "additional_size": 0,
        "encr_measurement_key": base64.b64encode(b"k" * 16).decode(),
        "encr_request_nonce": base64.b64encode(b"n" * 16).decode(),
        "image_hdr_tags": base64.b64encode(bytes(208)).decode(),
    },
    separators=(",", ":"),
)


def _se_challenge(nonce: str, extra: object) -> bytes:
    return json.dumps({"nonce": nonce, "extra-params": extra}).encode()


def test_se_digest_is_sha512_injected_into_the_request_and_nonce_sent_verbatim() -> None:
    handshake = RcarHandshake("se", SPEC_PUBKEY)
    assert json.loads(handshake.auth_request())["extra-params"]["supported-hash-algorithms"] == [
        "sha256",
        "sha384",
        "sha512",
    ]
    attester_input = handshake.receive_challenge(_se_challenge(SE_NONCE, {"selected-hash-algorithm": "sha512"}))
    request = json.loads(attester_input)
    expected = hashlib.sha512(
        canonicalize({"tee-pubkey": SPEC_PUBKEY, "nonce": SE_NONCE, "additional-evidence": ""})
    ).digest()
    # Standard base64 with padding (serde_with Base64), all 64 bytes of the SHA-512 digest.
    assert request["runtime_data_digest"] == base64.b64encode(expected).decode()
    assert request["runtime_data_digest"].endswith("==")
    assert {k: v for k, v in request.items() if k != "runtime_data_digest"} == json.loads(SE_NONCE)
    assert handshake.report_data == attester_input
    body = json.loads(handshake.attest_request(b'{"measurement":"AA=="}'))
    # /attest carries the KBS's nonce string verbatim, not the request with the digest.
    assert body["runtime-data"] == {"nonce": SE_NONCE, "tee-pubkey": SPEC_PUBKEY}
    assert body["tee-evidence"] == {"primary_evidence": {"measurement": "AA=="}, "additional_evidence": ""}


def test_se_digest_from_the_kbs_is_replaced() -> None:
    planted = json.dumps({**json.loads(SE_NONCE), "runtime_data_digest": base64.b64encode(bytes(64)).decode()})
    handshake = RcarHandshake("se", SPEC_PUBKEY)
    handshake.auth_request()
    request = json.loads(handshake.receive_challenge(_se_challenge(planted, {"selected-hash-algorithm": "sha512"})))
    expected = hashlib.sha512(canonicalize({"tee-pubkey": SPEC_PUBKEY, "nonce": planted, "additional-evidence": ""}))
    assert base64.b64decode(request["runtime_data_digest"]) == expected.digest()


def test_se_without_selected_algorithm_uses_the_default_as_upstream() -> None:
    # guest-components' get_hash_algorithm: no selection means SHA-384, for SE too (Trustee's verifier then
    # refuses the 48-byte digest; Trustee always selects sha512 when the request lists it, as ours does).
    handshake = RcarHandshake("se", SPEC_PUBKEY)
    handshake.auth_request()
    request = json.loads(handshake.receive_challenge(_se_challenge(SE_NONCE, "")))
    expected = hashlib.sha384(canonicalize({"tee-pubkey": SPEC_PUBKEY, "nonce": SE_NONCE, "additional-evidence": ""}))
    assert base64.b64decode(request["runtime_data_digest"]) == expected.digest()


@pytest.mark.parametrize(
    "nonce",
    ["bm9uY2U=", "[1,2]", '"text"', '{"a":1,"a":2}', "{" * 200],
)
def test_se_nonce_that_is_not_a_json_object_names_the_auth_step(nonce: str) -> None:
    handshake = RcarHandshake("se", SPEC_PUBKEY)
    handshake.auth_request()
    with pytest.raises(KbsProtocolError, match=r"SE challenge nonce \(SeAttestationRequest\)") as info:
        handshake.receive_challenge(_se_challenge(nonce, {"selected-hash-algorithm": "sha512"}))
    assert info.value.step == "auth"
    assert str(info.value).startswith("KBS auth")
    with pytest.raises(HandshakeOrderError):
        handshake.attest_request(b"{}")


def test_rcar_order_is_enforced() -> None:
    handshake = RcarHandshake("sample", SPEC_PUBKEY)
    with pytest.raises(HandshakeOrderError):
        handshake.receive_challenge(b'{"nonce":"n","extra-params":""}')
    handshake.auth_request()
    with pytest.raises(HandshakeOrderError):
        handshake.attest_request(b"{}")
    with pytest.raises(HandshakeOrderError):
        handshake.auth_request()


@pytest.mark.parametrize(
    ("challenge", "message"),
    [
        (b"<html>", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"extra-params":""}', "no string 'nonce'"),
        (b'{"nonce":"","extra-params":""}', "no string 'nonce'"),
        (b'{"nonce":"n"}', "no 'extra-params'"),
        (b'{"nonce":"n","nonce":"m","extra-params":""}', "duplicate member"),
        (b'{"nonce":"n","extra-params":{"selected-hash-algorithm":"md5"}}', "'md5', which we did not offer"),
    ],
)
def test_bad_challenges_name_the_auth_step(challenge: bytes, message: str) -> None:
    handshake = RcarHandshake("sample", SPEC_PUBKEY)
    handshake.auth_request()
    with pytest.raises(KbsProtocolError, match=message) as info:
        handshake.receive_challenge(challenge)
    assert info.value.step == "auth"
    assert str(info.value).startswith("KBS auth")


def test_evidence_must_be_json_and_fit_the_request_limit() -> None:
    handshake = RcarHandshake("sample", SPEC_PUBKEY)
    handshake.auth_request()
    handshake.receive_challenge(b'{"nonce":"n","extra-params":""}')
    with pytest.raises(AttestationError, match="sample evidence"):
        handshake.attest_request(b"\x00binary")
    with pytest.raises(AttestationError, match="more than the limit"):
        handshake.attest_request(json.dumps("x" * (3 * 1024 * 1024)).encode())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "no string 'token'"),
        ("a.b", "2 dot-separated parts"),
        ("a.b.c.d", "4 dot-separated parts"),
        ("a.%%%.c", "not unpadded base64url"),
        (f"e30.{_b64u(b'[1]')}.c2ln", "must be a JSON object"),
        (_jwt({"exp": "tomorrow"}), "'exp' is not a number"),
        (_jwt({"exp": True}), "'exp' is not a number"),
        ("x" * 70000, "more than 65536"),
    ],
)
def test_bad_tokens_name_the_attest_step(token: object, message: str) -> None:
    with pytest.raises(KbsProtocolError, match=message) as info:
        parse_token(token)
    assert info.value.step == "attest"


def test_token_without_exp() -> None:
    assert parse_token(_jwt({"iss": "x"})).untrusted_exp is None


# ------------------------------------------------------------------------------------------- errors


def test_error_information_and_status_mapping() -> None:
    body = json.dumps({"type": "https://github.com/confidential-containers/kbs/errors/PolicyDeny", "detail": "no"})
    assert parse_error_information(body.encode()) == ("PolicyDeny", "no")
    assert parse_error_information(b"plain \x1b[31mtext") == (None, "plain ?[31mtext")
    assert parse_error_information(b"\xff\xfe") == (None, None)
    denied = status_error(Step.RESOURCE, 401, body.encode(), "kbs:///a/b/c")
    assert isinstance(denied, KbsDeniedError)
    assert str(denied) == "KBS resource kbs:///a/b/c: HTTP 401 (PolicyDeny: no)"
    assert isinstance(status_error(Step.RESOURCE, 404, b"", "r"), ResourceNotFoundError)
    other = status_error(Step.AUTH, 500, b"", "http://kbs")
    assert isinstance(other, KbsStatusError)
    assert "HTTP 500 (no error information)" in str(other)


def test_resource_path() -> None:
    assert resource_path(ResourceUri.parse("kbs://h:1/r/t/g?v=1")) == "/kbs/v0/resource/r/t/g?v=1"


# ------------------------------------------------------------------------------------------- JWE + TEE key


def _response(alg: str, **header: object) -> bytes:
    protected = _b64u(json.dumps({"alg": alg, "enc": "A256GCM", **header}).encode())
    member = _b64u(b"\x00" * 12)
    doc = {"protected": protected, "encrypted_key": "", "iv": member, "ciphertext": "", "tag": _b64u(b"\x00" * 16)}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_response("dir"), "'dir' is not supported"),
        (_response("RSA-OAEP"), "'RSA-OAEP' is not supported"),
        (_response("RSA-OAEP-256", zip="DEF"), "compressed"),
        (_response("ECDH-ES+A256KW"), "needs an EC 'epk'"),
        (json.dumps({"protected": "e30"}).encode(), "None is not supported"),
        (b'{"protected":"!!"}', "not unpadded base64url"),
    ],
)
def test_bad_resource_responses(body: bytes, message: str) -> None:
    with pytest.raises(KbsProtocolError, match=message) as info:
        parse_resource_response(body, "resource kbs:///a/b/c")
    assert info.value.step == "resource"


@pytest.mark.parametrize("algorithm", list(TeeKeyAlgorithm))
def test_tee_key_jwk_members_and_pem_round_trip(algorithm: TeeKeyAlgorithm) -> None:
    key = TeeKeyPair.generate(algorithm)
    jwk = key.public_jwk()
    if algorithm.key_kind == "RSA":
        assert list(jwk) == ["kty", "alg", "n", "e"]
        assert jwk["e"] == "AQAB"
    else:
        assert list(jwk) == ["kty", "crv", "alg", "x", "y"]
        size = 32 if algorithm.key_kind == "P-256" else 66
        assert len(base64.urlsafe_b64decode(jwk["x"] + "==")) == size
    assert jwk["alg"] == algorithm.jwe_alg
    again = TeeKeyPair.from_pem(key.to_pem(), "test", algorithm)
    assert again.public_jwk() == jwk
    assert "PRIVATE" not in repr(key)


def test_tee_key_decrypts_jwcrypto_jwe_and_refuses_downgrade() -> None:
    kbs = TestKbs()
    oaep = TeeKeyPair.generate(TeeKeyAlgorithm.RSA_OAEP_256)
    body = kbs.encrypt_resource(b"secret", oaep.public_jwk())
    assert oaep.decrypt(parse_resource_response(body, "r"), "r") == b"secret"
    # SECURITY: a KBS (or a man in the middle) must not move an RSA-OAEP-256 key to RSA1_5.
    downgraded = kbs.encrypt_resource(b"secret", {**oaep.public_jwk(), "alg": "RSA1_5"})
    with pytest.raises(DecryptionIntegrityError, match="encrypted with RSA1_5"):
        oaep.decrypt(parse_resource_response(downgraded, "r"), "r")


def test_tee_key_refuses_epk_off_curve_and_wrong_curve() -> None:
    key = TeeKeyPair.generate()
    good = parse_resource_response(TestKbs().encrypt_resource(b"s", key.public_jwk()), "r")
    assert good.untrusted_epk is not None
    crv, x, y = good.untrusted_epk
    off_curve = JweResponse(**{**_fields(good), "untrusted_epk": (crv, x, bytes(len(y)))})
    with pytest.raises(DecryptionIntegrityError, match="not a point on P-256"):
        key.decrypt(off_curve, "r")
    wrong_curve = JweResponse(**{**_fields(good), "untrusted_epk": ("P-521", x, y)})
    with pytest.raises(DecryptionIntegrityError, match="not this guest's TEE key curve"):
        key.decrypt(wrong_curve, "r")


def _fields(response: JweResponse) -> dict[str, object]:
    return {name: getattr(response, name) for name in JweResponse.__slots__}


def test_tee_key_algorithm_names() -> None:
    assert TeeKeyAlgorithm.parse("ECDH-ES+A256KW-P521") is TeeKeyAlgorithm.EC_P521
    with pytest.raises(ConfigError, match="known: ECDH-ES"):
        TeeKeyAlgorithm.parse("ML-KEM-768+A192KW")
    with pytest.raises(ConfigError, match="does not fit"):
        TeeKeyPair.from_pem(TeeKeyPair.generate().to_pem(), "k", TeeKeyAlgorithm.RSA_OAEP_256)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        TeeKeyPair.from_pem(b"junk", "k")
