"""A minimal client of the CDH's GetResource service over ttrpc (what api-server-rest needs from the CDH).

Invariants:
    * Every call has a deadline (``timeout_s``, default ``Limits.ttrpc_call_timeout_s``, as upstream's 50 s).
    * A non-OK status raises :class:`RpcStatusError` with the CDH's code and message (e.g. ``[CDH] [ERROR]: ...``).
    * Answers are untrusted: parsed only by the generated protobuf code, within the ttrpc frame cap.
"""

from __future__ import annotations

from typing import Final, Self

from google.protobuf.message import DecodeError

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc.ttrpc.client import TtrpcClient

DEFAULT_CDH_TTRPC_ADDRESS: Final = "unix:///run/confidential-containers/cdh.sock"
GET_RESOURCE_SERVICE: Final = "api.GetResourceService"


class CdhClient:
    """One ttrpc connection to a confidential data hub; see the module docstring."""

    def __init__(self, address: str, ttrpc: TtrpcClient, *, timeout_s: float) -> None:
        """Wrap an open connection (use :meth:`connect`)."""
        self._address = address
        self._ttrpc = ttrpc
        self._timeout_s = timeout_s

    @classmethod
    async def connect(cls, address: str, *, timeout_s: float | None = None, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Connect to the CDH at ``address`` (``unix://``, ``vsock://``).

        Raises:
            ConfigError: a malformed address.
            TransportError: the connection failed.
        """
        timeout = timeout_s if timeout_s is not None else limits.ttrpc_call_timeout_s
        return cls(address, await TtrpcClient.connect(address, limits=limits), timeout_s=timeout)

    async def get_resource(self, resource_path: str) -> bytes:
        """GetResource: the bytes of ``resource_path`` (a full resource URI, ``kbs:///repo/type/tag``)."""
        request = pb.GetResourceRequest(ResourcePath=resource_path)
        untrusted = await self._ttrpc.call(
            GET_RESOURCE_SERVICE, "GetResource", request.SerializeToString(), timeout_s=self._timeout_s
        )
        answer = pb.GetResourceResponse()
        try:
            answer.ParseFromString(untrusted)
        except DecodeError as e:
            msg = f"confidential data hub {self._address} GetResource({resource_path}): malformed answer ({e})"
            raise ProtocolError(msg) from e
        return answer.Resource

    async def close(self) -> None:
        """Close the connection."""
        await self._ttrpc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
