"""The HTTP transport of the KBS client: one request in, a status and a size-capped body out.

Invariants:
    * SECURITY: every answer body is capped while it streams: a ``Content-Length`` above the cap is refused
      before any body byte is read, and a body without one is cut off at ``cap + 1`` bytes; either way the
      connection is closed and the call raises. A request also has a whole-request deadline
      (``Limits.kbs_request_deadline_s``), so a server dripping bytes cannot hold us.
    * No cookie jar: the ``kbs-session-id`` cookie is read from ``Set-Cookie`` and sent back explicitly by the
      caller, only on ``/attest`` (resource requests carry the token as ``Authorization: Bearer``), so a stale
      session cookie can never shadow a fresh token.
    * HTTPS trusts the system roots plus the configured CA certificate (as upstream's extra root); no
      redirects are followed; proxies are not read from the environment (libraries never read it).
    * Every failure is a :class:`TransportError` (``retryable`` for timeouts and resets) or a
      :class:`KbsProtocolError` for an oversized or malformed answer; messages name the step and the URL.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import urlsplit

import httpx

from cocoguest import __version__
from cocoguest.errors import ConfigError, KbsProtocolError, TransportError
from cocoguest.kbs.protocol import SESSION_COOKIE, Step
from cocoguest.limits import DEFAULT_LIMITS, Limits

USER_AGENT: Final = f"cocoguest-kbs-client/{__version__}"
_CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A KBS answer: status, body (at most the cap) and the session cookie if one was set."""

    status: int
    untrusted_body: bytes
    untrusted_session_cookie: str | None


def _ssl_context(ca_cert_pem: bytes | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
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


def _session_cookie(response: httpx.Response, limits: Limits) -> str | None:
    for header in response.headers.get_list("set-cookie"):
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
    """Size-capped, deadline-bound requests to one KBS."""

    __slots__ = ("_base_url", "_client", "_limits")

    def __init__(
        self,
        url: str,
        *,
        ca_cert_pem: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Open a connection pool to the KBS at ``url``.

        Args:
            url: ``http(s)://host[:port]``; ``/kbs/v0/...`` paths are appended.
            ca_cert_pem: an extra trusted root (PEM) for HTTPS.
            limits: timeouts and caps.
            transport: an httpx transport (tests); the default is a real HTTP transport.

        Raises:
            ConfigError: a malformed URL or CA certificate.
        """
        self._base_url = check_kbs_url(url)
        self._limits = limits
        timeout = httpx.Timeout(limits.kbs_read_timeout_s, connect=limits.kbs_connect_timeout_s)
        self._client = httpx.Client(
            verify=_ssl_context(ca_cert_pem),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        """The KBS URL, without a trailing slash."""
        return self._base_url

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

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
            KbsProtocolError: the answer is larger than ``max_bytes``.
        """
        url = f"{self._base_url}{path}"
        all_headers = dict(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        # Built directly (not with client.build_request) so that no cookie jar content is ever added.
        request = httpx.Request(method, url, content=body, headers={**self._client.headers, **all_headers})
        deadline = time.monotonic() + self._limits.kbs_request_deadline_s
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as e:
            msg = f"KBS {step} {url}: timed out"
            raise TransportError(msg, retryable=True) from e
        except httpx.HTTPError as e:
            msg = f"KBS {step} {url}: {type(e).__name__}: {e}"
            raise TransportError(msg, retryable=isinstance(e, httpx.TransportError)) from e
        try:
            data = self._read_capped(response, step, url, max_bytes, deadline)
            cookie = _session_cookie(response, self._limits)
        finally:
            response.close()
        return HttpAnswer(response.status_code, data, cookie)

    def _read_capped(self, response: httpx.Response, step: Step, url: str, max_bytes: int, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        # SECURITY: refuse a declared oversize answer before reading any of it.
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            msg = f"KBS {step} {url}: answer of {int(declared)} bytes is larger than the limit of {max_bytes}"
            raise KbsProtocolError(msg, step=str(step))
        chunks: list[bytes] = []
        received = 0
        try:
            for chunk in response.iter_bytes(_CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    msg = f"KBS {step} {url}: answer is larger than the limit of {max_bytes} bytes"
                    raise KbsProtocolError(msg, step=str(step))
                if time.monotonic() > deadline:
                    msg = f"KBS {step} {url}: answer not complete within {self._limits.kbs_request_deadline_s} s"
                    raise TransportError(msg, retryable=True)
                chunks.append(chunk)
        except httpx.TimeoutException as e:
            msg = f"KBS {step} {url}: timed out reading the answer"
            raise TransportError(msg, retryable=True) from e
        except httpx.HTTPError as e:
            msg = f"KBS {step} {url}: reading the answer failed: {type(e).__name__}: {e}"
            raise TransportError(msg, retryable=True) from e
        return b"".join(chunks)
