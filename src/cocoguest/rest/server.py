"""The asyncio HTTP server of api-server-rest: one request per connection, routed by :class:`Router`.

Invariants:
    * SECURITY: the loopback check (``peer.is_loopback_peer``) runs on the socket's peer address before a byte
      of the request is interpreted; non-loopback clients get 403 and are disconnected. Headers never count.
    * Bounded: at most ``Limits.rest_max_connections`` open connections (more are closed at once); reading a
      request takes at most ``Limits.rest_read_timeout_s``, routing it (backend calls) at most
      ``Limits.rest_backend_timeout_s`` (then 500), writing the answer at most ``Limits.rest_write_timeout_s``.
    * A malformed request gets its 4xx (``HttpRequestError.status``) and the connection closes; a bug in a
      handler is logged and answered 500 without detail; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Self

from cocoguest.errors import HttpRequestError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rest.http import HttpResponse, encode_response, read_request
from cocoguest.rest.peer import is_loopback_peer
from cocoguest.rest.router import Router, forbidden, text

_logger = logging.getLogger(__name__)


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> ``(host, port)``.

    Raises:
        TransportError: not of that form.
    """
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        msg = f"invalid bind address {bind!r}: expected HOST:PORT (e.g. 127.0.0.1:8006)"
        raise TransportError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class RestServer:
    """Serves one :class:`Router` on a TCP address; see the module docstring."""

    def __init__(self, router: Router, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Serve ``router`` under ``limits``."""
        self._router = router
        self._limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def listen(self, bind: str) -> tuple[str, int]:
        """Start listening on ``bind`` (``HOST:PORT``; port 0 picks one); returns the bound ``(host, port)``.

        Raises:
            TransportError: the address is malformed or cannot be bound.
        """
        host, port = parse_bind(bind)
        try:
            self._server = await asyncio.start_server(
                self._on_connect, host, port, limit=self._limits.rest_max_head_bytes, reuse_address=True
            )
        except OSError as e:
            msg = f"api-server-rest cannot listen on {bind}: {e.strerror or e}"
            raise TransportError(msg) from e
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101  (always inside a task)
        if len(self._connections) >= self._limits.rest_max_connections:
            writer.close()
            return
        self._connections.add(task)
        try:
            response = await self._answer(reader, writer)
            async with asyncio.timeout(self._limits.rest_write_timeout_s):
                writer.write(encode_response(response))
                await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client went away or does not read: nothing to tell it
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> HttpResponse:
        peer = writer.get_extra_info("peername")
        family = writer.get_extra_info("socket").family if writer.get_extra_info("socket") else None
        host = str(peer[0]) if isinstance(peer, tuple) and family in (socket.AF_INET, socket.AF_INET6) else ""
        if not is_loopback_peer(host):
            return forbidden()  # SECURITY: before anything the client sent is read
        try:
            async with asyncio.timeout(self._limits.rest_read_timeout_s):
                request = await read_request(reader, self._limits)
        except HttpRequestError as e:
            return text(e.status, str(e))
        except TimeoutError:
            return text(408, "request not received in time")
        if request is None:
            return text(400, "no request")
        try:
            async with asyncio.timeout(self._limits.rest_backend_timeout_s):
                return await self._router.route(request)
        except TimeoutError:
            return text(
                500, f"{request.path}: the backend did not answer within {self._limits.rest_backend_timeout_s} s"
            )
        except Exception:  # the HTTP boundary: a bug becomes a 500 (logged), not a dead server
            _logger.exception("api-server-rest %s %s failed", request.method, request.path)
            return text(500, "internal error")
