"""One kept-alive HTTP/1.1 connection to a KBS (stdlib ``http.client``) whose every socket wait ends by a deadline.

Why not httpx here: a resource GET through httpx/httpcore/h11 costs ~0.53 ms of client CPU on the 2-core test
machine against ~0.23 ms through ``http.client`` (issue 10); the KBS client needs none of what httpx adds
(proxies from the environment, redirects, cookie jars, HTTP/2), and this module adds no dependency.

Invariants:
    * SECURITY: every blocking socket operation (connect, TLS handshake, each send and each receive) is bounded
      by ``min(per-operation timeout, time left before the request deadline)``, and an operation that starts
      after the deadline raises :class:`DeadlineExceeded` at once; so a server dripping one byte at a time
      cannot hold a request past its deadline, in the status line and headers as well as in the body.
    * The deadline is set per request with :meth:`KbsConnection.begin`; a connection kept alive for the next
      request carries no deadline over (the next ``begin`` replaces it).
    * HTTPS uses the caller's :class:`ssl.SSLContext` (certificate and host name checked, as
      ``ssl.create_default_context``); the context must be made by :func:`deadline_ssl_context` so that its
      sockets obey the deadline too.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import select
import socket
import ssl
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


class DeadlineExceeded(TimeoutError):  # noqa: N818  (a TimeoutError, named like the stdlib's)
    """The request deadline passed before a socket operation could start."""


def _arm(sock: _DeadlineSocket | _DeadlineSslSocket) -> None:
    left = sock.deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded
    sock.settimeout(min(sock.op_timeout, left))


class _DeadlineSocket(socket.socket):
    """A TCP socket whose sends and receives are bounded by :attr:`deadline` (``time.monotonic`` seconds)."""

    deadline: float = math.inf
    op_timeout: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        _arm(self)
        super().sendall(data, flags)


class _DeadlineSslSocket(ssl.SSLSocket):
    """The TLS twin of :class:`_DeadlineSocket` (made by a :func:`deadline_ssl_context` context)."""

    deadline: float = math.inf
    op_timeout: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        _arm(self)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        _arm(self)
        super().sendall(data, flags)


def deadline_ssl_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context``, set to wrap sockets as deadline-bound TLS sockets; returns it."""
    context.sslsocket_class = _DeadlineSslSocket
    return context


class KbsConnection(http.client.HTTPConnection):
    """An ``http.client`` connection with per-request deadlines and optional TLS; connects on first use."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        """A connection to ``host:port`` (not opened yet).

        Args:
            host: host name or IP address (IPv6 without brackets).
            port: TCP port.
            tls: a :func:`deadline_ssl_context` context for HTTPS, ``None`` for plain HTTP.
            connect_timeout_s: bound of the TCP connect and of the TLS handshake.
            read_timeout_s: bound of each later send or receive.
        """
        super().__init__(host, port)
        self.default_port = 443 if tls is not None else 80  # the Host header omits the scheme's default port
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._deadline = math.inf

    def begin(self, deadline: float) -> None:
        """Bound every socket operation of the next request by ``deadline`` (``time.monotonic`` seconds)."""
        self._deadline = deadline
        sock = self.sock
        if isinstance(sock, _DeadlineSocket | _DeadlineSslSocket):
            sock.deadline = deadline

    def connect(self) -> None:
        """Open the TCP connection (and TLS session) within the connect timeout and the deadline.

        Raises:
            DeadlineExceeded, TimeoutError, OSError, ssl.SSLError: as the socket layer.
        """
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded
        timeout = min(self._connect_timeout_s, left)
        raw = socket.create_connection((self.host, self.port), timeout)
        with contextlib.suppress(OSError):  # as http.client: requests go out whole, no Nagle delay
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: _DeadlineSocket | _DeadlineSslSocket = _DeadlineSocket(
            raw.family, raw.type, raw.proto, fileno=raw.detach()
        )
        sock.settimeout(timeout)
        if self._tls is not None:
            wrapped = self._tls.wrap_socket(sock, server_hostname=self.host)
            assert isinstance(wrapped, _DeadlineSslSocket)  # noqa: S101  (deadline_ssl_context made the context)
            sock = wrapped
        sock.deadline = self._deadline
        sock.op_timeout = self._read_timeout_s
        self.sock = sock

    def idle_and_open(self) -> bool:
        """Whether an idle kept-alive connection still looks usable: open, and the server sent nothing since.

        A readable idle socket means the server closed it (EOF) or sent bytes nobody asked for; either way it
        must not carry another request.
        """
        sock = self.sock
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
