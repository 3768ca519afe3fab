"""The asyncio ttrpc client against scripted servers on real unix sockets (byte-level peers, no mocks)."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cocoguest.errors import FrameTooLargeError, ProtocolError, RpcStatusError, TransportError, TruncatedFrameError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.framing import Frame, FrameDecoder, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Request, Response, Status, decode_request, encode_response
from tests.fixtures.ttrpc import run

MAX = DEFAULT_LIMITS.ttrpc_max_message_bytes
LIMITS = dataclasses.replace(DEFAULT_LIMITS, ttrpc_call_timeout_s=10.0)


class ScriptedPeer:
    """The server side of one connection, driven by a test script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder(max_data_length=MAX)

    async def request(self) -> tuple[int, Request]:
        while (frame := self._decoder.next_frame()) is None:
            chunk = await self.reader.read(65536)
            assert chunk, "the client closed the connection"
            self._decoder.feed(chunk)
        assert (frame.message_type, frame.flags) == (MessageType.REQUEST, 0)
        return frame.stream_id, decode_request(frame.payload)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, stream_id: int, response: Response) -> None:
        frame = Frame(stream_id, MessageType.RESPONSE, 0, encode_response(response))
        await self.send(encode_frame(frame, max_data_length=MAX))


Script = Callable[[ScriptedPeer], Awaitable[None]]


async def serve_script(sock: Path, script: Script) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(ScriptedPeer(reader, writer))
        finally:
            writer.transport.abort()

    return await asyncio.start_unix_server(on_connect, path=str(sock))


def test_stream_ids_deadline_metadata_and_out_of_order_answers(tmp_path: Path) -> None:
    seen: list[tuple[int, Request]] = []

    async def script(peer: ScriptedPeer) -> None:
        for _ in range(3):
            seen.append(await peer.request())
        for stream_id, request in reversed(seen):
            await peer.answer(stream_id, Response(Status(), request.payload.upper()))
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await serve_script(sock, script),
            await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS) as client,
        ):
            answers = await asyncio.gather(
                client.call("a.S", "M", b"one", metadata=[("k", "v")]),
                client.call("a.S", "M", b"two", timeout_s=2.5),
                client.call("a.S", "M", b"three"),
            )
        assert answers == [b"ONE", b"TWO", b"THREE"]
        assert [stream_id for stream_id, _ in seen] == [1, 3, 5]
        assert seen[0][1] == Request("a.S", "M", b"one", 10_000_000_000, (("k", "v"),))
        assert seen[1][1].timeout_nano == 2_500_000_000

    run(scenario())


def test_status_errors_carry_code_and_message(tmp_path: Path) -> None:
    async def script(peer: ScriptedPeer) -> None:
        stream_id, _ = await peer.request()
        await peer.answer(stream_id, Response(Status(Code.INTERNAL, "[CDH] [ERROR]: boom")))
        stream_id, _ = await peer.request()
        await peer.answer(stream_id, Response(Status(99, "odd")))
        stream_id, _ = await peer.request()
        await peer.send(encode_frame(Frame(stream_id, 2, 0, b"\x12\x02ok"), max_data_length=MAX))  # no status
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await serve_script(sock, script),
            await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS) as client,
        ):
            with pytest.raises(RpcStatusError) as info:
                await client.call("api.GetResourceService", "GetResource")
            assert (info.value.code, info.value.status_message) == (13, "[CDH] [ERROR]: boom")
            assert "INTERNAL (13)" in str(info.value)
            assert "/api.GetResourceService/GetResource" in str(info.value)
            with pytest.raises(RpcStatusError) as info:
                await client.call("a.S", "M")
            assert info.value.code == 99
            assert "code 99" in str(info.value)
            assert await client.call("a.S", "M") == b"ok"  # an absent status is OK

    run(scenario())


def test_local_deadline_and_late_answer_is_dropped(tmp_path: Path) -> None:
    async def script(peer: ScriptedPeer) -> None:
        first, _ = await peer.request()
        second, _ = await peer.request()  # sent after the first call gave up
        await peer.answer(first, Response(Status(), b"late"))
        await peer.answer(second, Response(Status(), b"second"))
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await serve_script(sock, script),
            await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS) as client,
        ):
            with pytest.raises(RpcStatusError) as info:
                await client.call("a.S", "M", timeout_s=0.1)
            assert info.value.code == Code.DEADLINE_EXCEEDED
            assert await client.call("a.S", "M") == b"second"

    run(scenario())


def test_malformed_answer_fails_that_call_only(tmp_path: Path) -> None:
    async def script(peer: ScriptedPeer) -> None:
        stream_id, _ = await peer.request()
        await peer.send(encode_frame(Frame(stream_id, 2, 0, b"\xff\xff"), max_data_length=MAX))
        stream_id, _ = await peer.request()
        await peer.answer(stream_id, Response(Status(), b"fine"))
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await serve_script(sock, script),
            await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS) as client,
        ):
            with pytest.raises(ProtocolError, match="Response"):
                await client.call("a.S", "M")
            assert await client.call("a.S", "M") == b"fine"

    run(scenario())


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (struct.pack(">IIBB", 0, 1, MessageType.DATA, 0), ProtocolError),  # not a Response
        (struct.pack(">IIBB", MAX + 1, 1, MessageType.RESPONSE, 0), FrameTooLargeError),  # oversized
        (struct.pack(">IIBB", 50, 1, MessageType.RESPONSE, 0) + b"x", TruncatedFrameError),  # cut off, then EOF
        (b"", TransportError),  # the server hangs up
    ],
)
def test_broken_connection_fails_pending_and_later_calls(tmp_path: Path, reply: bytes, error: type[Exception]) -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.request()
        await peer.send(reply)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await serve_script(sock, script):
            client = await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS)
            with pytest.raises(error):
                await client.call("a.S", "M")
            with pytest.raises(TransportError) as info:
                await client.call("a.S", "M")
            assert info.value.retryable
            await client.close()

    run(scenario())


def test_request_over_the_frame_cap_is_refused_before_sending(tmp_path: Path) -> None:
    async def script(peer: ScriptedPeer) -> None:
        stream_id, _ = await peer.request()
        await peer.answer(stream_id, Response(Status(), str(stream_id).encode()))
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await serve_script(sock, script),
            await TtrpcClient.connect(f"unix://{sock}", limits=LIMITS) as client,
        ):
            with pytest.raises(FrameTooLargeError):
                await client.call("a.S", "M", b"x" * MAX)
            assert await client.call("a.S", "M") == b"1"  # no stream id was used by the refused call

    run(scenario())
