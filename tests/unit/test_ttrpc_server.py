"""The asyncio ttrpc server over real unix sockets: dispatch, status codes, deadlines, metadata, concurrency,
and robustness (a misbehaving connection is closed; the others keep being served)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
import struct
import uuid
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError, RpcStatusError, TransportError, UnsupportedError, VerificationError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.framing import Frame, MessageType, encode_frame
from cocoguest.rpc.ttrpc.messages import Request, Response, Status, encode_request
from cocoguest.rpc.ttrpc.server import CallContext, Handler, Method, TtrpcServer, inline
from tests.fixtures.ttrpc import SERVICE, RawPeer, peer_service, run, start_server

MAX = DEFAULT_LIMITS.ttrpc_max_message_bytes
FAST = dataclasses.replace(
    DEFAULT_LIMITS, ttrpc_frame_read_timeout_s=0.5, ttrpc_write_timeout_s=0.5, ttrpc_idle_timeout_s=None
)


def limits(**changes: object) -> Limits:
    return dataclasses.replace(FAST, **changes)  # type: ignore[arg-type]


async def echo_works(sock: Path, payload: bytes = b"still here") -> bool:
    """A fresh, well-behaved client is served."""
    async with await TtrpcClient.connect(f"unix://{sock}", limits=FAST) as client:
        return await client.call(SERVICE, "Echo", payload) == payload


async def wait_until(predicate: object, what: str) -> None:
    assert callable(predicate)
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --- dispatch, statuses, metadata, deadlines ---------------------------------------------------------------


def test_unary_echo_and_metadata(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, FAST) as _server,
            await TtrpcClient.connect(f"unix://{sock}") as client,
        ):
            assert await client.call(SERVICE, "Echo", b"\x00\x01binary") == b"\x00\x01binary"
            assert await client.call(SERVICE, "Echo") == b""
            answer = await client.call(SERVICE, "Metadata", metadata=[("a", "1"), ("b", "x=y"), ("a", "2")])
            assert answer == b"a=1\nb=x=y\na=2"

    run(scenario())


def test_ok_answers_always_carry_a_status(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST):
            peer = await RawPeer.connect(sock, FAST)
            await peer.send_request(1, Request(SERVICE, "Echo", b"x"), limits=FAST)
            frame = await peer.read_frame()
            assert frame == Frame(1, MessageType.RESPONSE, 0, bytes.fromhex("0a00") + b"\x12\x01x")
            peer.close()

    run(scenario())


def test_unknown_service_and_method_are_unimplemented(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST), await TtrpcClient.connect(f"unix://{sock}") as client:
            with pytest.raises(RpcStatusError) as info:
                await client.call("no.Such", "Echo")
            assert (info.value.code, info.value.status_message) == (
                Code.UNIMPLEMENTED,
                "no.Such service does not exist",
            )
            with pytest.raises(RpcStatusError) as info:
                await client.call(SERVICE, "Nope")
            assert (info.value.code, info.value.status_message) == (Code.UNIMPLEMENTED, "Nope method")
            assert await client.call(SERVICE, "Echo", b"ok") == b"ok"  # the connection is still fine

    run(scenario())


def test_handler_errors_become_statuses(tmp_path: Path) -> None:
    async def status(_r: bytes, _c: CallContext) -> bytes:
        raise RpcStatusError(Code.NOT_FOUND, "/attestation_agent.AttestationAgentService/BindInitData is not supported")

    async def coco(_r: bytes, _c: CallContext) -> bytes:
        raise VerificationError("signature of image x rejected")

    async def bug(_r: bytes, _c: CallContext) -> bytes:
        raise ValueError("secret internals")

    async def not_bytes(_r: bytes, _c: CallContext) -> bytes:
        return "text"  # type: ignore[return-value]

    extra: dict[str, Handler] = {"Status": status, "Coco": coco, "Bug": bug, "NotBytes": not_bytes}

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST, extra), await TtrpcClient.connect(f"unix://{sock}") as client:
            expected = {
                "Status": (
                    Code.NOT_FOUND,
                    "/attestation_agent.AttestationAgentService/BindInitData is not supported",
                ),
                "Coco": (Code.UNKNOWN, "signature of image x rejected"),
                "Bug": (Code.UNKNOWN, f"/{SERVICE}/Bug: internal error"),
                "NotBytes": (Code.INTERNAL, f"/{SERVICE}/NotBytes: internal error"),
            }
            for method, (code, message) in expected.items():
                with pytest.raises(RpcStatusError) as info:
                    await client.call(SERVICE, method)
                assert (info.value.code, info.value.status_message) == (code, message), method
                assert "secret internals" not in str(info.value)

    run(scenario())


def test_server_enforces_timeout_nano(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST):
            peer = await RawPeer.connect(sock, FAST)
            # The raw peer has no deadline of its own: the answer can only come from the server's deadline.
            await peer.send_request(1, Request(SERVICE, "Sleep", b"60000", timeout_nano=50_000_000), limits=FAST)
            assert await peer.read_response() == (1, Response(Status(Code.DEADLINE_EXCEEDED, "timeout")))
            # A negative timeout (the client's deadline already passed) expires at once.
            await peer.send_request(3, Request(SERVICE, "Echo", b"x", timeout_nano=-1), limits=FAST)
            assert await peer.read_response() == (3, Response(Status(Code.DEADLINE_EXCEEDED, "timeout")))
            # A deadline that is long enough lets the call finish.
            await peer.send_request(5, Request(SERVICE, "Sleep", b"1", timeout_nano=30_000_000_000), limits=FAST)
            assert await peer.read_response() == (5, Response(Status(Code.OK), b"1"))
            peer.close()

    run(scenario())


def test_no_deadline_gets_the_limits_cap(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, limits(ttrpc_max_timeout_s=0.05)):
            peer = await RawPeer.connect(sock, FAST)
            await peer.send_request(1, Request(SERVICE, "Sleep", b"60000", timeout_nano=0), limits=FAST)
            assert await peer.read_response() == (1, Response(Status(Code.DEADLINE_EXCEEDED, "timeout")))
            peer.close()

    run(scenario())


def test_context_carries_deadline_and_metadata(tmp_path: Path) -> None:
    seen: list[CallContext] = []

    async def record(_r: bytes, context: CallContext) -> bytes:
        seen.append(context)
        return str(context.deadline - asyncio.get_running_loop().time()).encode()

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, FAST, {"Record": record}),
            await TtrpcClient.connect(f"unix://{sock}") as client,
        ):
            remaining = float(await client.call(SERVICE, "Record", timeout_s=7, metadata=[("k", "v"), ("k", "w")]))
        assert 0 < remaining <= 7
        [context] = seen
        assert (context.service, context.method) == (SERVICE, "Record")
        assert context.metadata_values("k") == ("v", "w")
        assert context.metadata_values("K") == ()

    run(scenario())


# --- per-call protocol errors keep the connection -------------------------------------------------------------


def test_per_call_protocol_errors_are_answered_and_the_connection_stays(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST):
            peer = await RawPeer.connect(sock, FAST)
            await peer.send(encode_frame(Frame(1, MessageType.REQUEST, 0, b"\xff\xff\xff"), max_data_length=MAX))
            stream, response = await peer.read_response()
            assert (stream, response.status.code) == (1, Code.INVALID_ARGUMENT)
            assert response.status.message.startswith("unmarshal request error")
            await peer.send_request(4, Request(SERVICE, "Echo"), limits=FAST)
            assert await peer.read_response() == (4, Response(Status(Code.INVALID_ARGUMENT, "stream id must be odd")))
            await peer.send_request(1, Request(SERVICE, "Echo"), limits=FAST)
            stream, response = await peer.read_response()
            assert (stream, response.status.code) == (1, Code.INVALID_ARGUMENT)
            assert "must increment" in response.status.message
            await peer.send_request(3, Request(SERVICE, "Echo"), flags=0x02, limits=FAST)
            stream, response = await peer.read_response()
            assert (stream, response.status.code) == (3, Code.UNIMPLEMENTED)
            await peer.send_request(5, Request(SERVICE, "Echo", b"fine"), limits=FAST)
            assert await peer.read_response() == (5, Response(Status(Code.OK), b"fine"))
            peer.close()

    run(scenario())


# --- misbehaving connections are closed; the others are served ------------------------------------------------


def test_oversized_frame_is_answered_then_the_connection_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST) as server:
            bystander = await TtrpcClient.connect(f"unix://{sock}")
            peer = await RawPeer.connect(sock, FAST)
            await peer.send(struct.pack(">IIBB", MAX + 1, 9, 1, 0))  # the header only: the body is never sent
            message = f"message length {MAX + 1} exceed maximum message size of {MAX}"
            assert await peer.read_response() == (9, Response(Status(Code.INVALID_ARGUMENT, message)))
            assert await peer.closed_by_server()
            assert await bystander.call(SERVICE, "Echo", b"b") == b"b"
            assert await echo_works(sock)
            await bystander.close()
            await wait_until(lambda: server.connection_count == 0, "connections to close")

    run(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,  # a header announcing ~4 GiB
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # length 0x47455420: over the cap
        b"\x00\x00\x00\x02\x00\x00\x00\x01\x07\x00ab",  # an unknown message type
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x03\x01",  # a Data frame: no stream is open
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x02\x00",  # a Response frame sent to a server
    ],
)
def test_garbage_closes_only_that_connection(tmp_path: Path, garbage: bytes) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST), await TtrpcClient.connect(f"unix://{sock}") as bystander:
            peer = await RawPeer.connect(sock, FAST)
            await peer.send(garbage)
            while (frame := await peer.read_frame()) is not None:
                assert frame.message_type == MessageType.RESPONSE  # at most an INVALID_ARGUMENT answer
            assert await bystander.call(SERVICE, "Echo", b"b") == b"b"
            assert await echo_works(sock)

    run(scenario())


def test_truncated_frame_then_eof(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST) as server:
            frame = encode_frame(Frame(1, 1, 0, b"\x0a\x03abc" * 10), max_data_length=MAX)
            peer = await RawPeer.connect(sock, FAST)
            await peer.send(frame[: len(frame) // 2])
            peer.writer.write_eof()
            assert await peer.closed_by_server()
            await wait_until(lambda: server.connection_count == 0, "the truncated connection to close")
            assert await echo_works(sock)

    run(scenario())


async def trickle(peer: RawPeer, data: bytes, closed: asyncio.Task[bool]) -> int:
    """Send ``data`` one byte every 20 ms until done or the server closes; return the bytes sent."""
    for sent, byte in enumerate(data):
        if closed.done():
            return sent
        try:
            await peer.send(bytes([byte]))
        except ConnectionError:
            return sent
        await asyncio.sleep(0.02)
    return len(data)


async def flood(peer: RawPeer, request: Request) -> None:
    """Send up to 200 requests without reading any answer."""
    for stream_id in range(1, 400, 2):
        await peer.send_request(stream_id, request, limits=FAST)


def test_slow_client_trickling_a_frame_is_cut_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, limits(ttrpc_frame_read_timeout_s=0.3)),
            await TtrpcClient.connect(f"unix://{sock}") as bystander,
        ):
            frame = encode_frame(Frame(1, 1, 0, b"z" * 2000), max_data_length=MAX)
            peer = await RawPeer.connect(sock, FAST)
            closed = asyncio.create_task(peer.closed_by_server())
            # One byte every 20 ms would take 40 s; the per-frame deadline is 0.3 s in total, so the server
            # must close the connection long before (each read alone is well within 0.3 s).
            sent = await trickle(peer, frame, closed)
            assert await closed
            assert sent < len(frame)
            assert await bystander.call(SERVICE, "Echo", b"b") == b"b"

    run(scenario())


def test_idle_connection_is_closed_but_not_while_a_call_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, limits(ttrpc_idle_timeout_s=0.3)) as server:
            async with await TtrpcClient.connect(f"unix://{sock}") as client:
                # A call that outlasts the idle timeout is not cut: idle time counts only with nothing in flight.
                assert await client.call(SERVICE, "Sleep", b"900") == b"900"
                await wait_until(lambda: server.connection_count == 0, "the idle connection to close")
                with pytest.raises(TransportError) as info:
                    await client.call(SERVICE, "Echo", b"x")
                assert info.value.retryable
            assert await echo_works(sock)

    run(scenario())


def test_client_that_never_reads_answers_is_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, limits(ttrpc_write_timeout_s=0.3)) as server,
            await TtrpcClient.connect(f"unix://{sock}") as bystander,
        ):
            peer = await RawPeer.connect(sock, FAST)
            big = Request(SERVICE, "Echo", b"y" * (1 << 20))
            with pytest.raises(ConnectionError):
                await flood(peer, big)
            await wait_until(lambda: server.connection_count == 1, "the non-reading connection to close")
            assert await bystander.call(SERVICE, "Echo", b"b") == b"b"
            peer.close()

    run(scenario())


def test_connection_cap(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, limits(ttrpc_max_connections=2)) as server:
            first = await TtrpcClient.connect(f"unix://{sock}")
            second = await TtrpcClient.connect(f"unix://{sock}")
            assert await first.call(SERVICE, "Echo", b"1") == b"1"
            assert await second.call(SERVICE, "Echo", b"2") == b"2"
            assert server.connection_count == 2
            third = await RawPeer.connect(sock, FAST)
            assert await third.closed_by_server()
            assert await first.call(SERVICE, "Echo", b"1") == b"1"
            await second.close()
            await wait_until(lambda: server.connection_count == 1, "a slot to free")
            assert await echo_works(sock)
            await first.close()

    run(scenario())


# --- concurrency ------------------------------------------------------------------------------------------------


def test_100_concurrent_calls_on_one_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST), await TtrpcClient.connect(f"unix://{sock}") as client:
            # Sleeps of 0..49 ms in reverse order: answers come back in a different order than asked.
            calls = [client.call(SERVICE, "Sleep", str((99 - i) % 50).encode()) for i in range(100)]
            answers = await asyncio.gather(*calls)
            assert answers == [str((99 - i) % 50).encode() for i in range(100)]

    run(scenario())


def test_answers_interleave_in_completion_order(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def wait(_r: bytes, _c: CallContext) -> bytes:
        await release.wait()
        return b"waited"

    async def open_gate(_r: bytes, _c: CallContext) -> bytes:
        release.set()
        return b"released"

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST, {"Wait": wait, "Release": open_gate}):
            peer = await RawPeer.connect(sock, FAST)
            await peer.send_request(1, Request(SERVICE, "Wait"), limits=FAST)
            await peer.send_request(3, Request(SERVICE, "Release"), limits=FAST)
            assert await peer.read_response() == (3, Response(Status(), b"released"))
            assert await peer.read_response() == (1, Response(Status(), b"waited"))
            peer.close()

    run(scenario())


def test_calls_in_flight_per_connection_are_bounded(tmp_path: Path) -> None:
    gate = asyncio.Event()
    in_flight = 0
    peak = 0

    async def held(_r: bytes, _c: CallContext) -> bytes:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return b"done"

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, limits(ttrpc_max_concurrent_calls=3), {"Held": held}),
            await TtrpcClient.connect(f"unix://{sock}") as client,
        ):
            calls = asyncio.gather(*(client.call(SERVICE, "Held") for _ in range(10)))
            await wait_until(lambda: in_flight == 3, "three calls to start")
            await asyncio.sleep(0.2)  # room for a fourth to start, if the bound were broken
            assert peak == 3
            gate.set()
            assert await calls == [b"done"] * 10
            # A second connection has its own slots.
            assert await echo_works(sock)

    run(scenario())


def test_half_closed_client_still_gets_its_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, FAST):
            peer = await RawPeer.connect(sock, FAST)
            await peer.send_request(1, Request(SERVICE, "Sleep", b"50"), limits=FAST)
            peer.writer.write_eof()
            assert await peer.read_response() == (1, Response(Status(), b"50"))
            assert await peer.closed_by_server()

    run(scenario())


def test_close_cancels_calls_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        server = await start_server(sock, FAST)
        client = await TtrpcClient.connect(f"unix://{sock}")
        call = asyncio.create_task(client.call(SERVICE, "Sleep", b"60000"))
        await wait_until(lambda: server.connection_count == 1, "the connection")
        await asyncio.sleep(0.05)
        await server.close()
        with pytest.raises(TransportError):
            await call
        await client.close()

    run(scenario())


# --- addresses ----------------------------------------------------------------------------------------------------


def test_abstract_unix_socket() -> None:
    name = f"cocoguest-test-{uuid.uuid4().hex}"

    async def scenario() -> None:
        server = TtrpcServer(FAST)
        server.register(SERVICE, peer_service())
        async with server:
            await server.listen(f"unix://@{name}")
            async with await TtrpcClient.connect(f"unix://@{name}") as client:
                assert await client.call(SERVICE, "Echo", b"abstract") == b"abstract"

    run(scenario())


def test_stale_socket_is_replaced_but_other_files_are_not(tmp_path: Path) -> None:
    stale = tmp_path / "sub" / "stale.sock"
    stale.parent.mkdir()
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()
    regular = tmp_path / "regular"
    regular.write_text("keep me")

    async def scenario() -> None:
        async with await start_server(stale, FAST):
            assert await echo_works(stale)
        with pytest.raises(ConfigError, match="not a socket"):
            await start_server(regular, FAST)

    run(scenario())
    assert regular.read_text() == "keep me"


@functools.cache
def _vsock_loopback_reason() -> str | None:
    """Why vsock cannot be tested here, or None if a loopback vsock connection works."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        return "this Python has no socket.AF_VSOCK"
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        return f"socket(AF_VSOCK) failed: {e.strerror} (no vsock support in this kernel)"
    with listener:
        try:
            listener.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
            listener.listen(1)
            port = listener.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(2)
                probe.connect((1, port))  # VMADDR_CID_LOCAL
        except OSError as e:
            return f"vsock loopback connect failed: {e.strerror or e} (load the vsock_loopback kernel module)"
    return None


def test_vsock() -> None:
    reason = _vsock_loopback_reason()
    if reason is not None:
        pytest.skip(reason)

    async def scenario() -> None:
        server = TtrpcServer(FAST)
        server.register(SERVICE, peer_service())
        async with server:
            bound = await server.listen("vsock://-1:4294967295")  # any port
            async with await TtrpcClient.connect(f"vsock://1:{bound.port}") as client:  # type: ignore[union-attr]
                assert await client.call(SERVICE, "Echo", b"vsock") == b"vsock"

    run(scenario())


def test_vsock_unavailable_is_a_typed_error() -> None:
    if _vsock_loopback_reason() is None and hasattr(socket, "AF_VSOCK"):
        # Where vsock works, connecting to a port nobody listens on is a transport error.
        async def refused() -> None:
            with pytest.raises(TransportError):
                await TtrpcClient.connect("vsock://1:1")

        run(refused())
        return

    async def scenario() -> None:
        with pytest.raises((UnsupportedError, TransportError)):
            await TtrpcClient.connect("vsock://1:1024", limits=limits(ttrpc_connect_timeout_s=0.5))

    run(scenario())


def test_connect_to_missing_socket_is_retryable(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(TransportError) as info:
            await TtrpcClient.connect(f"unix://{tmp_path}/absent.sock")
        assert info.value.retryable
        assert "absent.sock" in str(info.value)

    run(scenario())
    assert not os.path.exists(tmp_path / "absent.sock")


# --- inline methods and the protocol's flow control -----------------------------------------------------


def _inline_methods() -> dict[str, Method]:
    def echo(request: bytes, context: CallContext) -> bytes:
        return request + b"|" + ",".join(context.metadata_values("k")).encode()

    def status(_request: bytes, _context: CallContext) -> bytes:
        raise RpcStatusError(Code.NOT_FOUND, "no such thing")

    def coco(_request: bytes, _context: CallContext) -> bytes:
        raise VerificationError("bad signature")

    def bug(_request: bytes, _context: CallContext) -> bytes:
        raise KeyError("oops")

    def not_bytes(_request: bytes, _context: CallContext) -> bytes:
        return "text"  # type: ignore[return-value]

    return {
        "InlineEcho": inline(echo),
        "InlineStatus": inline(status),
        "InlineCoco": inline(coco),
        "InlineBug": inline(bug),
        "InlineNotBytes": inline(not_bytes),
    }


def test_inline_methods_map_results_and_errors_like_async_ones(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, FAST, _inline_methods()),
            await TtrpcClient.connect(f"unix://{sock}") as client,
        ):
            assert await client.call(SERVICE, "InlineEcho", b"hi", metadata=[("k", "v"), ("k", "w")]) == b"hi|v,w"
            expected = [
                ("InlineStatus", Code.NOT_FOUND, "no such thing"),
                ("InlineCoco", Code.UNKNOWN, "bad signature"),
                ("InlineBug", Code.UNKNOWN, f"/{SERVICE}/InlineBug: internal error"),
                ("InlineNotBytes", Code.INTERNAL, f"/{SERVICE}/InlineNotBytes: internal error"),
            ]
            for method, code, message in expected:
                with pytest.raises(RpcStatusError) as info:
                    await client.call(SERVICE, method)
                assert (info.value.code, info.value.status_message) == (code, message), method
            # The connection survived every error; a negative timeout is still refused before the call.
            peer = await RawPeer.connect(sock, FAST)
            await peer.send_request(1, Request(SERVICE, "InlineEcho", b"x", timeout_nano=-1), limits=FAST)
            assert await peer.read_response() == (1, Response(Status(Code.DEADLINE_EXCEEDED, "timeout")))
            peer.close()
            assert await client.call(SERVICE, "InlineEcho", b"ok") == b"ok|"

    run(scenario())


def test_pipelined_requests_in_one_write_are_all_answered_under_back_pressure(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with await start_server(sock, limits(ttrpc_max_concurrent_calls=2), _inline_methods()):
            peer = await RawPeer.connect(sock, FAST)
            frames = b"".join(
                encode_frame(
                    Frame(sid, MessageType.REQUEST, 0, encode_request(Request(SERVICE, method, str(sid).encode()))),
                    max_data_length=MAX,
                )
                for sid, method in ((i, "Sleep" if i % 3 else "InlineEcho") for i in range(1, 80, 2))
            )
            await peer.send(frames)  # 40 frames in one write: more than the 2 slots, decoded from one buffer
            answers = dict([await peer.read_response() for _ in range(40)])
            for sid in range(1, 80, 2):
                body = str(sid).encode()
                assert answers[sid] == Response(Status(), body if sid % 3 else body + b"|"), sid
            peer.close()

    run(scenario())


def test_client_that_never_reads_inline_answers_is_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with (
            await start_server(sock, limits(ttrpc_write_timeout_s=0.3), _inline_methods()) as server,
            await TtrpcClient.connect(f"unix://{sock}") as bystander,
        ):
            peer = await RawPeer.connect(sock, FAST)
            big = Request(SERVICE, "InlineEcho", b"y" * (1 << 20))
            # Inline answers hold no call slot: only the paused-writing back-pressure stops the reading.
            with pytest.raises(ConnectionError):
                await flood(peer, big)
            await wait_until(lambda: server.connection_count == 1, "the non-reading connection to close")
            assert await bystander.call(SERVICE, "InlineEcho", b"b") == b"b|"
            peer.close()

    run(scenario())
