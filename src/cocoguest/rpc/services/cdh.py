"""The CDH services of api.proto and keyprovider.proto on ttrpc and gRPC (guest-components.md §8.1, §8.2).

One socket serves five services, as upstream's ttrpc-cdh and grpc-cdh:

    ``api.SealedSecretService/UnsealSecret``, ``api.GetResourceService/GetResource``,
    ``keyprovider.KeyProviderService/UnWrapKey``, ``api.SecureMountService/SecureMount``,
    ``api.ImagePullService/PullImage``.

SecureMount is a hook: :class:`CdhServices` has a ``secure_mount`` slot (a callable taking the decoded request)
that answers UNIMPLEMENTED until the secure-mount work sets it.

Status codes: a request that is not the method's message is INVALID_ARGUMENT; any :class:`CocoError` is INTERNAL
with upstream's message ``[CDH] [ERROR]: <method> <subject>: <error>``, naming the resource, secret or image.

Invariants:
    * Hub calls block (KBS, registry, AA): they run in worker threads, never on the event loop; PullImage in
      threads of its own (``Limits.cdh_max_concurrent_pulls``), the other hub calls in others
      (``Limits.cdh_max_concurrent_calls``), so pulls are not serialised (upstream's mutex) and slow pulls never
      hold up a GetResource, UnsealSecret or UnWrapKey (tests/unit/test_cdh_services_workers.py).
    * Requests are untrusted: only the generated protobuf parser reads them, under the transport's size cap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from cocoguest.cdh.hub import Hub
from cocoguest.errors import CocoError, RpcStatusError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc._generated import keyprovider_pb2 as kp
from cocoguest.rpc.services.attestation_agent import ServiceFailure
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.server import CallContext, TtrpcServer

_logger = logging.getLogger(__name__)

SEALED_SECRET_SERVICE: Final = "api.SealedSecretService"  # noqa: S105  (a service name)
GET_RESOURCE_SERVICE: Final = "api.GetResourceService"
KEY_PROVIDER_SERVICE: Final = "keyprovider.KeyProviderService"
SECURE_MOUNT_SERVICE: Final = "api.SecureMountService"
IMAGE_PULL_SERVICE: Final = "api.ImagePullService"
ERROR_PREFIX: Final = "[CDH] [ERROR]: "

_M = TypeVar("_M", bound=Message)
_T = TypeVar("_T")
_P = ParamSpec("_P")
RawHandler = Callable[[bytes], Awaitable[bytes]]
SecureMountHook = Callable[[pb.SecureMountRequest], Awaitable[None]]
"""Serves one SecureMount request (set by the secure-mount work); raises CocoError on failure."""


def _decode(message_type: type[_M], untrusted: bytes, method: str) -> _M:
    message = message_type()
    try:
        message.ParseFromString(untrusted)
    except DecodeError as e:
        msg = f"{ERROR_PREFIX}{method}: the request is not a valid {type(message).__name__} ({e})"
        raise ServiceFailure(Code.INVALID_ARGUMENT, msg) from e
    return message


def _failure(method: str, subject: str, error: CocoError) -> ServiceFailure:
    _logger.error("%s %s failed: %s", method, subject, error)
    return ServiceFailure(Code.INTERNAL, f"{ERROR_PREFIX}{method} {subject}: {error}")


@dataclass
class CdhServices:
    """The handler table over a :class:`Hub`; ``secure_mount`` is the SecureMount hook (None: UNIMPLEMENTED)."""

    hub: Hub
    secure_mount: SecureMountHook | None = None
    limits: Limits = DEFAULT_LIMITS
    _pull_workers: ThreadPoolExecutor = field(init=False)
    _call_workers: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._pull_workers = ThreadPoolExecutor(self.limits.cdh_max_concurrent_pulls, thread_name_prefix="cdh-pull")
        self._call_workers = ThreadPoolExecutor(self.limits.cdh_max_concurrent_calls, thread_name_prefix="cdh-call")

    async def _in(
        self, workers: ThreadPoolExecutor, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``function(*args, **kwargs)`` in one of ``workers``' threads."""
        return await asyncio.get_running_loop().run_in_executor(workers, functools.partial(function, *args, **kwargs))

    def handlers(self) -> dict[str, dict[str, RawHandler]]:
        """``{service: {method: handler}}`` for both transports."""
        return {
            SEALED_SECRET_SERVICE: {"UnsealSecret": self._unseal_secret},
            GET_RESOURCE_SERVICE: {"GetResource": self._get_resource},
            KEY_PROVIDER_SERVICE: {"UnWrapKey": self._unwrap_key},
            SECURE_MOUNT_SERVICE: {"SecureMount": self._secure_mount},
            IMAGE_PULL_SERVICE: {"PullImage": self._pull_image},
        }

    async def _get_resource(self, untrusted: bytes) -> bytes:
        request = _decode(pb.GetResourceRequest, untrusted, "GetResource")
        try:
            resource = await self._in(self._call_workers, self.hub.get_resource, request.ResourcePath)
        except CocoError as e:
            raise _failure("GetResource", f"resource {request.ResourcePath[:200]!r}", e) from e
        return pb.GetResourceResponse(Resource=resource).SerializeToString()

    async def _unseal_secret(self, untrusted: bytes) -> bytes:
        request = _decode(pb.UnsealSecretInput, untrusted, "UnsealSecret")
        try:
            plaintext = await self._in(self._call_workers, self.hub.unseal_secret, request.secret)
        except CocoError as e:
            raise _failure("UnsealSecret", "secret", e) from e
        return pb.UnsealSecretOutput(plaintext=plaintext).SerializeToString()

    async def _unwrap_key(self, untrusted: bytes) -> bytes:
        request = _decode(kp.keyProviderKeyWrapProtocolInput, untrusted, "UnWrapKey")
        try:
            answer = await self._in(self._call_workers, self.hub.unwrap_key, request.KeyProviderKeyWrapProtocolInput)
        except CocoError as e:
            raise _failure("UnWrapKey", "annotation packet", e) from e
        return kp.keyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=answer).SerializeToString()

    async def _secure_mount(self, untrusted: bytes) -> bytes:
        request = _decode(pb.SecureMountRequest, untrusted, "SecureMount")
        if self.secure_mount is None:
            raise ServiceFailure(Code.UNIMPLEMENTED, f"{ERROR_PREFIX}SecureMount is not available in this build")
        try:
            await self.secure_mount(request)
        except CocoError as e:
            raise _failure("SecureMount", f"{request.volume_type[:64]!r} at {request.mount_point[:200]!r}", e) from e
        return pb.SecureMountResponse().SerializeToString()

    async def _pull_image(self, untrusted: bytes) -> bytes:
        request = _decode(pb.ImagePullRequest, untrusted, "PullImage")
        try:
            pulled = await self._in(
                self._pull_workers, self.hub.pull_image, request.image_url, Path(request.bundle_path)
            )
        except CocoError as e:
            raise _failure("PullImage", f"image {request.image_url[:300]!r}", e) from e
        return pb.ImagePullResponse(manifest_digest=pulled.manifest_digest).SerializeToString()


# --- ttrpc ----------------------------------------------------------------------------------------------


def register_ttrpc(server: TtrpcServer, services: CdhServices) -> None:
    """Serve the five CDH services on ``server``."""
    for service, methods in services.handlers().items():
        server.register(service, {name: _ttrpc_method(handler) for name, handler in methods.items()})


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
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}


def _grpc_method(handler: RawHandler) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
    async def method(untrusted: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return await handler(untrusted)
        except ServiceFailure as e:
            await context.abort(_GRPC_CODES.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
            raise  # pragma: no cover - abort() always raises

    return method


async def start_grpc_server(
    services: CdhServices, address: str, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[grpc.aio.Server, int]:
    """Serve the CDH services over gRPC (plaintext) on ``HOST:PORT``; return the server and port.

    Raises:
        TransportError: the address cannot be bound.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.cdh_grpc_max_message_bytes),
            ("grpc.max_send_message_length", limits.cdh_grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    for service, methods in services.handlers().items():
        table = {name: grpc.unary_unary_rpc_method_handler(_grpc_method(h)) for name, h in methods.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, table),))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        msg = f"confidential-data-hub gRPC: cannot listen on {address}: {e}"
        raise TransportError(msg) from e
    if port == 0:
        msg = f"confidential-data-hub gRPC: cannot listen on {address}"
        raise TransportError(msg)
    await server.start()
    return server, port
