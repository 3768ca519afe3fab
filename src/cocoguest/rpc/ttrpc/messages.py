"""The ttrpc Request and Response payloads (specs/ttrpc.md §5) as frozen values. Sans-IO.

The wire form is protobuf (``protos/ttrpc.proto``, same field numbers as containerd/ttrpc and ttrpc-rust);
this module converts between it and plain values so that the rest of cocoguest never touches generated code.

Invariants:
    * ``decode_*`` take untrusted bytes and raise only :class:`~cocoguest.errors.ProtocolError` (protobuf's
      ``DecodeError`` is translated here); a decoded value is structurally well-formed (strings are UTF-8,
      proto3 semantics).
    * An absent ``status`` in a Response decodes as OK (as the Go and Rust clients do); encoding always writes
      a status, so an OK response carries the empty submessage ``0a 00`` like ttrpc-rust.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from cocoguest.errors import ProtocolError
from cocoguest.rpc._generated import ttrpc_pb2
from cocoguest.rpc.ttrpc.codes import Code

Metadata = tuple[tuple[str, str], ...]
"""Request metadata as ordered ``(key, value)`` pairs; a key may repeat (gRPC-style headers)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A ttrpc call: ``service`` (``package.Service``), ``method``, the serialized method message, deadline."""

    service: str
    method: str
    payload: bytes = b""
    timeout_nano: int = 0
    """Nanoseconds the server may spend; 0 = no deadline. Negative means the client's deadline has passed."""
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True)
class Any:
    """google.protobuf.Any: a type URL and the serialized message."""

    type_url: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """google.rpc.Status."""

    code: int = Code.OK
    message: str = ""
    details: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A ttrpc answer: status, and the serialized method response (meaningful only if the status is OK)."""

    status: Status
    payload: bytes = b""


def encode_request(request: Request) -> bytes:
    """Serialize ``request``."""
    message = ttrpc_pb2.Request(
        service=request.service,
        method=request.method,
        payload=request.payload,
        timeout_nano=request.timeout_nano,
        metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in request.metadata],
    )
    return message.SerializeToString()


def decode_request(untrusted_data: bytes) -> Request:
    """Parse a Request payload.

    Raises:
        ProtocolError: not a valid Request message.
    """
    message = ttrpc_pb2.Request()
    _parse(message, untrusted_data, "Request")
    return Request(
        service=message.service,
        method=message.method,
        payload=message.payload,
        timeout_nano=message.timeout_nano,
        metadata=tuple((kv.key, kv.value) for kv in message.metadata),
    )


_OK_STATUS = b"\x0a\x00"
"""Field 1 (status), length-delimited, empty: an OK google.rpc.Status with no message and no details."""
_PAYLOAD_TAG = b"\x12"
"""Field 2 (payload), length-delimited."""


def encode_ok_response(payload: bytes) -> bytes:
    """Serialize ``Response(Status(), payload)`` without protobuf: byte-identical to :func:`encode_response`.

    The server's hot path: ``0a 00`` then, if ``payload`` is not empty, ``12 <varint length> payload``.
    """
    if not payload:
        return _OK_STATUS
    length = len(payload)
    varint = bytearray()
    while length > 0x7F:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return b"".join((_OK_STATUS, _PAYLOAD_TAG, varint, payload))


def encode_response(response: Response) -> bytes:
    """Serialize ``response``; the status is always present on the wire."""
    status = response.status
    if status.code == Code.OK and not status.message and not status.details:
        return encode_ok_response(response.payload)
    message = ttrpc_pb2.Response(payload=response.payload)
    message.status.SetInParent()
    message.status.code = response.status.code
    message.status.message = response.status.message
    for detail in response.status.details:
        message.status.details.add(type_url=detail.type_url, value=detail.value)
    return message.SerializeToString()


def decode_response(untrusted_data: bytes) -> Response:
    """Parse a Response payload; an absent status is OK.

    Raises:
        ProtocolError: not a valid Response message.
    """
    message = ttrpc_pb2.Response()
    _parse(message, untrusted_data, "Response")
    status = Status(
        code=message.status.code,
        message=message.status.message,
        details=tuple(Any(type_url=d.type_url, value=d.value) for d in message.status.details),
    )
    return Response(status=status, payload=message.payload)


def _parse(message: ttrpc_pb2.Request | ttrpc_pb2.Response, untrusted_data: bytes, what: str) -> None:
    try:
        message.ParseFromString(untrusted_data)
    except DecodeError as e:
        msg = f"ttrpc {what} payload is not a valid protobuf {what} message ({len(untrusted_data)} bytes)"
        raise ProtocolError(msg) from e
