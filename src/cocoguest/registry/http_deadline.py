"""A request's total deadline, enforced inside the connection while it connects and its headers arrive.

httpx's timeouts are per network operation: a registry that sends its status line and headers one byte a
second never trips a read timeout, so the answer's head alone could hold a request for hours (bounded only by
the header size cap). The body is bounded elsewhere (:func:`cocoguest.registry.http_body.read_body` checks the
deadline between chunks; blobs have a minimum rate), but the head is read inside ``client.send``, out of reach.

:class:`DeadlineTransport` closes that gap: a request that carries a :class:`Deadline` in
``request.extensions[DEADLINE_EXTENSION]`` runs with it as the current deadline, and the network streams of the
transport (:class:`DeadlineBackend`) clip every connect, TLS handshake, write and read to the time left.

Invariants:
    * The deadline is current exactly for the duration of ``handle_request`` (connect, proxy tunnel, TLS,
      sending the request, reading the status line and headers), in the calling thread only (a contextvar).
      Body reads happen later and are not clipped here (their own checks bound them).
    * With a current deadline, no network operation waits longer than the time left; once it has passed, the
      operation raises httpcore's timeout at once, and the deadline is marked expired so that the caller's
      :meth:`Deadline.check` reports the limit (``registry_request_deadline_s``) rather than a bare timeout.
    * Requests without a deadline, and streams outside ``handle_request``, behave exactly as httpx's own.
    * Works through proxies (HTTP CONNECT, SOCKS): every pool type httpx builds takes its connections from the
      wrapped backend, and TLS on a wrapped stream returns a wrapped stream.
"""

from __future__ import annotations

import contextvars
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import httpcore
import httpx

from cocoguest.registry.http_body import Deadline

DEADLINE_EXTENSION: Final = "cocoguest.deadline"
"""Key of ``httpx.Request.extensions`` holding the request's :class:`Deadline` (read by :class:`DeadlineTransport`)."""

_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("cocoguest_request_deadline", default=None)

_T = TypeVar("_T")


def _bounded(operation: Callable[[float | None], _T], timeout: float | None, timeout_error: type[Exception]) -> _T:
    """Run ``operation(timeout)`` with ``timeout`` clipped to the current deadline, if any.

    Raises:
        timeout_error: (an httpcore timeout class) the deadline has passed, before or during the operation.
    """
    deadline = _CURRENT.get()
    if deadline is None:
        return operation(timeout)
    left = deadline.remaining()
    if left <= 0:
        deadline.expire()
        msg = f"no complete answer within {deadline.seconds:g} s ({deadline.limit})"
        raise timeout_error(msg)
    if timeout is not None and timeout < left:
        return operation(timeout)  # the operation's own timeout is the tighter one: an ordinary timeout
    try:
        return operation(left)
    except httpcore.TimeoutException:
        # SECURITY: the wait was cut by the deadline: report the limit, not a retryable read timeout.
        deadline.expire()
        raise


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every wait is clipped to the current deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _bounded(lambda t: self._inner.read(max_bytes, t), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _bounded(lambda t: self._inner.write(buffer, t), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = _bounded(
            lambda t: self._inner.start_tls(ssl_context, server_hostname, t), timeout, httpcore.ConnectTimeout
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:  # httpcore's signature
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend (``inner``, default the sync socket backend) with deadline-clipped streams."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        def connect(t: float | None) -> httpcore.NetworkStream:
            return self._inner.connect_tcp(host, port, t, local_address, socket_options)

        return _DeadlineStream(_bounded(connect, timeout, httpcore.ConnectTimeout))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        def connect(t: float | None) -> httpcore.NetworkStream:
            return self._inner.connect_unix_socket(path, t, socket_options)

        return _DeadlineStream(_bounded(connect, timeout, httpcore.ConnectTimeout))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's HTTP transport (direct or through ``proxy``) that honours a request's :data:`DEADLINE_EXTENSION`.

    Raises:
        RuntimeError: (at construction) the installed httpx/httpcore no longer has the pool attribute the backend
            is installed through; failing loudly beats silently losing the deadline.
    """

    def __init__(self, *, verify: ssl.SSLContext, proxy: str | None = None) -> None:
        super().__init__(verify=verify, proxy=proxy, trust_env=False)
        # httpx.HTTPTransport takes no network backend; every httpcore pool it builds (ConnectionPool, HTTPProxy,
        # SOCKSProxy) makes its connections through its `_network_backend`, so wrapping that covers them all.
        pool: Any = self._pool
        inner = getattr(pool, "_network_backend", None)
        if not isinstance(inner, httpcore.NetworkBackend):  # pragma: no cover — only on an incompatible httpcore
            msg = f"httpcore {httpcore.__version__}: cannot install the request-deadline network backend"
            raise RuntimeError(msg)
        pool._network_backend = DeadlineBackend(inner)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = request.extensions.get(DEADLINE_EXTENSION)
        if not isinstance(deadline, Deadline):
            return super().handle_request(request)
        token = _CURRENT.set(deadline)
        try:
            return super().handle_request(request)
        finally:
            _CURRENT.reset(token)
