"""One unary gRPC call with raw bytes both ways, its failures mapped as the ttrpc client maps them.

Invariant: the answer is bytes or a typed error: UNAVAILABLE is a retryable :class:`TransportError`, any other
status an :class:`RpcStatusError` carrying the code, and a non-bytes answer a :class:`ProtocolError`.
"""

from __future__ import annotations

import grpc
import grpc.aio

from cocoguest.errors import ProtocolError, RpcStatusError, TransportError
from cocoguest.rpc.ttrpc.codes import code_name


async def grpc_unary_bytes(
    channel: grpc.aio.Channel, service: str, method: str, payload: bytes, *, timeout_s: float, address: str
) -> bytes:
    """Call ``/service/method`` on ``channel`` with ``payload``; the untrusted answer bytes."""
    where = f"gRPC /{service}/{method} at {address}"
    call = channel.unary_unary(f"/{service}/{method}", None, None)  # raw bytes both ways
    try:
        untrusted = await call(payload, timeout=timeout_s)
    except grpc.aio.AioRpcError as e:
        code = e.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            msg = f"{where}: {e.details()}"
            raise TransportError(msg, retryable=True) from e
        number = int(code.value[0])
        raise RpcStatusError(number, e.details() or "", where=where, code_name=code_name(number)) from e
    if not isinstance(untrusted, bytes):
        msg = f"{where}: the answer is not bytes"
        raise ProtocolError(msg)
    return untrusted
