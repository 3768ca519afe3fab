"""An asyncio ttrpc server: unary calls dispatched on ``(service, method)`` (specs/ttrpc.md §7, §11).

Handlers are ``async def handler(request: bytes, context: CallContext) -> bytes`` over the serialized method
messages; ``rpc/services`` adapts them to the domain. A handler chooses a status by raising
:class:`~cocoguest.errors.RpcStatusError`; any other error becomes UNKNOWN (as Go and Rust servers do).
A method that never waits (no IO, no await, microseconds of work) may be registered as :func:`inline`: it
runs on the loop straight from the read callback, with no task and no deadline timer (it cannot be late).

Each connection is an ``asyncio.BufferedProtocol`` (no StreamReader/StreamWriter, no per-connection task):
bytes are received into a ``Limits.ttrpc_read_chunk_bytes`` buffer, frames are decoded in the callback and
every answer is one ``transport.write`` of header and body. Read and write timeouts are one watchdog timer
per connection that is re-armed only when it fires, so a call costs no timer of its own besides the
deadline of a non-inline handler.

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
    * Answers of concurrent calls are written whole, in completion order (each is one ``transport.write``).
    * SECURITY: bounded output: while the transport's buffer is over its high-water mark no further frame is
      dispatched, and a non-inline call waits for the buffer to drain before writing its answer, so a
      connection buffers at most the high-water mark plus one answer per call that was already in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Self, cast

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
from cocoguest.rpc.ttrpc.framing import Frame, FrameDecoder, MessageType, frame_bytes
from cocoguest.rpc.ttrpc.messages import (
    Metadata,
    Response,
    Status,
    decode_request,
    encode_ok_response,
    encode_response,
)

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


@dataclass(frozen=True, slots=True)
class InlineHandler:
    """A unary method that completes without waiting; build it with :func:`inline`."""

    function: Callable[[bytes, CallContext], bytes]


def inline(function: Callable[[bytes, CallContext], bytes]) -> InlineHandler:
    """Mark ``function`` as an inline method: called on the event loop in the read callback, no task.

    Only for methods that do no IO and finish in microseconds (e.g. answering a constant): while it runs,
    no other connection is served. Its errors map to statuses exactly as an async handler's do.
    """
    return InlineHandler(function)


Method = Handler | InlineHandler
"""What :meth:`TtrpcServer.register` accepts per method name."""


class TtrpcServer:
    """A ttrpc server on one or more addresses; see the module docstring for its guarantees.

    Use as ``async with TtrpcServer(limits) as server: server.register(...); await server.listen(addr)``.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create a server with no services and no listeners."""
        self._limits = limits
        self._services: dict[str, dict[str, Method]] = {}
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()

    def register(self, service: str, methods: Mapping[str, Method]) -> None:
        """Serve ``methods`` (name -> handler, or :func:`inline` handler) under ``service`` (``package.Service``).

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
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(self._new_connection, sock=sock)
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
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        if connections:
            await asyncio.gather(*(c.closed for c in connections), return_exceptions=True)
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _new_connection(self) -> _Connection:
        return _Connection(self._services, self._limits, self._connections)


class _Connection(asyncio.BufferedProtocol):
    """One accepted connection: frames decoded in the read callback, calls inline or in tasks."""

    def __init__(
        self, services: Mapping[str, Mapping[str, Method]], limits: Limits, registry: set[_Connection]
    ) -> None:
        self._services = services
        self._limits = limits
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(max_data_length=limits.ttrpc_max_message_bytes)
        self._read_buffer = bytearray(limits.ttrpc_read_chunk_bytes)
        self._transport: asyncio.Transport | None = None
        self._peer = "unix peer"
        self._calls: set[asyncio.Task[None]] = set()
        self._last_stream_id = 0
        self._frame_started: float | None = None
        self._last_activity = self._loop.time()
        self._watchdog: asyncio.TimerHandle | None = None
        self._write_paused_at: float | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._eof = False
        self._closing = False
        self.closed: asyncio.Future[None] = self._loop.create_future()
        """Done when the connection is gone (the server's ``close`` waits for it)."""

    # --- asyncio callbacks ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if len(self._registry) >= self._limits.ttrpc_max_connections:
            # SECURITY: bounded connections; the newcomer is closed, established ones keep working.
            _logger.warning("ttrpc: refusing a connection: %d already open", len(self._registry))
            self._closing = True
            self._transport.abort()
            return
        self._registry.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = repr(peer)
        self._arm_watchdog()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._registry.discard(self)
        if exc is not None and not isinstance(exc, ConnectionResetError | BrokenPipeError):
            _logger.info("ttrpc %s: connection error: %s", self._peer, exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
        for call in self._calls:
            call.cancel()
        self._wake_writers(TransportError(f"ttrpc {self._peer}: the connection is closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        self._last_activity = self._loop.time()
        try:
            with memoryview(self._read_buffer) as view:
                self._decoder.feed(view[:nbytes])
        except ProtocolError as e:
            self._fail(str(e))
            return
        self._process_frames()

    def eof_received(self) -> bool:
        try:
            self._decoder.end()
        except ProtocolError as e:
            self._fail(str(e))
            return False
        # A clean end of stream may be a half-close: the calls in flight still answer (within their deadlines).
        self._eof = True
        self._maybe_finish()
        return True

    def pause_writing(self) -> None:
        # SECURITY: the peer is not reading its answers: stop taking its requests until it does.
        self._write_paused_at = self._loop.time()
        self._pause_reading()
        self._arm_watchdog()

    def resume_writing(self) -> None:
        self._write_paused_at = None
        self._wake_writers(None)
        self._resume_reading()

    # --- frames and calls -----------------------------------------------------------------------------------

    def _process_frames(self) -> None:
        """Dispatch the complete frames buffered (until back-pressure pauses reading); errors close the connection."""
        try:
            while not self._reading_paused and not self._closing:
                frame = self._decoder.next_frame()
                if frame is None:
                    break
                self._dispatch(frame)
        except FrameTooLargeError as e:
            _logger.warning("ttrpc %s: closing: %s", self._peer, e)
            self._write(e.stream_id, encode_response(Response(Status(Code.INVALID_ARGUMENT, str(e)))))
            self._close_after_flush()
            return
        except ProtocolError as e:
            self._fail(str(e))
            return
        if self._decoder.buffered:
            if self._frame_started is None:
                self._frame_started = self._last_activity
                self._arm_watchdog()
        else:
            self._frame_started = None

    def _dispatch(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if frame.message_type != MessageType.REQUEST:
            # Only unary calls are served: no stream is ever open for Data frames to belong to.
            msg = f"unexpected ttrpc message type {frame.message_type} on stream {stream_id}"
            raise FramingError(msg)
        if stream_id % 2 == 0:
            self._write_status(stream_id, Code.INVALID_ARGUMENT, "stream id must be odd")
            return
        if stream_id <= self._last_stream_id:
            self._write_status(stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
            return
        self._last_stream_id = stream_id
        if frame.flags != 0:
            self._write_status(stream_id, Code.UNIMPLEMENTED, "streaming calls are not supported")
            return
        try:
            untrusted_request = decode_request(frame.payload)
        except ProtocolError as e:
            self._write_status(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
            return
        service, method = untrusted_request.service, untrusted_request.method
        methods = self._services.get(service)
        if methods is None:
            self._write_status(stream_id, Code.UNIMPLEMENTED, f"{service} service does not exist")
            return
        handler = methods.get(method)
        if handler is None:
            self._write_status(stream_id, Code.UNIMPLEMENTED, f"{method} method")
            return
        if untrusted_request.timeout_nano < 0:
            # The client's deadline passed before the request was sent (Go sends the remaining time).
            self._write_status(stream_id, Code.DEADLINE_EXCEEDED, "timeout")
            return
        timeout_s = self._timeout_s(untrusted_request.timeout_nano)
        context = CallContext(service, method, untrusted_request.metadata, self._loop.time() + timeout_s)
        if isinstance(handler, InlineHandler):
            try:
                payload: object = handler.function(untrusted_request.payload, context)
            except Exception as e:  # noqa: BLE001 - the rpc boundary: mapped to a status by _error_response
                self._write(stream_id, _answer_bytes(_error_response(e, service, method)))
                return
            self._write(stream_id, _answer_bytes(_payload_response(payload, service, method)))
            return
        call = self._loop.create_task(self._call(stream_id, handler, untrusted_request.payload, context, timeout_s))
        self._calls.add(call)
        call.add_done_callback(self._call_done)
        if len(self._calls) >= self._limits.ttrpc_max_concurrent_calls:
            # Back-pressure: with every slot busy, no further frame is read from this connection.
            self._pause_reading()

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        if self._closing:
            return
        if len(self._calls) < self._limits.ttrpc_max_concurrent_calls and self._write_paused_at is None:
            self._resume_reading()
        self._maybe_finish()

    def _timeout_s(self, timeout_nano: int) -> float:
        cap = self._limits.ttrpc_max_timeout_s
        if timeout_nano == 0:
            return cap
        return min(timeout_nano / 1e9, cap)

    async def _call(
        self, stream_id: int, handler: Handler, untrusted_payload: bytes, context: CallContext, timeout_s: float
    ) -> None:
        service, method = context.service, context.method
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                payload: object = await handler(untrusted_payload, context)
        except TimeoutError as e:
            if deadline.expired():
                response = Response(Status(Code.DEADLINE_EXCEEDED, "timeout"))
            else:
                response = _error_response(e, service, method)
        except Exception as e:  # noqa: BLE001 - the rpc boundary: mapped to a status by _error_response
            response = _error_response(e, service, method)
        else:
            response = _payload_response(payload, service, method)
        data = _answer_bytes(response)
        try:
            while self._write_paused_at is not None:
                await self._wait_drained()
        except TransportError:
            return  # the connection is gone; nothing to answer on
        self._write(stream_id, data)

    # --- output ---------------------------------------------------------------------------------------------

    def _write_status(self, stream_id: int, code: Code, message: str) -> None:
        self._write(stream_id, encode_response(Response(Status(code, message))))

    def _write(self, stream_id: int, response_bytes: bytes) -> None:
        if len(response_bytes) > self._limits.ttrpc_max_message_bytes:
            status = Status(
                Code.RESOURCE_EXHAUSTED, f"response of {len(response_bytes)} bytes exceeds the ttrpc maximum"
            )
            response_bytes = encode_response(Response(status))
        data = frame_bytes(
            stream_id, MessageType.RESPONSE, 0, response_bytes, max_data_length=self._limits.ttrpc_max_message_bytes
        )
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()
        await self._drained

    def _wake_writers(self, error: TransportError | None) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            if error is None:
                drained.set_result(None)
            else:
                drained.set_exception(error)
                drained.exception()  # retrieved here: a waiter may be gone already

    # --- flow control, timeouts and closing -----------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None and not self._closing:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._closing:
            self._reading_paused = False
            self._transport.resume_reading()
            # Frames that arrived before the pause are still in the decoder.
            self._process_frames()

    def _maybe_finish(self) -> None:
        if self._eof and not self._calls and not self._closing and not self._decoder.buffered:
            self._close_after_flush()

    def _close_after_flush(self) -> None:
        """Close once the answers written so far are flushed; the write watchdog aborts a peer that never reads."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        if self._transport.get_write_buffer_size() and self._write_paused_at is None:
            self._write_paused_at = self._loop.time()
        self._arm_watchdog()
        self._transport.close()

    def _fail(self, reason: str) -> None:
        _logger.warning("ttrpc %s: closing: %s", self._peer, reason)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now; the calls in flight are cancelled."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _arm_watchdog(self) -> None:
        due = self._next_deadline()
        if due is None:
            return
        if self._watchdog is not None:
            if self._watchdog.when() <= due:
                return  # it fires earlier and re-arms itself for the later deadline
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(due, self._on_watchdog)

    def _next_deadline(self) -> float | None:
        limits = self._limits
        deadlines: list[float] = []
        if self._write_paused_at is not None:
            deadlines.append(self._write_paused_at + limits.ttrpc_write_timeout_s)
        if not self._closing:
            if self._frame_started is not None:
                deadlines.append(self._frame_started + limits.ttrpc_frame_read_timeout_s)
            elif limits.ttrpc_idle_timeout_s is not None:
                deadlines.append(self._last_activity + limits.ttrpc_idle_timeout_s)
        return min(deadlines) if deadlines else None

    def _on_watchdog(self) -> None:
        self._watchdog = None
        now = self._loop.time()
        limits = self._limits
        if self._write_paused_at is not None and now >= self._write_paused_at + limits.ttrpc_write_timeout_s:
            # SECURITY: a peer that does not read its answers must not pin buffers forever.
            self._fail(f"the peer did not read an answer within {limits.ttrpc_write_timeout_s:g}s")
            return
        if self._closing:
            self._arm_watchdog()
            return
        if self._reading_paused:
            # Our own back-pressure: the time frames wait unread is not the client's.
            if self._frame_started is not None:
                self._frame_started = now
            self._last_activity = now
        elif self._frame_started is not None:
            if now >= self._frame_started + limits.ttrpc_frame_read_timeout_s:
                limit = limits.ttrpc_frame_read_timeout_s
                self._fail(f"a frame did not arrive whole within {limit:g}s (slow client)")
                return
        elif limits.ttrpc_idle_timeout_s is not None and now >= self._last_activity + limits.ttrpc_idle_timeout_s:
            if self._calls:
                self._last_activity = now  # idle time counts only while no call is in flight
            else:
                self._fail(f"idle for {limits.ttrpc_idle_timeout_s:g}s")
                return
        self._arm_watchdog()


def _error_response(error: Exception, service: str, method: str) -> Response:
    if isinstance(error, RpcStatusError):
        return Response(Status(error.code, error.status_message))
    if isinstance(error, TimeoutError):
        return Response(Status(Code.UNKNOWN, f"/{service}/{method}: timed out"))
    if isinstance(error, CocoError):
        return Response(Status(Code.UNKNOWN, str(error)))
    # A handler bug becomes a status (logged), not a dead server.
    _logger.error("ttrpc handler /%s/%s failed", service, method, exc_info=error)
    return Response(Status(Code.UNKNOWN, f"/{service}/{method}: internal error"))


def _payload_response(payload: object, service: str, method: str) -> Response:
    if not isinstance(payload, bytes):
        _logger.error("ttrpc handler /%s/%s returned %s, not bytes", service, method, type(payload).__name__)
        return Response(Status(Code.INTERNAL, f"/{service}/{method}: internal error"))
    return Response(Status(Code.OK), payload)


def _answer_bytes(response: Response) -> bytes:
    """The serialized Response; a status protobuf cannot carry becomes UNKNOWN (logged)."""
    status = response.status
    if status.code == Code.OK and not status.message and not status.details:
        return encode_ok_response(response.payload)
    try:
        return encode_response(response)
    except (ValueError, TypeError):
        # A handler's status that protobuf cannot carry (code outside int32, message not encodable).
        _logger.exception("ttrpc: cannot encode an answer")
        return encode_response(Response(Status(Code.UNKNOWN, "internal error: unencodable status")))
