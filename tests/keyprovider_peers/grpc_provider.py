"""An in-process gRPC key provider (``keyprovider.KeyProviderService``) with the cmd provider's wrap logic."""

from __future__ import annotations

from concurrent import futures

import grpc

from cocoguest.rpc._generated import keyprovider_pb2, keyprovider_pb2_grpc
from tests.keyprovider_peers.cmd_provider import PeerError, handle


class ProviderServicer(keyprovider_pb2_grpc.KeyProviderServiceServicer):
    """Serves WrapKey/UnWrapKey; records every request; aborts with PERMISSION_DENIED when it cannot unwrap."""

    def __init__(self, name: str, fmt: str = "go", key_file: str | None = None) -> None:
        self.name = name
        self.fmt = fmt
        self.key_file = key_file
        self.requests: list[tuple[str, bytes]] = []

    def _serve(self, method: str, op: str, request, context):  # type: ignore[no-untyped-def]
        data = request.KeyProviderKeyWrapProtocolInput
        self.requests.append((method, data))
        try:
            if f'"op":"{op}"' not in data.decode():
                raise PeerError(f"{method} called with a request that is not {op}")
            answer = handle(data, self.name, self.fmt, self.key_file)
        except (PeerError, KeyError, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        return keyprovider_pb2.keyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=answer)

    def WrapKey(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 - proto name
        return self._serve("WrapKey", "keywrap", request, context)

    def UnWrapKey(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 - proto name
        return self._serve("UnWrapKey", "keyunwrap", request, context)


def start_server(servicer: ProviderServicer) -> tuple[grpc.Server, int]:
    """Start a server on 127.0.0.1 with an ephemeral port; return it and the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    keyprovider_pb2_grpc.add_KeyProviderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
