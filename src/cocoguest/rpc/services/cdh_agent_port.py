"""The CDH's :class:`~cocoguest.cdh.hub.AgentPort` over the AA's ttrpc (or gRPC) socket.

Invariant: each call opens a connection, makes one call with the client's deadline, and closes it; calls are
blocking and made from worker threads (each runs its own short event loop), never from the server's loop.
"""

from __future__ import annotations

import asyncio

from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc.services.attestation_agent_client import AaClient


class AaAgentPort:
    """GetToken and ExtendRuntimeMeasurement on the AA at ``address``."""

    def __init__(self, address: str, limits: Limits = DEFAULT_LIMITS) -> None:
        """Talk to the AA at ``address`` (``unix://``, ``vsock://`` or ``HOST:PORT``)."""
        self._address = address
        self._limits = limits

    def get_token(self, token_type: str) -> bytes:
        """See :meth:`AaClient.get_token`."""

        async def call() -> bytes:
            async with await AaClient.connect(self._address, limits=self._limits) as client:
                return await client.get_token(token_type)

        return asyncio.run(call())

    def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> str:
        """See :meth:`AaClient.extend_runtime_measurement`."""

        async def call() -> str:
            async with await AaClient.connect(self._address, limits=self._limits) as client:
                return await client.extend_runtime_measurement(domain, operation, content)

        return asyncio.run(call())
