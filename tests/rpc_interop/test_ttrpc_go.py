"""Interop with Go containerd/ttrpc: Go client -> our server, and our client -> Go server.

The peer (tests/ttrpc_peer/main.go) serves ``cocoguest.test.Peer`` with Echo, Metadata, Sleep and Fail,
and its client mode makes one call and prints ``{"code", "message", "payload_hex"}``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoguest.errors import RpcStatusError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.framing import Frame, FrameDecoder, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Request, decode_response, encode_request
from cocoguest.rpc.ttrpc.server import CallContext, Handler
from tests.fixtures.go_ttrpc_peer import go_server
from tests.fixtures.ttrpc import SERVICE, run, start_server

pytestmark = pytest.mark.interop

LIMITS = DEFAULT_LIMITS


@dataclass(frozen=True)
class GoResult:
    code: int
    message: str
    payload: bytes


async def go_call(
    binary: Path,
    sock: Path,
    method: str,
    payload: bytes = b"",
    *,
    service: str = SERVICE,
    timeout: str = "0",
    metadata: tuple[str, ...] = (),
) -> GoResult:
    """One call by the Go client (run in a thread: our server shares this event loop)."""
    args = [str(binary), "-mode", "client", "-addr", str(sock), "-service", service, "-method", method]
    args += ["-payload-hex", "-", "-timeout", timeout]
    for kv in metadata:
        args += ["-md", kv]

    def call() -> str:
        result = subprocess.run(args, input=payload, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    answer = json.loads(await asyncio.to_thread(call))
    return GoResult(answer["code"], answer["message"], bytes.fromhex(answer["payload_hex"]))


# --- Go client -> our server ------------------------------------------------------------------------------------


def test_go_client_unary_metadata_and_errors(go_peer: Path, tmp_path: Path) -> None:
    async def fail(request: bytes, _c: CallContext) -> bytes:
        code, _, message = request.decode().partition(" ")
        raise RpcStatusError(int(code), message)

    async def scenario() -> None:
        sock = tmp_path / "ours.sock"
        async with await start_server(sock, LIMITS, {"Fail": fail}):
            assert await go_call(go_peer, sock, "Echo", b"\x00hello\xff") == GoResult(0, "", b"\x00hello\xff")
            big = bytes(range(256)) * 12_000  # ~3 MiB: under the 4 MiB frame cap of both sides
            assert (await go_call(go_peer, sock, "Echo", big)).payload == big
            answer = await go_call(go_peer, sock, "Metadata", metadata=("k=v", "k=w", "other=x"))
            assert answer.code == 0
            # Go's MD is a map: the order of keys is not defined, the order of one key's values is.
            lines = answer.payload.decode().split("\n")
            assert sorted(lines) == ["k=v", "k=w", "other=x"]
            assert lines.index("k=v") < lines.index("k=w")
            assert await go_call(go_peer, sock, "Nope") == GoResult(Code.UNIMPLEMENTED, "Nope method", b"")
            assert await go_call(go_peer, sock, "Echo", service="no.Such") == GoResult(
                Code.UNIMPLEMENTED, "no.Such service does not exist", b""
            )
            assert await go_call(go_peer, sock, "Fail", b"13 [CDH] [ERROR]: boom") == GoResult(
                13, "[CDH] [ERROR]: boom", b""
            )

    run(scenario())


def test_go_client_deadline_reaches_our_handler(go_peer: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    cancelled: list[bool] = []

    async def remaining(_r: bytes, context: CallContext) -> bytes:
        seen.append(context.deadline - asyncio.get_running_loop().time())
        return b""

    async def hang(_r: bytes, _c: CallContext) -> bytes:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return b""

    extra: dict[str, Handler] = {"Remaining": remaining, "Hang": hang}

    async def scenario() -> None:
        sock = tmp_path / "ours.sock"
        async with await start_server(sock, LIMITS, extra):
            # Go sends the time left before its context deadline as timeout_nano.
            assert (await go_call(go_peer, sock, "Remaining", timeout="7s")).code == 0
            assert 0 < seen[0] <= 7
            # Without a deadline Go sends 0: our server applies Limits.ttrpc_max_timeout_s.
            assert (await go_call(go_peer, sock, "Remaining")).code == 0
            assert seen[1] > 7
            # An expiring call: both sides' deadlines fire; the Go client reports a deadline error, and our
            # handler was cancelled (not left running).
            answer = await go_call(go_peer, sock, "Hang", timeout="300ms")
            assert answer.code == Code.DEADLINE_EXCEEDED or "deadline exceeded" in answer.message
            for _ in range(500):
                if cancelled:
                    break
                await asyncio.sleep(0.01)
            assert cancelled == [True]

    run(scenario())


# --- our client -> Go server ------------------------------------------------------------------------------------


def test_our_client_against_go_server(go_peer: Path, tmp_path: Path) -> None:
    sock = tmp_path / "go.sock"

    async def scenario() -> None:
        async with await TtrpcClient.connect(f"unix://{sock}") as client:
            assert await client.call(SERVICE, "Echo", b"\x00hi") == b"\x00hi"
            big = bytes(range(256)) * 12_000
            assert await client.call(SERVICE, "Echo", big) == big
            answer = await client.call(SERVICE, "Metadata", metadata=[("k", "v"), ("k", "w"), ("x", "y")])
            assert json.loads(answer) == {"k": ["v", "w"], "x": ["y"]}
            with pytest.raises(RpcStatusError) as info:
                await client.call(SERVICE, "Fail", b"7 go says no")
            assert (info.value.code, info.value.status_message) == (Code.PERMISSION_DENIED, "go says no")
            with pytest.raises(RpcStatusError) as info:
                await client.call("no.Such", "Echo")
            assert (info.value.code, info.value.status_message) == (Code.UNIMPLEMENTED, "service no.Such")
            with pytest.raises(RpcStatusError) as info:
                await client.call(SERVICE, "Nope")
            assert (info.value.code, info.value.status_message) == (Code.UNIMPLEMENTED, "method Nope")
            # The Go server derives its context deadline from our timeout_nano: its handler ends with
            # DEADLINE_EXCEEDED (or our own deadline fires first; both are code 4).
            with pytest.raises(RpcStatusError) as info:
                await client.call(SERVICE, "Sleep", b"60000", timeout_s=0.3)
            assert info.value.code == Code.DEADLINE_EXCEEDED
            # The connection is still usable after all of that.
            assert await client.call(SERVICE, "Echo", b"after") == b"after"

    with go_server(go_peer, sock):
        run(scenario())


def test_100_concurrent_calls_to_go_server(go_peer: Path, tmp_path: Path) -> None:
    sock = tmp_path / "go.sock"

    async def scenario() -> None:
        async with await TtrpcClient.connect(f"unix://{sock}") as client:
            calls = [client.call(SERVICE, "Sleep", str((99 - i) % 40).encode()) for i in range(100)]
            assert await asyncio.gather(*calls) == [str((99 - i) % 40).encode() for i in range(100)]

    with go_server(go_peer, sock):
        run(scenario())


def test_go_server_enforces_timeout_nano_from_our_frames(go_peer: Path, tmp_path: Path) -> None:
    """A request frame built by our codec with only a server-side deadline: the Go server answers
    DEADLINE_EXCEEDED itself (the raw connection here has no deadline of its own)."""
    sock = tmp_path / "go.sock"

    async def scenario() -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        request = Request(SERVICE, "Sleep", b"60000", timeout_nano=200_000_000)
        writer.write(
            encode_frame(
                Frame(1, MessageType.REQUEST, 0, encode_request(request)),
                max_data_length=LIMITS.ttrpc_max_message_bytes,
            )
        )
        await writer.drain()
        decoder = FrameDecoder(max_data_length=LIMITS.ttrpc_max_message_bytes)
        while (frame := decoder.next_frame()) is None:
            chunk = await reader.read(65536)
            assert chunk
            decoder.feed(chunk)
        writer.close()
        assert frame.stream_id == 1
        assert decode_response(frame.payload).status.code == Code.DEADLINE_EXCEEDED

    with go_server(go_peer, sock):
        run(scenario())
