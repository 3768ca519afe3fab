"""The dev KBS HTTP/1.1 front end: one asyncio event loop (in its own thread), keep-alive, optional TLS.

Why asyncio and not a thread per connection: the work per request is short CPU (ES256, ECDH, the shipped
attestation policies natively) under the GIL; with threads, parsing headers with the stdlib and switching between
16 connection threads cost more than the work itself (bench/kbs.py, bench/README.md). Requests are parsed by the
sans-IO :mod:`cocoguest.devkbs.http11` and answered inline on the loop, one at a time, in arrival order.

Invariants:
    * A request body is read only when its ``Content-Length`` is at most the configured payload size
      (Trustee's ``payload_request_size``, 2 MiB by default); a larger one is answered 413 and the connection
      closed without reading it. Any ``Transfer-Encoding`` is refused (411); no KBS client sends one.
    * Garbage (a bad request line or headers) is answered 400 and closes only that connection; headers over
      ``Limits.devkbs_max_header_bytes`` are answered 431. A connection is closed when a request is not complete
      ``Limits.devkbs_socket_timeout_s`` after the connection opened or the previous answer was sent (so idle
      and trickling clients are dropped); at most ``Limits.devkbs_max_connections`` connections are open,
      further ones are closed at once.
    * Back-pressure: while the client does not read its answers (the transport's write buffer is full), the
      connection is not read either, so a pipelining client cannot grow the server's memory.
    * TLS (unless ``insecure_http``) is negotiated by the loop with the same timeout; a client that never
      completes its handshake holds only its own socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from typing import Final

from cocoguest.crypto.jws import Es256Key, load_ed25519_public_pem
from cocoguest.devkbs.admin_auth import AdminAuth
from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.http11 import CONTINUE, Refusal, RequestParser, render_response
from cocoguest.devkbs.service import KbsService
from cocoguest.devkbs.storage import ResourceStore
from cocoguest.errors import ConfigError

_logger = logging.getLogger(__name__)

_NOT_IMPLEMENTED: Final = 501
_METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE"})
_BACKLOG: Final = 128
_SWEEP_S: Final = 60.0


def build_service(config: DevKbsConfig) -> KbsService:
    """The KBS of ``config`` (keys loaded, directories created).

    Raises:
        ConfigError: a key file is unreadable or of the wrong kind.
        KbsApiError: the resource policy file does not parse.
    """
    admin_key = None
    if config.insecure_api:
        _logger.warning("dev KBS: [admin] insecure_api = true: admin endpoints need no authentication")
    else:
        assert config.auth_public_key is not None  # noqa: S101  (DevKbsConfig invariant)
        admin_key = load_ed25519_public_pem(_read(config.auth_public_key), str(config.auth_public_key))
    if config.token_signing_key is not None:
        token_key = Es256Key.from_pem(_read(config.token_signing_key), str(config.token_signing_key))
    else:
        token_key = Es256Key.generate()
    return KbsService(
        resources=ResourceStore(config.resource_dir, config.limits),
        policy_path=config.policy_path,
        admin=AdminAuth(admin_key, limits=config.limits),
        token_key=token_key,
        token_lifetime_s=config.token_lifetime_s,
        session_lifetime_s=config.session_lifetime_s,
        extra_teekey_paths=config.extra_teekey_paths,
        limits=config.limits,
    )


def _read(path: object) -> bytes:
    try:
        with open(str(path), "rb") as f:
            return f.read(1 << 20)
    except OSError as e:
        msg = f"dev KBS: cannot read {path}: {e.strerror}"
        raise ConfigError(msg) from e


class _Connection(asyncio.Protocol):
    """One client connection: bytes in, :class:`KbsService` answers out."""

    def __init__(self, owner: _Listener) -> None:
        self._owner = owner
        limits = owner.config.limits
        self._parser = RequestParser(
            max_header_bytes=limits.devkbs_max_header_bytes, max_body_bytes=owner.config.payload_request_bytes
        )
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._paused = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101  (stream servers give stream transports)
        self._transport = transport
        if len(self._owner.connections) >= self._owner.config.limits.devkbs_max_connections:
            transport.abort()
            return
        self._owner.connections.add(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _arm(self) -> None:
        """Move the deadline to one timeout from now.

        Only the deadline moves; the one timer, when it fires early, sleeps again until the deadline (so a
        keep-alive request costs a float store, not a cancelled timer and a new one on the loop's heap).
        """
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._owner.config.limits.devkbs_socket_timeout_s
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        self._timer = None
        _logger.debug("dev KBS: closing a connection idle or trickling for too long")
        self.close()

    def close(self) -> None:
        """Close now (answers already written are flushed first)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._serve()

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        self._serve()

    def _serve(self) -> None:
        transport = self._transport
        while transport is not None and not self._closing and not self._paused:
            item = self._parser.next()
            if item is None:
                if self._parser.wants_continue():
                    transport.write(CONTINUE)
                return
            if isinstance(item, Refusal):
                self._write(item.status, item.detail, None, (), close=True)
                return
            if item.method not in _METHODS:
                self._write(_NOT_IMPLEMENTED, b"Unsupported method", None, (), close=True)
                return
            response = self._owner.service.handle(item.method, item.target, item.headers, item.body)
            self._write(
                response.status, response.body, response.content_type, response.headers, close=not item.keep_alive
            )
            if response.after_sent is not None:
                # After the loop has handed the answer to the socket, before it waits for more (idle time).
                asyncio.get_running_loop().call_soon(response.after_sent)
            self._arm()

    def _write(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: tuple[tuple[str, str], ...],
        *,
        close: bool,
    ) -> None:
        transport = self._transport
        if transport is None:
            return
        date = self._owner.http_date()
        transport.write(
            render_response(status, body, content_type=content_type, headers=headers, date=date, close=close)
        )
        if close:
            self.close()


class _Listener:
    """One bound socket and its open connections."""

    def __init__(self, address: tuple[str, int], service: KbsService, config: DevKbsConfig) -> None:
        self.service = service
        self.config = config
        self.connections: set[_Connection] = set()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(address)
            self.sock.listen(_BACKLOG)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.server: asyncio.Server | None = None
        self._date: tuple[int, str] = (0, "")

    def http_date(self) -> str:
        """The ``Date`` header value for now, formatted once per second (only the loop thread calls this)."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]


class DevKbsServer:
    """The dev KBS listening on every configured socket, served by one event loop thread."""

    def __init__(self, config: DevKbsConfig, service: KbsService | None = None) -> None:
        """Bind the sockets (port 0 picks a free port; see :attr:`addresses`).

        Raises:
            ConfigError: a socket cannot be bound, or the TLS key/certificate cannot be loaded.
        """
        self.config = config
        self.service = service if service is not None else build_service(config)
        self._ssl: ssl.SSLContext | None = None
        if not config.insecure_http:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                self._ssl.load_cert_chain(str(config.certificate), str(config.private_key))
            except (OSError, ssl.SSLError) as e:
                msg = f"dev KBS: cannot load TLS certificate {config.certificate} / key {config.private_key}: {e}"
                raise ConfigError(msg) from e
        self._listeners: list[_Listener] = []
        address = config.sockets[0]
        try:
            for address in config.sockets:
                self._listeners.append(_Listener(address, self.service, config))
        except OSError as e:
            self.close()
            msg = f"dev KBS: cannot listen on {address[0]}:{address[1]}: {e.strerror}"
            raise ConfigError(msg) from e
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound ``(host, port)`` of each socket."""
        return [(str(lst.sock.getsockname()[0]), int(lst.sock.getsockname()[1])) for lst in self._listeners]

    @property
    def url(self) -> str:
        """The URL of the first socket."""
        host, port = self.addresses[0]
        scheme = "http" if self.config.insecure_http else "https"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    async def _start_listening(self) -> None:
        timeout = self.config.limits.devkbs_socket_timeout_s
        for listener in self._listeners:
            bound = listener

            def factory(owner: _Listener = bound) -> _Connection:
                return _Connection(owner)

            listener.server = await asyncio.get_running_loop().create_server(
                factory, sock=listener.sock, ssl=self._ssl, ssl_handshake_timeout=timeout if self._ssl else None
            )
        self._sweep()

    def _sweep(self) -> None:
        self.service.sessions.sweep()
        assert self._loop is not None  # noqa: S101  (called on the running loop)
        self._loop.call_later(_SWEEP_S, self._sweep)

    def start(self) -> None:
        """Serve in a background thread (the event loop, which also sweeps expired sessions)."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failed: list[Exception] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_listening())
            except (OSError, RuntimeError, ssl.SSLError) as e:  # reported to start()'s caller
                failed.append(e)
                loop.close()
                self._stopped.set()
                return
            finally:
                ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="devkbs-http", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join()
            self._thread = None
            msg = f"dev KBS: cannot start serving: {failed[0]}"
            raise ConfigError(msg) from failed[0]

    async def _shutdown(self) -> None:
        for listener in self._listeners:
            if listener.server is not None:
                listener.server.close()
            for connection in list(listener.connections):
                connection.close()
        for listener in self._listeners:
            if listener.server is not None:
                await listener.server.wait_closed()

    def serve_forever(self) -> None:
        """Serve until interrupted."""
        self.start()
        try:
            while not self._stopped.wait(3600):
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and close the sockets."""
        if self._loop is not None and self._thread is not None:
            if not self._stopped.is_set():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        for listener in self._listeners:
            listener.sock.close()


@contextmanager
def running(config: DevKbsConfig, service: KbsService | None = None) -> Iterator[DevKbsServer]:
    """A started server, closed on exit."""
    server = DevKbsServer(config, service)
    server.start()
    try:
        yield server
    finally:
        server.close()
