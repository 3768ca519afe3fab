"""coco-keyprovider's gRPC service: ``keyprovider.KeyProviderService`` (protos/keyprovider.proto, ocicrypt.md §5.5).

``WrapKey`` hands the request's JSON to :class:`~cocoguest.keyprovider.wrap.KeyWrapper`; ``UnWrapKey`` is
``UNIMPLEMENTED`` (as upstream's coco_keyprovider: unwrapping happens in the guest, through the KBS).

Invariants:
    * A request larger than ``Limits.keyprovider_server_max_request_bytes`` is refused by gRPC itself
      (``RESOURCE_EXHAUSTED``) before the handler runs.
    * Failures map to statuses the ocicrypt client shows to the user: bad parameters or a bad request ->
      ``INVALID_ARGUMENT``; the KBS refused or could not be reached -> ``FAILED_PRECONDITION`` (not
      ``UNAVAILABLE``, which clients retry); anything else from cocoguest -> ``INTERNAL``. The detail is the
      error's one-line message, which never contains the KEK.
    * At most ``Limits.keyprovider_server_workers`` calls run at once.
"""

from __future__ import annotations

from concurrent import futures

import grpc

from cocoguest.errors import (
    CocoError,
    ConfigError,
    KbsProtocolError,
    ProtocolError,
    TransportError,
    UnsupportedError,
)
from cocoguest.keyprovider.wrap import KeyWrapper
from cocoguest.limits import Limits
from cocoguest.rpc._generated import keyprovider_pb2, keyprovider_pb2_grpc


def _status_of(error: CocoError) -> grpc.StatusCode:
    if isinstance(error, TransportError | KbsProtocolError):  # the KBS, not the request, is at fault
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, ConfigError | UnsupportedError | ProtocolError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class KeyProviderServicer(keyprovider_pb2_grpc.KeyProviderServiceServicer):
    """The gRPC face of a :class:`KeyWrapper`."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        """Serve ``wrapper``."""
        self._wrapper = wrapper

    def WrapKey(  # noqa: N802  (the proto's method name)
        self, request: keyprovider_pb2.keyProviderKeyWrapProtocolInput, context: grpc.ServicerContext
    ) -> keyprovider_pb2.keyProviderKeyWrapProtocolOutput:
        """Wrap the private options of the request; abort with a status on failure."""
        try:
            answer = self._wrapper.handle(request.KeyProviderKeyWrapProtocolInput)
        except CocoError as e:
            context.abort(_status_of(e), str(e))
        return keyprovider_pb2.keyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=answer)

    def UnWrapKey(  # noqa: N802  (the proto's method name)
        self, request: keyprovider_pb2.keyProviderKeyWrapProtocolInput, context: grpc.ServicerContext
    ) -> keyprovider_pb2.keyProviderKeyWrapProtocolOutput:
        """Refused: coco-keyprovider only wraps."""
        del request
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "coco-keyprovider implements WrapKey only")


def start_keyprovider_server(address: str, wrapper: KeyWrapper, limits: Limits) -> tuple[grpc.Server, int]:
    """Serve ``wrapper`` on ``address`` (``HOST:PORT``; port 0 picks one); return the server and its port.

    Raises:
        TransportError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.keyprovider_server_workers),
        options=[
            ("grpc.max_receive_message_length", limits.keyprovider_server_max_request_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=limits.keyprovider_server_max_calls,
    )
    keyprovider_pb2_grpc.add_KeyProviderServiceServicer_to_server(KeyProviderServicer(wrapper), server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        msg = f"coco-keyprovider: cannot listen on {address}: {e}"
        raise TransportError(msg) from e
    server.start()
    return server, port
