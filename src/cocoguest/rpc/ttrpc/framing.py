"""ttrpc frames: the 10-byte header and an incremental decoder (specs/ttrpc.md §2-§4). Sans-IO.

Header, all big-endian: data length u32 (payload only), stream id u32, message type u8, flags u8.

Invariants:
    * No IO: :class:`FrameDecoder` is fed bytes and hands out :class:`Frame` values.
    * SECURITY: a header announcing more than ``max_data_length`` payload bytes raises
      :class:`~cocoguest.errors.FrameTooLargeError` as soon as the 10 header bytes are in, before any of the
      body is buffered; the decoder holds at most one partial frame plus the bytes of the last ``feed``.
    * The decoder raises only :class:`~cocoguest.errors.FramingError` subclasses; once it has raised it is
      poisoned and raises the same error again (a byte stream cannot be resynchronised after a bad header).
    * Message types and flags are carried as plain ints so a frame of an unknown type still decodes; what to
      do with it is the caller's decision (the server closes the connection).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from cocoguest.errors import FrameTooLargeError, FramingError, TruncatedFrameError

HEADER_SIZE: Final = 10
"""Bytes of a frame header."""
MAX_STREAM_ID: Final = 0xFFFF_FFFF
"""Largest stream id (u32)."""

_HEADER: Final = struct.Struct(">IIBB")


class MessageType(IntEnum):
    """Frame message types (specs/ttrpc.md §2)."""

    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03


class Flags(IntFlag):
    """Frame flags (specs/ttrpc.md §3). Unary calls use no flags."""

    REMOTE_CLOSED = 0x01
    REMOTE_OPEN = 0x02
    NO_DATA = 0x04


@dataclass(frozen=True, slots=True)
class Frame:
    """One ttrpc frame: header fields and payload (the payload's length is the header's data length)."""

    stream_id: int
    message_type: int
    flags: int
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.stream_id <= MAX_STREAM_ID:
            msg = f"stream id {self.stream_id} is not a u32"
            raise ValueError(msg)
        if not 0 <= self.message_type <= 0xFF or not 0 <= self.flags <= 0xFF:
            msg = f"message type {self.message_type} or flags {self.flags} is not a u8"
            raise ValueError(msg)


def encode_frame(frame: Frame, *, max_data_length: int) -> bytes:
    """Return the header and payload of ``frame``.

    Raises:
        FrameTooLargeError: the payload is longer than ``max_data_length`` (a peer would reject it).
    """
    return frame_bytes(frame.stream_id, frame.message_type, frame.flags, frame.payload, max_data_length=max_data_length)


def frame_bytes(stream_id: int, message_type: int, flags: int, payload: bytes, *, max_data_length: int) -> bytes:
    """Return one frame's header and payload, without building a :class:`Frame` (the server's hot path).

    Raises:
        FrameTooLargeError: the payload is longer than ``max_data_length``.
        struct.error: a header field does not fit its u32/u8 (a programming error).
    """
    length = len(payload)
    if length > max_data_length:
        raise FrameTooLargeError(_too_large_message(length, max_data_length), stream_id=stream_id, length=length)
    return _HEADER.pack(length, stream_id, message_type, flags) + payload


def _too_large_message(length: int, max_data_length: int) -> str:
    # ttrpc-rust's wording (specs/ttrpc.md §7); clients may match on it.
    return f"message length {length} exceed maximum message size of {max_data_length}"


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, then take frames with ``next_frame`` until it returns ``None``.

    Typical use::

        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            handle(frame)
        ...
        decoder.end()  # at EOF: raises TruncatedFrameError if a frame was cut off
    """

    def __init__(self, *, max_data_length: int) -> None:
        """Decode frames whose payload is at most ``max_data_length`` bytes."""
        self._max = max_data_length
        self._buffer = bytearray()
        self._start = 0
        """Offset of the first unconsumed byte: frames are taken by moving it, the buffer is compacted on feed."""
        self._error: FramingError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer. Raises the decoder's earlier error if it is poisoned."""
        if self._error is not None:
            raise self._error
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (non-zero while a frame is partly received)."""
        return len(self._buffer) - self._start

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Raises:
            FrameTooLargeError: the next header announces more than the maximum payload.
            FramingError: the decoder was poisoned by an earlier error.
        """
        if self._error is not None:
            raise self._error
        start = self._start
        have = len(self._buffer) - start
        if have < HEADER_SIZE:
            if not have and start:
                self._buffer.clear()  # everything consumed: drop it now rather than on the next feed
                self._start = 0
            return None
        length, stream_id, message_type, flags = _HEADER.unpack_from(self._buffer, start)
        if length > self._max:
            # SECURITY: rejected on the header alone; the announced body is never buffered.
            self._error = FrameTooLargeError(_too_large_message(length, self._max), stream_id=stream_id, length=length)
            self._buffer.clear()
            self._start = 0
            raise self._error
        end = start + HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view:
            payload = bytes(view[start + HEADER_SIZE : end])  # the one copy of the payload
        self._start = end
        if end == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        return Frame(stream_id=stream_id, message_type=message_type, flags=flags, payload=payload)

    def end(self) -> None:
        """Declare end of stream.

        Raises:
            TruncatedFrameError: bytes of an incomplete frame are still buffered.
            FramingError: the decoder was poisoned by an earlier error.
        """
        if self._error is not None:
            raise self._error
        have = self.buffered
        if have:
            if have < HEADER_SIZE:
                msg = f"ttrpc stream ended inside a frame header ({have} of {HEADER_SIZE} bytes)"
            else:
                length = _HEADER.unpack_from(self._buffer, self._start)[0]
                msg = f"ttrpc stream ended inside a frame ({have - HEADER_SIZE} of {length} payload bytes)"
            self._error = TruncatedFrameError(msg)
            raise self._error
