"""ttrpc Request/Response payloads: the spec's response vectors, round trips, hostile payloads."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoguest.errors import ProtocolError
from cocoguest.rpc._generated import ttrpc_pb2
from cocoguest.rpc.ttrpc.codes import Code, code_name
from cocoguest.rpc.ttrpc.messages import (
    Any,
    Request,
    Response,
    Status,
    decode_request,
    decode_response,
    encode_ok_response,
    encode_request,
    encode_response,
)

# specs/ttrpc.md §9.
OK_RESPONSE = bytes.fromhex("0a0012030a0178")
INTERNAL_BOOM = bytes.fromhex("0a08080d1204626f6f6d")


def test_spec_response_vectors() -> None:
    assert encode_response(Response(Status(Code.OK), b"\x0a\x01x")) == OK_RESPONSE
    assert encode_response(Response(Status(Code.INTERNAL, "boom"))) == INTERNAL_BOOM
    assert decode_response(INTERNAL_BOOM) == Response(Status(13, "boom"))


def test_absent_status_is_ok() -> None:
    assert decode_response(b"\x12\x01z") == Response(Status(Code.OK, ""), b"z")
    assert decode_response(b"") == Response(Status(), b"")


text = st.text(max_size=40)
requests = st.builds(
    Request,
    service=text,
    method=text,
    payload=st.binary(max_size=100),
    timeout_nano=st.integers(-(2**63), 2**63 - 1),
    metadata=st.lists(st.tuples(text, text), max_size=4).map(tuple),
)
responses = st.builds(
    Response,
    status=st.builds(
        Status,
        code=st.integers(-(2**31), 2**31 - 1),
        message=text,
        details=st.lists(st.builds(Any, type_url=text, value=st.binary(max_size=20)), max_size=2).map(tuple),
    ),
    payload=st.binary(max_size=100),
)


@given(requests)
def test_request_round_trip(request: Request) -> None:
    assert decode_request(encode_request(request)) == request


@given(responses)
def test_response_round_trip(response: Response) -> None:
    assert decode_response(encode_response(response)) == response


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_payloads_raise_only_protocol_errors(untrusted: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(ProtocolError):
            decode(untrusted)


def test_invalid_utf8_service_is_a_protocol_error() -> None:
    # field 1 (service), length 1, byte 0xff: not UTF-8, which proto3 strings must be.
    with pytest.raises(ProtocolError, match="Request"):
        decode_request(b"\x0a\x01\xff")


def test_code_names() -> None:
    assert code_name(12) == "UNIMPLEMENTED"
    assert code_name(99) == "code 99"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16383, 16384, 70_000, 2_100_000])
def test_ok_response_fast_path_is_byte_identical_to_protobuf(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    reference = ttrpc_pb2.Response(payload=payload)
    reference.status.SetInParent()
    expected = reference.SerializeToString()
    assert encode_ok_response(payload) == expected
    assert encode_response(Response(Status(), payload)) == expected
    assert decode_response(encode_ok_response(payload)) == Response(Status(), payload)
