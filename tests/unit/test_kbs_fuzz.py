"""Property tests: KBS message parsing raises nothing but typed errors (issue 9 acceptance).

Inputs: arbitrary bytes, and JSON documents that have the right members with arbitrary values (which reach
deeper code than random bytes do).
"""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cocoguest.errors import CocoError
from cocoguest.kbs.annotation_packet import parse_annotation_packet
from cocoguest.kbs.protocol import RcarHandshake, parse_error_information, parse_resource_response, parse_token
from cocoguest.kbs.tee_key import TeeKeyPair

KEY = TeeKeyPair.generate()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
b64u_text = st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())


def _encode(document: object) -> bytes:
    return json.dumps(document).encode()


def _challenge(body: bytes) -> None:
    handshake = RcarHandshake("sample", KEY.public_jwk())
    handshake.auth_request()
    handshake.receive_challenge(body)


def _token_answer(body: bytes) -> None:
    handshake = RcarHandshake("sample", KEY.public_jwk())
    handshake.auth_request()
    handshake.receive_challenge(b'{"nonce":"n","extra-params":""}')
    handshake.attest_request(b"{}")
    handshake.receive_token(body)


def _resource(body: bytes) -> None:
    KEY.decrypt(parse_resource_response(body, "fuzz"), "fuzz")


def _only_typed_errors(parse: object, body: bytes) -> None:
    assert callable(parse)
    with contextlib.suppress(CocoError):
        parse(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(body: bytes) -> None:
    for parse in (_challenge, _token_answer, _resource, parse_annotation_packet, parse_token):
        _only_typed_errors(parse, body)
    parse_error_information(body)  # never raises


@settings(max_examples=300, deadline=None)
@given(nonce=json_values, extra=json_values, selected=json_values)
def test_shaped_challenges(nonce: object, extra: object, selected: object) -> None:
    _only_typed_errors(_challenge, _encode({"nonce": nonce, "extra-params": extra}))
    _only_typed_errors(_challenge, _encode({"nonce": "n", "extra-params": {"selected-hash-algorithm": selected}}))


@settings(max_examples=300, deadline=None)
@given(header=b64u_text, claims=json_values, signature=b64u_text, token=json_values)
def test_shaped_tokens(header: str, claims: object, signature: str, token: object) -> None:
    payload = base64.urlsafe_b64encode(_encode(claims)).rstrip(b"=").decode()
    _only_typed_errors(_token_answer, _encode({"token": f"{header}.{payload}.{signature}"}))
    _only_typed_errors(_token_answer, _encode({"token": token}))


@settings(max_examples=300, deadline=None)
@given(
    alg=st.sampled_from(["ECDH-ES+A256KW", "RSA-OAEP-256", "RSA1_5", "dir"]),
    epk=json_values,
    crv=st.sampled_from(["P-256", "P-521", "P-384"]),
    members=st.lists(b64u_text, min_size=6, max_size=6),
    other=json_values,
)
def test_shaped_resource_answers(alg: str, epk: object, crv: str, members: list[str], other: object) -> None:
    for epk_value in (epk, {"kty": "EC", "crv": crv, "x": members[4], "y": members[5]}):
        header = _encode({"alg": alg, "enc": "A256GCM", "epk": epk_value})
        protected = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
        names = ("encrypted_key", "iv", "ciphertext", "tag")
        _only_typed_errors(_resource, _encode({"protected": protected, **dict(zip(names, members, strict=False))}))
    _only_typed_errors(_resource, _encode({"protected": other, "iv": other, "tag": other}))


@settings(max_examples=300, deadline=None)
@given(
    kid=json_values | st.just("kbs:///a/b/c"),
    wrapped=json_values | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    iv=json_values | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
    wrap_type=json_values | st.sampled_from(["A256GCM", "A256CTR"]),
    extra=json_values,
)
def test_shaped_annotation_packets(kid: object, wrapped: object, iv: object, wrap_type: object, extra: object) -> None:
    document = {"kid": kid, "wrapped_data": wrapped, "iv": iv, "wrap_type": wrap_type}
    _only_typed_errors(parse_annotation_packet, _encode(document))
    _only_typed_errors(parse_annotation_packet, _encode({**document, "provider": extra, "annotations": extra}))
