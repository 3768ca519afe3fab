"""The dev KBS HTTP/1.1 front end: stdlib threaded server, one thread per connection, keep-alive, optional TLS.

Why threads: the work per request is CPU (ES256, ECDH, Rego in rego-cpp) that mostly releases the GIL, and a
thread per connection isolates a slow or hostile client; measured throughput is in bench/kbs.py.

Invariants:
    * A request body is read only when its ``Content-Length`` is at most the configured payload size
      (Trustee's ``payload_request_size``, 2 MiB by default); a larger one is answered 413 and the connection
      closed without reading it. Chunked bodies are refused (411); actix would accept them, no KBS client sends
      them.
    * Garbage (a bad request line or headers) is answered 400 by the stdlib parser and closes only that
      connection; an idle or trickling connection is closed after ``Limits.devkbs_socket_timeout_s``; at most
      ``Limits.devkbs_max_connections`` connections are open, further ones are closed at once.
    * TLS (unless ``insecure_http``) is negotiated in the connection's own thread, so a client that never
      completes its handshake holds only its own thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from cocoguest.crypto.jws import Es256Key, load_ed25519_public_pem
from cocoguest.devkbs.admin_auth import AdminAuth
from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.service import KbsService, Response
from cocoguest.devkbs.storage import ResourceStore
from cocoguest.errors import ConfigError

_logger = logging.getLogger(__name__)

_PAYLOAD_TOO_LARGE: Final = 413
_LENGTH_REQUIRED: Final = 411
_BAD_REQUEST: Final = 400


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: KbsService, config: DevKbsConfig) -> None:
        self.service = service
        self.config = config
        self.ssl_context: ssl.SSLContext | None = None
        self.slots = threading.BoundedSemaphore(config.limits.devkbs_max_connections)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            if self.ssl_context is not None and isinstance(request, socket.socket):
                request.settimeout(self.config.limits.devkbs_socket_timeout_s)
                try:
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "cocoguest-devkbs"
    disable_nagle_algorithm = True  # header and body are two writes: without this, delayed ACKs cost 40 ms each
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(self.server.config.limits.devkbs_socket_timeout_s)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        _logger.debug("dev KBS %s: " + format, self.client_address, *args)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(Response(_LENGTH_REQUIRED, b"chunked request bodies are not supported"), close=True)
            return None
        length_text = self.headers.get("Content-Length", "0").strip()
        if not length_text.isdigit():
            self._send(Response(_BAD_REQUEST, b"bad Content-Length"), close=True)
            return None
        length = int(length_text)
        if length > self.server.config.payload_request_bytes:
            # SECURITY: never read an oversized body; close the connection instead.
            self._send(Response(_PAYLOAD_TOO_LARGE, b"A payload reached size limit."), close=True)
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    def _serve(self) -> None:
        body = self._body()
        if body is None:
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        self._send(self.server.service.handle(self.command, self.path, headers, body))

    do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815


class DevKbsServer:
    """The dev KBS listening on every configured socket."""

    def __init__(self, config: DevKbsConfig, service: KbsService | None = None) -> None:
        """Bind the sockets (port 0 picks a free port; see :attr:`addresses`).

        Raises:
            ConfigError: a socket cannot be bound, or the TLS key/certificate cannot be loaded.
        """
        self.config = config
        self.service = service if service is not None else build_service(config)
        context = None
        if not config.insecure_http:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(str(config.certificate), str(config.private_key))
            except (OSError, ssl.SSLError) as e:
                msg = f"dev KBS: cannot load TLS certificate {config.certificate} / key {config.private_key}: {e}"
                raise ConfigError(msg) from e
        self._servers: list[_Server] = []
        address = config.sockets[0]
        try:
            for address in config.sockets:
                server = _Server(address, self.service, config)
                server.ssl_context = context
                self._servers.append(server)
        except OSError as e:
            self.close()
            msg = f"dev KBS: cannot listen on {address[0]}:{address[1]}: {e.strerror}"
            raise ConfigError(msg) from e
        self._threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound ``(host, port)`` of each socket."""
        return [(str(s.server_address[0]), int(s.server_address[1])) for s in self._servers]

    @property
    def url(self) -> str:
        """The URL of the first socket."""
        host, port = self.addresses[0]
        scheme = "http" if self.config.insecure_http else "https"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    def start(self) -> None:
        """Serve in background threads (plus a session sweeper)."""
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, name="devkbs-http", daemon=True)
            thread.start()
            self._threads.append(thread)

    def serve_forever(self) -> None:
        """Serve until interrupted."""
        self.start()
        try:
            while True:
                threading.Event().wait(60)
                self.service.sessions.sweep()
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and close the sockets."""
        for server in self._servers:
            if self._threads:
                server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._threads = []


@contextmanager
def running(config: DevKbsConfig, service: KbsService | None = None) -> Iterator[DevKbsServer]:
    """A started server, closed on exit."""
    server = DevKbsServer(config, service)
    server.start()
    try:
        yield server
    finally:
        server.close()
