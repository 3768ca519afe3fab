"""Registry authentication: ``WWW-Authenticate`` challenges, Bearer tokens and Basic credentials.

Implements the distribution token protocol (docker/distribution ``docs/spec/auth/token.md`` and
``oauth.md``): on a ``401`` the registry names a token ``realm``, ``service`` and ``scope``; the client asks the
realm for a token (``GET`` with optional Basic credentials, or ``POST`` of an identity/refresh token) and
retries with ``Authorization: Bearer``. ``Basic`` challenges are answered with the credentials directly.

Invariants:
    * Tokens are cached per (realm, service, scopes, account) and reused until shortly before they expire.
    * Token responses are size-capped and UNTRUSTED: only a string token and a numeric lifetime are taken.
    * SECURITY: credentials are never sent over plain HTTP to a token realm when the registry itself was
      reached over HTTPS (verified or not): a downgrade would leak them. The token request is refused with an
      error rather than sent anonymously, so that the user learns why instead of getting a confusing 401.
      Only a registry reached over plain HTTP (explicitly insecure) may point to a plain-HTTP realm.
    * Credentials sent to a realm on another host than the registry are allowed (Docker and containers/image
      do the same) but logged as a warning once per (registry, realm host).
    * A failed authentication WITH credentials is a clear, non-retryable error naming the user, never a
      silent fallback to anonymous access.
    * Token answers are read with :func:`http_body.read_body`: ``Accept-Encoding: identity``, capped raw and
      decoded at ``limits.registry_token_max_bytes``, under ``limits.registry_request_deadline_s``.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import httpx

from cocoguest.errors import HttpStatusError, ProtocolError, TransportError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.registry.http import (
    RetryBudget,
    RetryPolicy,
    is_retryable_status,
    map_http_error,
    parse_retry_after,
    retry_call,
)
from cocoguest.registry.http_body import Deadline, read_body
from cocoguest.registry.http_deadline import DEADLINE_EXTENSION
from cocoguest.registry.types import Credentials

_logger = logging.getLogger(__name__)

OAUTH_CLIENT_ID: Final = "cocoguest"
"""``client_id`` sent with OAuth2 refresh-token requests (oauth.md requires one)."""

_TOKEN68_OR_PARAM: Final = re.compile(
    r"""\s*(?P<key>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,]*))\s*"""
)
_SCHEME: Final = re.compile(r"\s*(?P<scheme>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?:\s+|$|(?=,))")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a lower-case scheme and its parameters (lower-case keys)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        """The ``realm`` parameter ("" if absent)."""
        return self.params.get("realm", "")


def parse_www_authenticate(untrusted_values: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235 §4.1) into challenges, in order.

    Malformed parts are skipped rather than raised: the caller decides what to do without a usable challenge.
    """
    challenges: list[Challenge] = []
    for value in untrusted_values:
        pos = 0
        current: Challenge | None = None
        while pos < len(value):
            if value[pos] in ", \t":
                pos += 1
                continue
            param = _TOKEN68_OR_PARAM.match(value, pos)
            if param is not None and current is not None:
                quoted = param.group("quoted")
                text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else param.group("token") or ""
                current.params[param.group("key").lower()] = text
                pos = param.end()
                continue
            scheme = _SCHEME.match(value, pos)
            if scheme is None:
                break  # garbage: stop parsing this header value
            current = Challenge(scheme.group("scheme").lower())
            challenges.append(current)
            pos = scheme.end()
    return challenges


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer preferred over Basic (as containers/image); others are unsupported."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def basic_authorization(credentials: Credentials) -> str:
    """``Basic base64(user:password)``."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class _CachedToken:
    token: str
    expires_at: float  # time.monotonic()


class TokenAuthenticator:
    """Answers registry challenges for one registry host and one set of credentials; caches tokens.

    Thread-safe: several layer threads may share one authenticator.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        host: str,
        credentials: Credentials | None,
        retry: RetryPolicy,
        user_agent: str,
        allow_insecure_realm: bool,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits = DEFAULT_LIMITS,
        budget: RetryBudget | None = None,
        registry_scheme: Callable[[], str] | None = None,
    ) -> None:
        """Create an authenticator.

        Args:
            client: the HTTP client used for token requests.
            host: the registry host (for messages).
            credentials: username/password or identity token; ``None`` = anonymous.
            retry: retry policy for token requests.
            user_agent: ``User-Agent`` header value.
            allow_insecure_realm: whether credentials may go to an ``http://`` realm (the registry itself is
                insecure); even then never when the registry was reached over HTTPS (``registry_scheme``).
            clock: monotonic clock (tests).
            limits: token answer size, request deadline, token lifetime and renewal margin.
            budget: the session's retry budget.
            registry_scheme: the scheme the registry was reached with (``None``: unknown, treated as https).
        """
        self._client = client
        self._host = host
        self._credentials = credentials if credentials and _has_secret(credentials) else None
        self._retry = retry
        self._user_agent = user_agent
        self._allow_insecure_realm = allow_insecure_realm
        self._clock = clock
        self._limits = limits
        self._budget = budget
        self._registry_scheme = registry_scheme
        self._warned_realm_hosts: set[str] = set()
        self._cache: dict[tuple[str, str, tuple[str, ...], str], _CachedToken] = {}
        self._lock = threading.Lock()
        self.token_requests = 0
        """Token requests made (for tests and diagnostics)."""

    @property
    def has_credentials(self) -> bool:
        """Whether credentials were given."""
        return self._credentials is not None

    @property
    def account(self) -> str:
        """The user name for messages ("" when anonymous or identity token only)."""
        return self._credentials.username if self._credentials else ""

    def authorization(self, challenge: Challenge, scopes: tuple[str, ...], *, refresh: bool = False) -> str | None:
        """The ``Authorization`` header value answering ``challenge`` for ``scopes``; ``None`` = send none.

        Args:
            challenge: the registry's challenge.
            scopes: token scopes (``repository:NAME:ACTIONS``).
            refresh: ignore a cached token (the registry refused it).

        Raises:
            HttpStatusError: the token server refused (401/403) or failed.
            TransportError: the token server cannot be reached.
            ProtocolError: the token server's answer is malformed.
        """
        if challenge.scheme == "basic":
            if self._credentials is None or not self._credentials.username:
                return None
            return basic_authorization(self._credentials)
        if challenge.scheme != "bearer":  # pragma: no cover — defensive: pick_challenge filters schemes
            return None
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            msg = f"registry {self._host}: token realm {realm!r} is not an http(s) URL"
            raise ProtocolError(msg)
        service = challenge.params.get("service", "")
        key = (realm, service, scopes, self.account)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and not refresh and cached.expires_at > self._clock():
                return f"Bearer {cached.token}"
            token, lifetime = self._fetch_token(realm, service, scopes)
            self._cache[key] = _CachedToken(
                token, self._clock() + max(0.0, lifetime - self._limits.registry_token_expiry_margin_s)
            )
            return f"Bearer {token}"

    # --- token requests -------------------------------------------------------------------------------

    def _check_realm(self, realm: str) -> None:
        """Refuse or warn about where credentials would go (see the module invariants)."""
        if self._credentials is None:
            return
        registry_scheme = self._registry_scheme() if self._registry_scheme is not None else "https"
        if realm.startswith("http://") and (registry_scheme == "https" or not self._allow_insecure_realm):
            # SECURITY: do not send a password or refresh token in clear text to a realm that a registry reached
            # over TLS pointed us to (a compromised or misconfigured registry, or a MITM of the 401, could
            # harvest it).
            why = "the registry was reached over HTTPS" if registry_scheme == "https" else "it is not insecure"
            msg = (
                f"registry {self._host}: refusing to send credentials to the plain-HTTP token realm "
                f"{realm[:200]} ({why})"
            )
            raise TransportError(msg, retryable=False)
        realm_host = httpx.URL(realm).host
        registry_host = httpx.URL(f"https://{self._host}/").host
        if realm_host != registry_host and realm_host not in self._warned_realm_hosts:
            self._warned_realm_hosts.add(realm_host)
            _logger.warning(
                "registry %s: sending credentials to the token realm on another host, %s", self._host, realm_host
            )

    def _fetch_token(self, realm: str, service: str, scopes: tuple[str, ...]) -> tuple[str, float]:
        creds = self._credentials
        self._check_realm(realm)

        def attempt() -> tuple[str, float]:
            self.token_requests += 1
            if creds is not None and creds.identity_token:
                return self._token_exchange(realm, service, scopes, creds)
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", scope) for scope in scopes)
            headers = {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
            if creds is not None:
                params.append(("account", creds.username))
                headers["Authorization"] = basic_authorization(creds)
            request = self._client.build_request("GET", realm, params=tuple(params), headers=headers)
            return self._send_token_request(request, realm)

        try:
            what = f"registry {self._host}: token request to {realm[:200]}"
            return retry_call(attempt, policy=self._retry, what=what, budget=self._budget)
        except HttpStatusError as e:
            if not e.retryable:
                raise
            # Retries are spent here: callers must not multiply them.
            raise HttpStatusError(str(e), e.status, retryable=False) from e
        except TransportError as e:
            if not e.retryable:
                raise
            raise TransportError(str(e), retryable=False) from e

    def _token_exchange(
        self, realm: str, service: str, scopes: tuple[str, ...], creds: Credentials
    ) -> tuple[str, float]:
        # oauth.md: refresh-token grant by POST; scopes are space-separated.
        form = {
            "grant_type": "refresh_token",
            "refresh_token": creds.identity_token,
            "service": service,
            "client_id": OAUTH_CLIENT_ID,
            "scope": " ".join(scopes),
        }
        request = self._client.build_request(
            "POST", realm, data=form, headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        )
        return self._send_token_request(request, realm)

    def _send_token_request(self, request: httpx.Request, realm: str) -> tuple[str, float]:
        what = f"registry {self._host}: token request to {realm[:200]}"
        deadline = Deadline(self._limits.registry_request_deadline_s)
        request.extensions["timeout"] = deadline.timeout(self._client.timeout).as_dict()
        # SECURITY: also bounds a token server dripping its headers (registry.http_deadline).
        request.extensions[DEADLINE_EXTENSION] = deadline
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            deadline.check(what)
            raise map_http_error(e, what=what, host=request.url.host) from e
        try:
            status = response.status_code
            if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
                if self._credentials is not None:
                    who = self.account or "the identity token"
                    msg = f"registry {self._host}: authentication failed for {who}"
                else:
                    msg = f"registry {self._host}: token server {realm} refused anonymous access ({status})"
                raise HttpStatusError(msg, status)
            if status != httpx.codes.OK:
                msg = f"{what}: HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise HttpStatusError(msg, status, retryable=is_retryable_status(status), retry_after_s=retry_after)
            body = read_body(response, cap=self._limits.registry_token_max_bytes, what=what, deadline=deadline)
        except httpx.HTTPError as e:
            deadline.check(what)
            raise map_http_error(e, what=what, host=request.url.host) from e
        finally:
            response.close()
        return _parse_token_response(body, what, self._limits)


def _has_secret(credentials: Credentials) -> bool:
    return bool(credentials.username or credentials.password or credentials.identity_token)


def _parse_token_response(untrusted_body: bytes, what: str, limits: Limits) -> tuple[str, float]:
    """(token, lifetime in seconds) from a token server's JSON (token.md: ``token`` or ``access_token``).

    A cached token is renewed ``limits.registry_token_expiry_margin_s`` before it expires (clock skew,
    latency); without ``expires_in`` it lives ``limits.registry_default_token_lifetime_s`` (token.md:
    "When omitted, [expires_in] defaults to 60 seconds").
    """
    untrusted = load_object(untrusted_body, f"{what}: token response", limits=limits)
    token = untrusted.get("token") or untrusted.get("access_token")
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        msg = f"{what}: token response has no usable token"
        raise ProtocolError(msg)
    expires_in = untrusted.get("expires_in")
    lifetime = limits.registry_default_token_lifetime_s
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = float(expires_in)
    return token, lifetime
