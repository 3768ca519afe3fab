"""The HTTP transport of the KBS client: one request in, a status and a size-capped body out.

Connections are kept alive and reused (one pool per :class:`KbsHttp`, so per KBS client), through the stdlib
``http.client`` with deadline-bound sockets (:mod:`cocoguest.kbs.http_conn`).

Invariants:
    * SECURITY: every answer body is capped: a ``Content-Length`` above the cap is refused before any body byte
      is read (a small declared body is read in one call), and a body without one is cut off at ``cap + 1``
      bytes; either way the connection is closed and the call raises. A malformed ``Content-Length`` and a
      ``Content-Encoding`` other than ``identity`` (we ask for ``identity``; nothing is ever decompressed) are
      refused before reading.
    * SECURITY: a request has a whole-request deadline (``Limits.kbs_request_deadline_s``) that bounds every
      socket wait from connect to the last byte of the answer, so a server dripping bytes cannot hold us; a
      reused connection gets the deadline of the request it carries.
    * A connection goes back to the pool only after its answer was read completely and the server did not ask
      to close it; after any failure it is closed. An idle connection the server has closed (or sent unasked
      bytes on) is dropped before reuse. If a reused connection still turns out closed before the first byte of
      the answer (the server's keep-alive timeout raced our request), the request is sent once more on a new
      connection, within the same deadline; every KBS request may be repeated (a GET; ``/auth`` opens a new
      session; ``/attest`` presents the same evidence for the same nonce, which a KBS accepts or refuses).
    * No cookie jar: the ``kbs-session-id`` cookie is read from ``Set-Cookie`` and sent back explicitly by the
      caller, only on ``/attest`` (resource requests carry the token as ``Authorization: Bearer``), so a stale
      session cookie can never shadow a fresh token.
    * HTTPS trusts the system roots plus the configured CA certificate (as upstream's extra root); no
      redirects are followed; proxies are not read from the environment (libraries never read it).
    * Every failure is a :class:`TransportError` (``retryable`` for timeouts and resets) or a
      :class:`KbsProtocolError` for an oversized or malformed answer; messages name the step and the URL.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import urlsplit

from cocoguest import __version__
from cocoguest.errors import ConfigError, KbsProtocolError, TransportError
from cocoguest.kbs.http_conn import DeadlineExceeded, KbsConnection, deadline_ssl_context
from cocoguest.kbs.protocol import SESSION_COOKIE, Step
from cocoguest.limits import DEFAULT_LIMITS, Limits

USER_AGENT: Final = f"cocoguest-kbs-client/{__version__}"
_CHUNK_BYTES: Final = 64 * 1024
_MAX_SHOWN_CHARS: Final = 200

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A KBS answer: status, body (at most the cap) and the session cookie if one was set."""

    status: int
    untrusted_body: bytes
    untrusted_session_cookie: str | None


def _ssl_context(ca_cert_pem: bytes | None) -> ssl.SSLContext:
    ctx = deadline_ssl_context(ssl.create_default_context())
    if ca_cert_pem is not None:
        try:
            ctx.load_verify_locations(cadata=ca_cert_pem.decode("ascii"))
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
            msg = "KBS CA certificate: not a PEM certificate"
            raise ConfigError(msg) from e
    return ctx


def check_kbs_url(url: str) -> str:
    """``url`` without a trailing ``/`` after checking it is ``http(s)://host[:port][/prefix]``.

    Raises:
        ConfigError: another scheme, no host, user info, a query or a fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"KBS URL {url[:200]!r} must be http(s)://host[:port]"
        raise ConfigError(msg)
    if parts.username is not None or parts.query or parts.fragment:
        msg = f"KBS URL {url[:200]!r} may not have user information, a query or a fragment"
        raise ConfigError(msg)
    return url.rstrip("/")


def _session_cookie(set_cookies: list[str], limits: Limits) -> str | None:
    for header in set_cookies:
        if len(header) > limits.kbs_max_cookie_bytes:
            continue
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


class KbsHttp:
    """Size-capped, deadline-bound requests to one KBS over kept-alive connections; safe to share by threads."""

    __slots__ = ("_base_url", "_closed", "_host", "_idle", "_limits", "_lock", "_path_prefix", "_port", "_tls")

    def __init__(
        self,
        url: str,
        *,
        ca_cert_pem: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Prepare requests to the KBS at ``url`` (no connection is opened yet).

        Args:
            url: ``http(s)://host[:port][/prefix]``; ``/kbs/v0/...`` paths are appended.
            ca_cert_pem: an extra trusted root (PEM) for HTTPS.
            limits: timeouts, caps and the idle-connection count.

        Raises:
            ConfigError: a malformed URL or CA certificate.
        """
        self._base_url = check_kbs_url(url)
        parts = urlsplit(self._base_url)
        try:
            port = parts.port
        except ValueError as e:
            msg = f"KBS URL {url[:200]!r} has a malformed port"
            raise ConfigError(msg) from e
        https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = port if port is not None else (443 if https else 80)
        self._path_prefix = parts.path
        self._tls = _ssl_context(ca_cert_pem) if https else None
        self._limits = limits
        self._lock = threading.Lock()
        self._idle: list[KbsConnection] = []
        self._closed = False

    @property
    def base_url(self) -> str:
        """The KBS URL, without a trailing slash."""
        return self._base_url

    def close(self) -> None:
        """Close the idle connections; connections of requests in flight close when those end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _acquire(self) -> tuple[KbsConnection, bool]:
        """A usable idle connection (``True``: reused) or a new, unopened one (``False``)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.idle_and_open():
                return conn, True
            conn.close()  # closed by the server while idle
        limits = self._limits
        return (
            KbsConnection(
                self._host,
                self._port,
                tls=self._tls,
                connect_timeout_s=limits.kbs_connect_timeout_s,
                read_timeout_s=limits.kbs_read_timeout_s,
            ),
            False,
        )

    def _release(self, conn: KbsConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._limits.kbs_max_idle_connections:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self,
        step: Step,
        method: str,
        path: str,
        *,
        max_bytes: int,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one request and read its answer, whatever the status, up to ``max_bytes``.

        Raises:
            TransportError: connection, TLS or timeout failure (timeouts and resets are ``retryable``).
            KbsProtocolError: the answer is larger than ``max_bytes``, or not well-formed HTTP/1.x.
        """
        url = f"{self._base_url}{path}"
        target = f"{self._path_prefix}{path}"
        all_headers = {"User-Agent": USER_AGENT}
        if headers:
            all_headers.update(headers)
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + self._limits.kbs_request_deadline_s
        may_repeat = True
        while True:
            conn, reused = self._acquire()
            conn.begin(deadline)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                response = conn.getresponse()
            except ConnectionError as e:
                conn.close()
                if reused and may_repeat:
                    # The server closed the kept-alive connection before answering: once more on a new one.
                    _logger.debug("KBS %s %s: kept-alive connection closed (%s); sending again", step, url, e)
                    may_repeat = False
                    continue
                raise self._failure(step, url, deadline, e) from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise self._failure(step, url, deadline, e) from e
            except BaseException:
                conn.close()
                raise
            break
        try:
            data = self._read_capped(response, step, url, max_bytes, deadline)
            cookie = _session_cookie(response.headers.get_all("set-cookie") or [], self._limits)
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._release(conn)
        return HttpAnswer(response.status, data, cookie)

    def _failure(self, step: Step, url: str, deadline: float, error: Exception) -> TransportError | KbsProtocolError:
        """The typed error for ``error`` raised by the socket layer or ``http.client``."""
        where = f"KBS {step} {url}"
        if isinstance(error, DeadlineExceeded) or (isinstance(error, TimeoutError) and time.monotonic() >= deadline):
            limit = self._limits.kbs_request_deadline_s
            return TransportError(
                f"{where}: answer not complete within {limit:g} s (kbs_request_deadline_s)", retryable=True
            )
        if isinstance(error, TimeoutError):
            return TransportError(f"{where}: timed out", retryable=True)
        if isinstance(error, ssl.SSLCertVerificationError):
            return TransportError(f"{where}: TLS certificate not trusted: {error.verify_message}")
        if isinstance(error, http.client.IncompleteRead):
            return TransportError(f"{where}: the connection closed before the answer was complete", retryable=True)
        if isinstance(error, http.client.HTTPException) and not isinstance(error, ConnectionError):
            shown = str(error)[:_MAX_SHOWN_CHARS]
            return KbsProtocolError(f"{where}: malformed HTTP answer: {type(error).__name__}: {shown}", step=str(step))
        return TransportError(f"{where}: {type(error).__name__}: {error}", retryable=True)

    def _read_capped(
        self, response: http.client.HTTPResponse, step: Step, url: str, max_bytes: int, deadline: float
    ) -> bytes:
        where = f"KBS {step} {url}"
        encoding = response.getheader("content-encoding")
        # SECURITY: nothing is decompressed (we sent Accept-Encoding: identity), so no size can grow after the cap.
        if encoding is not None and encoding.strip().lower() != "identity":
            msg = f"{where}: answer is {encoding[:32]!r}-encoded; only identity is accepted"
            raise KbsProtocolError(msg, step=str(step))
        declared = response.getheader("content-length")
        if declared is not None and not response.chunked and response.length is None:
            msg = f"{where}: malformed Content-Length {declared[:32]!r}"
            raise KbsProtocolError(msg, step=str(step))
        try:
            if response.length is not None:
                # SECURITY: refuse a declared oversize answer before reading any of it.
                if response.length > max_bytes:
                    msg = f"{where}: answer of {response.length} bytes is larger than the limit of {max_bytes}"
                    raise KbsProtocolError(msg, step=str(step))
                return response.read()  # exactly the declared length, at most max_bytes
            chunks: list[bytes] = []
            received = 0
            while chunk := response.read(_CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    msg = f"{where}: answer is larger than the limit of {max_bytes} bytes"
                    raise KbsProtocolError(msg, step=str(step))
                chunks.append(chunk)
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as e:
            raise self._failure(step, url, deadline, e) from e
