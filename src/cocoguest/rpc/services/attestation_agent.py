"""The AA service ``attestation_agent.AttestationAgentService`` on ttrpc and gRPC (guest-components.md §4).

One table of handlers (:func:`aa_handlers`: serialized request -> serialized answer) serves both transports:
:func:`register_ttrpc` binds it to a :class:`TtrpcServer`, :func:`start_grpc_server` to a grpcio aio server
(raw-bytes method handlers, so both transports run the same parsing and the same agent calls). All seven
methods are served on both transports, BindInitData included (upstream serves it on gRPC only).

Status codes:
    * a request that is not the method's protobuf message: INVALID_ARGUMENT;
    * any error of the agent (a :class:`CocoError`): INTERNAL with upstream's message
      ``[ERROR:attestation-agent] <what> failed`` followed by ``: <the error>`` (upstream logs the cause and
      sends only the prefix; callers matching the prefix keep working, people reading it learn the cause).

Invariants:
    * Agent calls block (device IO, HTTP): they run in worker threads (``asyncio.to_thread``), never on the loop.
      GetTeeType and GetAdditionalTees only read the attesters' names (no IO): they are plain functions
      (:func:`aa_inline_handlers`), served by ttrpc as :func:`~cocoguest.rpc.ttrpc.server.inline` methods
      (no task per call) and by gRPC through a one-line async wrapper.
    * Requests are untrusted: only the generated protobuf parser reads them, under the transport's size cap
      (ttrpc frames ``Limits.ttrpc_max_message_bytes``, gRPC ``Limits.aa_grpc_max_message_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from cocoguest.attestation.agent import AttestationAgent
from cocoguest.errors import CocoError, RpcStatusError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import attestation_agent_pb2 as pb
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.server import CallContext, InlineHandler, Method, TtrpcServer, inline

_logger = logging.getLogger(__name__)

SERVICE: Final = "attestation_agent.AttestationAgentService"
AGENT_NAME: Final = "attestation-agent"

_M = TypeVar("_M", bound=Message)

RawHandler = Callable[[bytes], Awaitable[bytes]]
"""A transport-neutral unary method: serialized request in, serialized answer out."""
SyncHandler = Callable[[bytes], bytes]
"""A method that does no IO, as a plain function (same contract as :data:`RawHandler`)."""


class ServiceFailure(Exception):  # noqa: N818  (a status to send, not an error of cocoguest)
    """A call that ends with a status: ``code`` (google.rpc) and ``message``."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _failure(what: str, error: CocoError) -> ServiceFailure:
    _logger.error("%s failed: %s", what, error)
    return ServiceFailure(Code.INTERNAL, f"[ERROR:{AGENT_NAME}] {what} failed: {error}")


def aa_handlers(agent: AttestationAgent) -> dict[str, RawHandler]:
    """The seven AA methods over ``agent`` (names as in the proto)."""

    async def get_evidence(untrusted: bytes) -> bytes:
        request = _decode(pb.GetEvidenceRequest, untrusted, "GetEvidence")
        try:
            evidence = await asyncio.to_thread(agent.get_evidence, request.RuntimeData)
        except CocoError as e:
            raise _failure("AA-KBC get evidence", e) from e
        return pb.GetEvidenceResponse(Evidence=evidence).SerializeToString()

    async def get_additional_evidence(untrusted: bytes) -> bytes:
        request = _decode(pb.GetAdditionalEvidenceRequest, untrusted, "GetAdditionalEvidence")
        try:
            evidence = await asyncio.to_thread(agent.get_additional_evidence, request.RuntimeData)
        except CocoError as e:
            raise _failure("AA-KBC get additional evidence", e) from e
        return pb.GetEvidenceResponse(Evidence=evidence).SerializeToString()

    async def get_token(untrusted: bytes) -> bytes:
        request = _decode(pb.GetTokenRequest, untrusted, "GetToken")
        try:
            token = await asyncio.to_thread(agent.get_token, request.TokenType)
        except CocoError as e:
            raise _failure("AA-KBC get token", e) from e
        return pb.GetTokenResponse(Token=token).SerializeToString()

    async def extend_runtime_measurement(untrusted: bytes) -> bytes:
        request = _decode(pb.ExtendRuntimeMeasurementRequest, untrusted, "ExtendRuntimeMeasurement")
        register = request.RegisterIndex if request.HasField("RegisterIndex") else None
        try:
            result = await asyncio.to_thread(
                agent.extend_runtime_measurement, request.Domain, request.Operation, request.Content, register
            )
        except CocoError as e:
            raise _failure("AA extend runtime measurement", e) from e
        return pb.ExtendRuntimeMeasurementResponse(Result=result.name).SerializeToString()

    async def bind_init_data(untrusted: bytes) -> bytes:
        request = _decode(pb.BindInitDataRequest, untrusted, "BindInitData")
        try:
            await asyncio.to_thread(agent.bind_init_data, request.Digest)
        except CocoError as e:
            raise _failure("AA bind init data", e) from e
        return pb.BindInitDataResponse().SerializeToString()

    handlers: dict[str, RawHandler] = {
        "GetEvidence": get_evidence,
        "GetAdditionalEvidence": get_additional_evidence,
        "GetToken": get_token,
        "ExtendRuntimeMeasurement": extend_runtime_measurement,
        "BindInitData": bind_init_data,
    }
    handlers.update({name: _as_async(function) for name, function in aa_inline_handlers(agent).items()})
    return handlers


def aa_inline_handlers(agent: AttestationAgent) -> dict[str, SyncHandler]:
    """The AA methods that do no IO (GetTeeType, GetAdditionalTees), as plain functions."""

    def get_tee_type(untrusted: bytes) -> bytes:
        _decode(pb.GetTeeTypeRequest, untrusted, "GetTeeType")
        return pb.GetTeeTypeResponse(tee=agent.get_tee_type()).SerializeToString()

    def get_additional_tees(untrusted: bytes) -> bytes:
        _decode(pb.GetAdditionalTeesRequest, untrusted, "GetAdditionalTees")
        return pb.GetAdditionalTeesResponse(additional_tees=agent.get_additional_tees()).SerializeToString()

    return {"GetTeeType": get_tee_type, "GetAdditionalTees": get_additional_tees}


def _as_async(function: SyncHandler) -> RawHandler:
    async def method(untrusted: bytes) -> bytes:
        return function(untrusted)

    return method


def _decode(message_type: type[_M], untrusted: bytes, method: str) -> _M:
    message = message_type()
    try:
        message.ParseFromString(untrusted)
    except DecodeError as e:
        msg = f"{method}: the request is not a valid {type(message).__name__} ({e})"
        raise ServiceFailure(Code.INVALID_ARGUMENT, msg) from e
    return message


# --- ttrpc ----------------------------------------------------------------------------------------------


def register_ttrpc(server: TtrpcServer, agent: AttestationAgent) -> None:
    """Serve the AA service on ``server`` (ttrpc service ``attestation_agent.AttestationAgentService``)."""
    methods: dict[str, Method] = {name: _ttrpc_method(handler) for name, handler in aa_handlers(agent).items()}
    methods.update({name: _ttrpc_inline(function) for name, function in aa_inline_handlers(agent).items()})
    server.register(SERVICE, methods)


def _ttrpc_inline(function: SyncHandler) -> InlineHandler:
    def method(untrusted: bytes, _context: CallContext) -> bytes:
        try:
            return function(untrusted)
        except ServiceFailure as e:
            raise RpcStatusError(e.code, e.message) from e

    return inline(method)


def _ttrpc_method(handler: RawHandler) -> Callable[[bytes, CallContext], Awaitable[bytes]]:
    async def method(untrusted: bytes, _context: CallContext) -> bytes:
        try:
            return await handler(untrusted)
        except ServiceFailure as e:
            raise RpcStatusError(e.code, e.message) from e

    return method


# --- gRPC -----------------------------------------------------------------------------------------------

_GRPC_CODES: Final[Mapping[Code, grpc.StatusCode]] = {
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
}


def _grpc_method(handler: RawHandler) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
    async def method(untrusted: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return await handler(untrusted)
        except ServiceFailure as e:
            await context.abort(_GRPC_CODES.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
            raise  # pragma: no cover - abort() always raises

    return method


def grpc_handler(agent: AttestationAgent) -> grpc.GenericRpcHandler[bytes, bytes]:
    """The AA service as a gRPC generic handler (raw bytes in and out; paths ``/<SERVICE>/<Method>``)."""
    methods = {
        name: grpc.unary_unary_rpc_method_handler(_grpc_method(handler)) for name, handler in aa_handlers(agent).items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def start_grpc_server(
    agent: AttestationAgent, address: str, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[grpc.aio.Server, int]:
    """Serve the AA service over gRPC (plaintext) on ``address`` (``HOST:PORT``); return the server and port.

    Raises:
        TransportError: the address cannot be bound.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.aa_grpc_max_message_bytes),
            ("grpc.max_send_message_length", limits.aa_grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((grpc_handler(agent),))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        msg = f"attestation-agent gRPC: cannot listen on {address}: {e}"
        raise TransportError(msg) from e
    if port == 0:
        msg = f"attestation-agent gRPC: cannot listen on {address}"
        raise TransportError(msg)
    await server.start()
    _logger.info("gRPC server listening on %s (port %d)", address, port)
    return server, port
