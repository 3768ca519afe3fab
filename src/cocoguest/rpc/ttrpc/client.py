"""An asyncio ttrpc client: unary calls multiplexed on one connection (specs/ttrpc.md §4, §5, §11).

Invariants:
    * Stream ids are odd, start at 1 and grow by 2; none is reused. When they run out the client refuses
      further calls (reconnect).
    * Every call has a deadline (``timeout_s``, default ``Limits.ttrpc_call_timeout_s``): it is sent as
      ``timeout_nano`` and enforced locally; a local expiry raises
      :class:`~cocoguest.errors.RpcStatusError` with DEADLINE_EXCEEDED, and a late answer is dropped.
    * A non-OK status raises :class:`~cocoguest.errors.RpcStatusError` carrying the peer's code and message;
      an absent status is OK.
    * SECURITY: answers are untrusted: frames over ``Limits.ttrpc_max_message_bytes``, non-Response frames or a
      stream that ends inside a frame fail every pending call with a
      :class:`~cocoguest.errors.ProtocolError` and close the connection; answers for unknown stream ids are
      dropped. A closed connection fails pending and later calls with a retryable
      :class:`~cocoguest.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Self

from cocoguest.errors import CocoError, ProtocolError, RpcStatusError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc.ttrpc import transport
from cocoguest.rpc.ttrpc.address import parse_address
from cocoguest.rpc.ttrpc.codes import Code, code_name
from cocoguest.rpc.ttrpc.framing import MAX_STREAM_ID, Frame, FrameDecoder, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Request, Response, decode_response, encode_request

_logger = logging.getLogger(__name__)


class TtrpcClient:
    """One ttrpc connection; ``call`` may be awaited concurrently from many tasks."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, address: str, limits: Limits
    ) -> None:
        """Wrap an open connection (use :meth:`connect`); starts the task that reads answers."""
        self._reader = reader
        self._writer = writer
        self._address = address
        self._limits = limits
        self._decoder = FrameDecoder(max_data_length=limits.ttrpc_max_message_bytes)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._next_stream_id = 1
        self._write_lock = asyncio.Lock()
        self._error: CocoError | None = None
        self._read_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, address: str, *, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Connect to a ttrpc server at ``address`` (``unix:///path``, ``unix://@name``, ``vsock://CID:PORT``).

        Raises:
            ConfigError: a malformed address.
            UnsupportedError: vsock or tcp is not available.
            TransportError: the connection failed.
        """
        parsed = parse_address(address)
        reader, writer = await transport.open_connection(
            parsed, timeout_s=limits.ttrpc_connect_timeout_s, read_limit=limits.ttrpc_read_chunk_bytes
        )
        return cls(reader, writer, address=address, limits=limits)

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        *,
        timeout_s: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Call ``service``/``method`` with a serialized request message; return the serialized answer.

        Raises:
            RpcStatusError: the server answered a non-OK status, or the deadline passed (DEADLINE_EXCEEDED).
            TransportError: the connection is closed or broke (retryable), or stream ids are exhausted.
            ProtocolError: the server sent malformed data (the connection is then closed).
            FrameTooLargeError: the request is larger than a frame may be.
        """
        where = f"ttrpc /{service}/{method} at {self._address}"
        if self._error is not None:
            msg = f"{where}: the connection is closed ({self._error})"
            raise TransportError(msg, retryable=True) from self._error
        if timeout_s is None:
            timeout_s = self._limits.ttrpc_call_timeout_s
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            msg = f"{where}: stream ids of this connection are exhausted; reconnect"
            raise TransportError(msg, retryable=True)
        request = Request(service, method, payload, int(timeout_s * 1e9), tuple(metadata))
        data = encode_frame(
            Frame(stream_id, MessageType.REQUEST, 0, encode_request(request)),
            max_data_length=self._limits.ttrpc_max_message_bytes,
        )
        self._next_stream_id += 2
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                async with self._write_lock:
                    self._writer.write(data)
                    await self._writer.drain()
                response = await future
        except TimeoutError as e:
            if not deadline.expired():
                raise  # pragma: no cover - defensive: nothing else in the block raises TimeoutError
            raise RpcStatusError(
                Code.DEADLINE_EXCEEDED, f"timeout after {timeout_s:g}s", where=where, code_name="DEADLINE_EXCEEDED"
            ) from e
        except OSError as e:
            msg = f"{where}: sending failed: {e}"
            raise TransportError(msg, retryable=True) from e
        finally:
            self._pending.pop(stream_id, None)
        status = response.status
        if status.code != Code.OK:
            raise RpcStatusError(status.code, status.message, where=where, code_name=code_name(status.code))
        return response.payload

    async def close(self) -> None:
        """Close the connection; pending calls fail with a TransportError."""
        self._fail(TransportError(f"ttrpc connection to {self._address} was closed by this client"))
        self._writer.transport.abort()
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _fail(self, error: CocoError) -> None:
        if self._error is None:
            self._error = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._error)
        self._pending.clear()

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self._reader.read(self._limits.ttrpc_read_chunk_bytes)
                if not chunk:
                    self._decoder.end()
                    msg = f"ttrpc connection to {self._address} was closed by the server"
                    raise TransportError(msg, retryable=True)
                self._decoder.feed(chunk)
                while (frame := self._decoder.next_frame()) is not None:
                    self._deliver(frame)
        except CocoError as e:
            _logger.debug("ttrpc client %s: %s", self._address, e)
            self._fail(e)
        except OSError as e:
            error = TransportError(f"ttrpc connection to {self._address} broke: {e}", retryable=True)
            error.__cause__ = e
            self._fail(error)
        finally:
            self._writer.transport.abort()

    def _deliver(self, frame: Frame) -> None:
        if frame.message_type != MessageType.RESPONSE:
            msg = f"ttrpc server {self._address} sent message type {frame.message_type} on stream {frame.stream_id}"
            raise ProtocolError(msg)
        future = self._pending.pop(frame.stream_id, None)
        if future is None or future.done():
            # A late answer to a call that already timed out locally, or an id never used: dropped.
            _logger.debug("ttrpc client %s: dropped an answer on stream %d", self._address, frame.stream_id)
            return
        try:
            future.set_result(decode_response(frame.payload))
        except ProtocolError as e:
            future.set_exception(e)
