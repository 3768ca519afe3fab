"""An asyncio ttrpc server: unary calls dispatched on ``(service, method)`` (specs/ttrpc.md §7, §11).

Handlers are ``async def handler(request: bytes, context: CallContext) -> bytes`` over the serialized method
messages; ``rpc/services`` adapts them to the domain. A handler chooses a status by raising
:class:`~cocoguest.errors.RpcStatusError`; any other error becomes UNKNOWN (as Go and Rust servers do).

Invariants:
    * Every answer carries a status (code 0 on success), like ttrpc-rust.
    * SECURITY: a misbehaving connection is closed and only that one; the others keep being served. It is
      closed for a frame over ``Limits.ttrpc_max_message_bytes`` (after an INVALID_ARGUMENT answer with
      ttrpc-rust's message), a frame that is not a Request, a frame that takes longer than
      ``Limits.ttrpc_frame_read_timeout_s`` to arrive (slow client), a stream that ends inside a frame, a
      peer that does not read its answers within ``Limits.ttrpc_write_timeout_s``, and (if set) an idle
      ``Limits.ttrpc_idle_timeout_s``. Per-call problems (bad Request protobuf, even or reused stream id,
      streaming flags, unknown service or method) are answered with a status and the connection stays.
    * Bounded work: at most ``Limits.ttrpc_max_connections`` connections; per connection at most
      ``Limits.ttrpc_max_concurrent_calls`` calls in flight (further frames are not read until one ends) and
      one partial frame buffered; every call runs under a deadline: the request's ``timeout_nano`` capped at
      ``Limits.ttrpc_max_timeout_s`` (which is also the deadline of ``timeout_nano = 0``). An expired deadline
      answers DEADLINE_EXCEEDED ``timeout`` (ttrpc-rust's message).
    * Answers of concurrent calls are written whole, in completion order (one write lock per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Self

from cocoguest.errors import (
    CocoError,
    FrameTooLargeError,
    FramingError,
    ProtocolError,
    RpcStatusError,
    TransportError,
)
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc.ttrpc import transport
from cocoguest.rpc.ttrpc.address import Address, parse_address
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.framing import Frame, FrameDecoder, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Metadata, Request, Response, Status, decode_request, encode_response

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about its call besides the request bytes."""

    service: str
    method: str
    metadata: Metadata
    """The request's metadata pairs, untrusted (any client may send any header)."""
    deadline: float
    """``asyncio`` loop time at which the call is cancelled and answered DEADLINE_EXCEEDED."""

    def metadata_values(self, key: str) -> tuple[str, ...]:
        """All values sent for ``key`` (exact, case-sensitive match), in order."""
        return tuple(v for k, v in self.metadata if k == key)


Handler = Callable[[bytes, CallContext], Awaitable[bytes]]
"""A unary method: serialized request message in, serialized response message out."""


class TtrpcServer:
    """A ttrpc server on one or more addresses; see the module docstring for its guarantees.

    Use as ``async with TtrpcServer(limits) as server: server.register(...); await server.listen(addr)``.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create a server with no services and no listeners."""
        self._limits = limits
        self._services: dict[str, dict[str, Handler]] = {}
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()

    def register(self, service: str, methods: Mapping[str, Handler]) -> None:
        """Serve ``methods`` (name -> handler) under ``service`` (``package.Service``, as in the proto).

        Raises:
            ValueError: ``service`` is already registered (a programming error).
        """
        if service in self._services:
            msg = f"ttrpc service {service!r} is already registered"
            raise ValueError(msg)
        self._services[service] = dict(methods)

    async def listen(self, address: str) -> Address:
        """Start accepting connections on ``address``; return the address actually bound.

        Raises:
            ConfigError: a malformed address, or a non-socket file at the unix socket path.
            UnsupportedError: vsock or tcp is not available.
            TransportError: the bind failed.
        """
        parsed = parse_address(address)
        sock = transport.bind_listener(parsed)
        try:
            listener = await asyncio.start_server(self._on_connect, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._listeners.append(listener)
        bound = transport.bound_address(parsed, sock)
        _logger.info("ttrpc server listening on %s", bound)
        return bound

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening and close every connection (in-flight calls are cancelled)."""
        for listener in self._listeners:
            listener.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._limits.ttrpc_max_connections:
            # SECURITY: bounded connections; the newcomer is closed, established ones keep working.
            _logger.warning("ttrpc: refusing a connection: %d already open", len(self._connections))
            writer.transport.abort()
            return
        connection = _Connection(self._services, self._limits, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)


class _Connection:
    """One accepted connection: a read loop that dispatches calls to tasks, and a locked writer."""

    def __init__(
        self,
        services: Mapping[str, Mapping[str, Handler]],
        limits: Limits,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._services = services
        self._limits = limits
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_data_length=limits.ttrpc_max_message_bytes)
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(limits.ttrpc_max_concurrent_calls)
        self._calls: set[asyncio.Task[None]] = set()
        self._last_stream_id = 0
        self._loop = asyncio.get_running_loop()
        self._frame_started: float | None = None
        self._aborted = False
        self.task = asyncio.current_task()
        self._peer = _peer_name(writer)

    def abort(self) -> None:
        """Drop the connection now; the read loop then ends and cancels the calls in flight."""
        self._aborted = True
        self._writer.transport.abort()

    async def run(self) -> None:
        """Serve the connection until the peer closes it or misbehaves."""
        try:
            await self._read_loop()
            # A clean end of stream may be a half-close: the calls in flight still answer (within their deadlines).
            if self._calls and not self._aborted:
                await asyncio.gather(*self._calls, return_exceptions=True)
        except FrameTooLargeError as e:
            _logger.warning("ttrpc %s: closing: %s", self._peer, e)
            with contextlib.suppress(OSError, TransportError):
                await self._send(e.stream_id, Response(Status(Code.INVALID_ARGUMENT, str(e))))
        except (ProtocolError, TransportError) as e:
            _logger.warning("ttrpc %s: closing: %s", self._peer, e)
        except OSError as e:
            _logger.info("ttrpc %s: connection error: %s", self._peer, e)
        finally:
            for call in self._calls:
                call.cancel()
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)
            self._writer.transport.abort()

    def _read_deadline(self) -> float | None:
        if self._decoder.buffered:
            if self._frame_started is None:
                self._frame_started = self._loop.time()
            return self._frame_started + self._limits.ttrpc_frame_read_timeout_s
        self._frame_started = None
        if self._limits.ttrpc_idle_timeout_s is None:
            return None
        return self._loop.time() + self._limits.ttrpc_idle_timeout_s

    async def _read_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout_at(self._read_deadline()):
                    chunk = await self._reader.read(self._limits.ttrpc_read_chunk_bytes)
            except TimeoutError as e:
                if self._frame_started is None and self._calls:
                    continue  # idle time counts only while no call is in flight
                raise TransportError(self._timeout_reason()) from e
            if not chunk:
                self._decoder.end()
                return
            self._decoder.feed(chunk)
            while (frame := self._decoder.next_frame()) is not None:
                await self._dispatch(frame)

    def _timeout_reason(self) -> str:
        if self._frame_started is not None:
            limit = self._limits.ttrpc_frame_read_timeout_s
            return f"a frame did not arrive whole within {limit:g}s (slow client)"
        return f"idle for {self._limits.ttrpc_idle_timeout_s:g}s"

    async def _dispatch(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if frame.message_type != MessageType.REQUEST:
            # Only unary calls are served: no stream is ever open for Data frames to belong to.
            msg = f"unexpected ttrpc message type {frame.message_type} on stream {stream_id}"
            raise FramingError(msg)
        if stream_id % 2 == 0:
            await self._send_status(stream_id, Code.INVALID_ARGUMENT, "stream id must be odd")
            return
        if stream_id <= self._last_stream_id:
            await self._send_status(stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
            return
        self._last_stream_id = stream_id
        if frame.flags != 0:
            await self._send_status(stream_id, Code.UNIMPLEMENTED, "streaming calls are not supported")
            return
        try:
            untrusted_request = decode_request(frame.payload)
        except ProtocolError as e:
            await self._send_status(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
            return
        # Back-pressure: with every slot busy, no further frame is read from this connection.
        await self._slots.acquire()
        call = asyncio.create_task(self._call(stream_id, untrusted_request))
        self._calls.add(call)
        call.add_done_callback(self._call_done)

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._slots.release()

    def _timeout_s(self, timeout_nano: int) -> float:
        cap = self._limits.ttrpc_max_timeout_s
        if timeout_nano == 0:
            return cap
        return min(timeout_nano / 1e9, cap)

    async def _call(self, stream_id: int, untrusted_request: Request) -> None:
        response = await self._invoke(untrusted_request)
        try:
            await self._send(stream_id, response)
        except (OSError, TransportError):
            self.abort()

    async def _invoke(self, untrusted_request: Request) -> Response:
        service, method = untrusted_request.service, untrusted_request.method
        methods = self._services.get(service)
        if methods is None:
            return Response(Status(Code.UNIMPLEMENTED, f"{service} service does not exist"))
        handler = methods.get(method)
        if handler is None:
            return Response(Status(Code.UNIMPLEMENTED, f"{method} method"))
        if untrusted_request.timeout_nano < 0:
            # The client's deadline passed before the request was sent (Go sends the remaining time).
            return Response(Status(Code.DEADLINE_EXCEEDED, "timeout"))
        timeout_s = self._timeout_s(untrusted_request.timeout_nano)
        context = CallContext(service, method, untrusted_request.metadata, self._loop.time() + timeout_s)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                payload: object = await handler(untrusted_request.payload, context)
        except TimeoutError:
            if deadline.expired():
                return Response(Status(Code.DEADLINE_EXCEEDED, "timeout"))
            return Response(Status(Code.UNKNOWN, f"/{service}/{method}: timed out"))
        except RpcStatusError as e:
            return Response(Status(e.code, e.status_message))
        except CocoError as e:
            return Response(Status(Code.UNKNOWN, str(e)))
        except Exception:  # the rpc boundary: a handler bug becomes a status (logged), not a dead server
            _logger.exception("ttrpc handler /%s/%s failed", service, method)
            return Response(Status(Code.UNKNOWN, f"/{service}/{method}: internal error"))
        if not isinstance(payload, bytes):
            _logger.error("ttrpc handler /%s/%s returned %s, not bytes", service, method, type(payload).__name__)
            return Response(Status(Code.INTERNAL, f"/{service}/{method}: internal error"))
        return Response(Status(Code.OK), payload)

    async def _send_status(self, stream_id: int, code: Code, message: str) -> None:
        await self._send(stream_id, Response(Status(code, message)))

    async def _send(self, stream_id: int, response: Response) -> None:
        try:
            payload = encode_response(response)
        except (ValueError, TypeError):
            # A handler's status that protobuf cannot carry (code outside int32, message not encodable).
            _logger.exception("ttrpc %s: cannot encode the answer on stream %d", self._peer, stream_id)
            payload = encode_response(Response(Status(Code.UNKNOWN, "internal error: unencodable status")))
        if len(payload) > self._limits.ttrpc_max_message_bytes:
            status = Status(Code.RESOURCE_EXHAUSTED, f"response of {len(payload)} bytes exceeds the ttrpc maximum")
            payload = encode_response(Response(status))
        data = encode_frame(
            Frame(stream_id, MessageType.RESPONSE, 0, payload), max_data_length=self._limits.ttrpc_max_message_bytes
        )
        async with self._write_lock:
            self._writer.write(data)
            try:
                async with asyncio.timeout(self._limits.ttrpc_write_timeout_s):
                    await self._writer.drain()
            except TimeoutError as e:
                # SECURITY: a peer that does not read its answers must not pin buffers forever.
                limit = self._limits.ttrpc_write_timeout_s
                msg = f"ttrpc {self._peer}: the peer did not read an answer within {limit:g}s"
                raise TransportError(msg) from e


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return repr(peer) if peer else "unix peer"
