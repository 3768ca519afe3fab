"""The CDH's SecureMount method (api.proto ``SecureMountService``): proto <-> ``cdh.storage`` adapter.

:func:`secure_mount_handler` builds the transport-neutral handler the CDH service registers (its
``secure_mount`` hook). Invariants:
    * The request is parsed only by the generated protobuf code; every failure, including a malformed request,
      is INTERNAL with upstream's message form ``[CDH] [ERROR]: <error>`` naming the device or option at fault.
    * The blocking work (cryptsetup, mkfs, mount; and ``fetch_key``, which may talk to the KBS) runs in a worker
      thread, so the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from google.protobuf.message import DecodeError

from cocoguest.cdh.storage.block_device import secure_mount
from cocoguest.cdh.storage.cryptsetup import Cryptsetup
from cocoguest.cdh.storage.keys import KeyFetcher
from cocoguest.cdh.storage.request import SecureMountRequest
from cocoguest.errors import CocoError, RpcStatusError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc.ttrpc.codes import Code

SECURE_MOUNT_SERVICE: Final = "api.SecureMountService"


def request_from_proto(untrusted: bytes) -> SecureMountRequest:
    """The domain request of a serialized ``SecureMountRequest``.

    Raises:
        RpcStatusError: INTERNAL, the bytes are not a SecureMountRequest.
    """
    message = pb.SecureMountRequest()
    try:
        message.ParseFromString(untrusted)
    except DecodeError as e:
        raise RpcStatusError(Code.INTERNAL, f"[CDH] [ERROR]: malformed SecureMountRequest: {e}") from e
    return SecureMountRequest(message.volume_type, dict(message.options), list(message.flags), message.mount_point)


def secure_mount_handler(
    fetch_key: KeyFetcher, *, cryptsetup: Cryptsetup | None = None, limits: Limits = DEFAULT_LIMITS
) -> Callable[[bytes, object], Awaitable[bytes]]:
    """The SecureMount handler: ``(serialized request, context) -> serialized SecureMountResponse``.

    ``cryptsetup`` defaults to cryptsetup's own PBKDF settings (tests pass a cheaper one).
    """

    async def handler(untrusted: bytes, _context: object) -> bytes:
        request = request_from_proto(untrusted)
        try:
            await asyncio.to_thread(secure_mount, request, fetch_key, cryptsetup=cryptsetup, limits=limits)
        except CocoError as e:
            raise RpcStatusError(Code.INTERNAL, f"[CDH] [ERROR]: {e}") from e
        return pb.SecureMountResponse().SerializeToString()

    return handler
