"""The CDH's SecureMount method (api.proto ``SecureMountService``): proto <-> ``cdh.storage`` adapter.

:func:`secure_mount_hook` is what the CDH service's ``secure_mount`` slot takes (``CdhServices.secure_mount``:
a decoded ``SecureMountRequest`` in, ``None`` out, :class:`CocoError` on failure). Wiring, with the hub's
resource and unseal services as the key fetcher::

    CdhServices(hub, secure_mount=secure_mount_hook(hub_key_fetcher(hub.get_resource, hub.unseal_secret)))

:func:`secure_mount_handler` serves the same hook as a stand-alone ttrpc handler (tests, one-service servers).

Invariants:
    * The blocking work (cryptsetup, mkfs, mount; and ``fetch_key``, which may talk to the KBS) runs in a worker
      thread, so the event loop keeps serving other calls.
    * As a stand-alone handler every failure is INTERNAL with upstream's form ``[CDH] [ERROR]: <error>`` naming
      the device or option at fault.
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
ERROR_PREFIX: Final = "[CDH] [ERROR]: "


def request_from_message(message: pb.SecureMountRequest) -> SecureMountRequest:
    """The domain request of a decoded ``SecureMountRequest`` (values still untrusted)."""
    return SecureMountRequest(message.volume_type, dict(message.options), list(message.flags), message.mount_point)


def hub_key_fetcher(get_resource: Callable[[str], bytes], unseal_secret: Callable[[bytes], bytes]) -> KeyFetcher:
    """A key fetcher over the CDH's services: ``sealed.…`` keys are unsealed, ``kbs://…`` keys fetched."""

    def fetch(uri: str) -> bytes:
        return unseal_secret(uri.encode("utf-8")) if uri.startswith("sealed.") else get_resource(uri)

    return fetch


def secure_mount_hook(
    fetch_key: KeyFetcher, *, cryptsetup: Cryptsetup | None = None, limits: Limits = DEFAULT_LIMITS
) -> Callable[[pb.SecureMountRequest], Awaitable[None]]:
    """The CDH's SecureMount hook; ``cryptsetup`` defaults to cryptsetup's own PBKDF settings."""

    async def hook(message: pb.SecureMountRequest) -> None:
        request = request_from_message(message)
        await asyncio.to_thread(secure_mount, request, fetch_key, cryptsetup=cryptsetup, limits=limits)

    return hook


def secure_mount_handler(
    fetch_key: KeyFetcher, *, cryptsetup: Cryptsetup | None = None, limits: Limits = DEFAULT_LIMITS
) -> Callable[[bytes, object], Awaitable[bytes]]:
    """The hook as a ttrpc handler: ``(serialized request, context) -> serialized SecureMountResponse``."""
    hook = secure_mount_hook(fetch_key, cryptsetup=cryptsetup, limits=limits)

    async def handler(untrusted: bytes, _context: object) -> bytes:
        message = pb.SecureMountRequest()
        try:
            message.ParseFromString(untrusted)
        except DecodeError as e:
            raise RpcStatusError(Code.INVALID_ARGUMENT, f"{ERROR_PREFIX}malformed SecureMountRequest: {e}") from e
        try:
            await hook(message)
        except CocoError as e:
            raise RpcStatusError(Code.INTERNAL, f"{ERROR_PREFIX}{e}") from e
        return pb.SecureMountResponse().SerializeToString()

    return handler
