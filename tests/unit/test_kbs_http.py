"""The KBS client's HTTP transport (cocoguest.kbs.http) against a scripted HTTP/1.1 server on loopback.

The server is raw sockets in a thread, so each test decides byte by byte what a connection gets: a reused
kept-alive connection must still enforce the size cap and the request deadline, a connection the server closed
while idle or while our request was in flight is replaced once (never more, never silently), and malformed or
compressed answers are refused with errors naming the step.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cocoguest.errors import KbsProtocolError, TransportError
from cocoguest.kbs.http import KbsHttp
from cocoguest.kbs.protocol import Step
from cocoguest.limits import Limits, MiB
from tests.fixtures.registry import make_ca

PATH = "/kbs/v0/resource/default/key/1"


@dataclass
class Request:
    """One request as the server read it."""

    connection: int
    line: str
    headers: dict[str, str]


@dataclass
class ScriptedServer:
    """Accepts connections; ``answer(server, request, sock)`` writes (or withholds) each answer.

    ``answer`` returns ``False`` to close the connection after it.
    """

    answer: Callable[[ScriptedServer, Request, socket.socket], bool]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0
    bytes_sent: int = 0
    port: int = 0
    tls: ssl.SSLContext | None = None

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        self.bytes_sent += len(data)

    def _serve_connection(self, sock: socket.socket, index: int) -> None:
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except OSError:
                sock.close()
                return
        reader = sock.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line:
                    self.closed_by_client += 1
                    return
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                reader.read(int(headers.get("content-length", "0")))
                request = Request(index, line.decode().strip(), headers)
                self.requests.append(request)
                if not self.answer(self, request, sock):
                    return
        except OSError:
            return
        finally:
            reader.close()
            sock.close()

    @contextmanager
    def running(self) -> Iterator[ScriptedServer]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                sock.settimeout(None)
                self.connections += 1
                threading.Thread(target=self._serve_connection, args=(sock, self.connections), daemon=True).start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(5)
            listener.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _get(http: KbsHttp, max_bytes: int = 1 * MiB) -> bytes:
    answer = http.request(Step.RESOURCE, "GET", PATH, max_bytes=max_bytes, headers={"Authorization": "Bearer t"})
    assert answer.status == 200
    return answer.untrusted_body


def test_connection_is_kept_alive_and_reused() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        server.send(sock, ok())
        return True

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        for _ in range(5):
            assert _get(http) == b'{"ok":true}'
        http.close()
    assert server.connections == 1
    assert [r.connection for r in server.requests] == [1] * 5
    first = server.requests[0]
    assert first.line == f"GET {PATH} HTTP/1.1"
    assert first.headers["authorization"] == "Bearer t"
    assert first.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("declared", [True, False])
def test_reused_connection_still_enforces_the_cap(declared: bool) -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) == 1:
            server.send(sock, ok())
            return True
        if declared:
            server.send(sock, f"HTTP/1.1 200 OK\r\nContent-Length: {64 * MiB}\r\n\r\n".encode())
        else:
            server.send(sock, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * (64 * 1024)
        for _ in range(64 * MiB // len(chunk)):
            server.send(sock, (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if not declared else chunk)
        return False

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        _get(http)
        with pytest.raises(KbsProtocolError, match="larger than the limit of 1048576") as info:
            _get(http)
        assert info.value.step == "resource"
        assert server.connections == 1  # the second request went over the kept-alive connection
        # After the refusal the connection is not reused: a third request opens a new one.
        with pytest.raises(KbsProtocolError):
            _get(http)
        assert server.connections == 2
    assert server.bytes_sent < 64 * MiB


@pytest.mark.parametrize("phase", ["headers", "body", "silence"])
def test_reused_connection_still_enforces_the_deadline(phase: str) -> None:
    """A server dripping a byte every 50 ms (or silent for 3 s) is cut off at the 0.5 s deadline, although each
    read is quicker than the 5 s read timeout."""

    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) == 1:
            server.send(sock, ok())
            return True
        if phase == "silence":
            time.sleep(3)
            return False
        drip = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200 if phase == "headers" else ok(b"{" + b" " * 200 + b"}")
        if phase == "body":
            server.send(sock, drip[:-150])
            drip = drip[-150:]
        for byte in drip:
            time.sleep(0.05)
            server.send(sock, bytes([byte]))
        return False

    limits = Limits(kbs_request_deadline_s=0.5, kbs_read_timeout_s=5.0)
    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url, limits=limits)
        _get(http)
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"KBS resource .*not complete within 0.5 s") as info:
            _get(http)
        elapsed = time.monotonic() - started
        assert server.connections == 1
    assert info.value.retryable
    assert 0.4 < elapsed < 1.5


def test_silent_server_is_cut_off_by_the_read_timeout() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        time.sleep(1.0)
        return False

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url, limits=Limits(kbs_read_timeout_s=0.2))
        with pytest.raises(TransportError, match=r"KBS resource .*: timed out"):
            _get(http)


def test_connection_closed_while_idle_is_replaced() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        server.send(sock, ok())
        return False  # close after every answer, without saying so

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        _get(http)
        time.sleep(0.1)  # the FIN arrives
        _get(http)
        assert server.connections == 2
        assert len(server.requests) == 2


def test_connection_closed_with_our_request_in_flight_is_retried_once() -> None:
    """The keep-alive race: the server reads our request on the old connection and closes without answering."""

    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) == 2:
            return False  # the second request dies with its (reused) connection
        server.send(sock, ok())
        return True

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        _get(http)
        _get(http)
        assert [r.connection for r in server.requests] == [1, 1, 2]
        _get(http)  # the new connection is kept alive in turn
        assert [r.connection for r in server.requests] == [1, 1, 2, 2]


def test_a_server_that_keeps_dropping_requests_is_an_error_after_one_retry() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) == 1:
            server.send(sock, ok())
            return True
        return False

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        _get(http)
        with pytest.raises(TransportError, match=r"KBS resource .*RemoteDisconnected") as info:
            _get(http)
        assert info.value.retryable
        assert [r.connection for r in server.requests] == [1, 1, 2]  # one retry, on a new connection


def test_a_fresh_connection_closed_without_answer_is_not_retried() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        return False

    with ScriptedServer(answer).running() as server:
        with pytest.raises(TransportError, match="RemoteDisconnected"):
            _get(KbsHttp(server.url))
        assert len(server.requests) == 1


def test_connection_close_answer_is_not_reused() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        server.send(sock, ok(extra="Connection: close\r\n"))
        return True  # the server would keep it, but the client must not

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(server.url)
        _get(http)
        _get(http)
        assert server.connections == 2


@pytest.mark.parametrize(
    ("head", "match"),
    [
        ("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n", "'gzip'-encoded; only identity"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n", "malformed Content-Length '2x'"),
        ("HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n", "malformed HTTP answer: BadStatusLine"),
        ("SMTP ready\r\n", "malformed HTTP answer"),
    ],
)
def test_malformed_or_compressed_answers_are_refused(head: str, match: str) -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        server.send(sock, head.encode() + b"\r\n{}")
        return False

    with ScriptedServer(answer).running() as server:
        with pytest.raises(KbsProtocolError, match=match) as info:
            _get(KbsHttp(server.url))
        assert info.value.step == "resource"


def test_truncated_answer_is_a_transport_error() -> None:
    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        server.send(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")
        return False

    with (
        ScriptedServer(answer).running() as server,
        pytest.raises(TransportError, match="closed before the answer was complete"),
    ):
        _get(KbsHttp(server.url))


def test_url_prefix_threads_and_idle_cap() -> None:
    """Concurrent requests share the pool; at most ``kbs_max_idle_connections`` stay open afterwards."""
    entered = threading.Barrier(6)

    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) <= 6:
            entered.wait(5)  # six requests in flight at once: six connections
        server.send(sock, ok())
        return True

    with ScriptedServer(answer).running() as server:
        http = KbsHttp(f"{server.url}/prefix/", limits=Limits(kbs_max_idle_connections=2))
        bodies: list[bytes] = []
        threads = [threading.Thread(target=lambda: bodies.append(_get(http))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bodies == [b'{"ok":true}'] * 6
        assert server.connections == 6
        time.sleep(0.2)
        assert server.closed_by_client == 4  # only two stay idle
        for _ in range(4):
            _get(http)
        assert server.connections == 6  # reused, not reopened
        assert {r.connection for r in server.requests[6:]} <= {r.connection for r in server.requests[:6]}
        assert all(r.line == f"GET /prefix{PATH} HTTP/1.1" for r in server.requests)
        http.close()


def test_https_connection_is_reused_and_keeps_the_deadline(tmp_path: Path) -> None:
    """Over TLS too: one kept-alive connection, then a dripping answer cut off at the deadline."""
    ca = make_ca(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(ca.server_cert, ca.server_key)

    def answer(server: ScriptedServer, request: Request, sock: socket.socket) -> bool:
        if len(server.requests) <= 3:
            server.send(sock, ok())
            return True
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
            time.sleep(0.05)
            server.send(sock, bytes([byte]))
        return False

    with ScriptedServer(answer, tls=tls).running() as server:
        http = KbsHttp(server.url, ca_cert_pem=ca.ca_cert.read_bytes(), limits=Limits(kbs_request_deadline_s=0.5))
        for _ in range(3):
            assert _get(http) == b'{"ok":true}'
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"not complete within 0\.5 s"):
            _get(http)
        assert time.monotonic() - started < 1.5
        assert server.connections == 1
        with pytest.raises(TransportError, match="TLS certificate not trusted"):
            _get(KbsHttp(server.url))
