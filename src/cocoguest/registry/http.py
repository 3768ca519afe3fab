"""HTTP plumbing of the registry client: client factory, retry policy with backoff, error mapping.

Invariants:
    * A client is built only from a :class:`RegistryEndpoint` and an explicit ``env`` mapping: library code
      never reads ``os.environ`` (``trust_env=False``); proxies come from ``HTTP(S)_PROXY``/``ALL_PROXY``/
      ``NO_PROXY`` in ``env`` only.
    * TLS verification is on unless the endpoint is ``insecure``; an insecure endpoint logs a warning every
      time a client is made for it (SECURITY).
    * Every transport of a client (direct and proxied) is a :class:`DeadlineTransport`: a request carrying a
      ``Deadline`` (``http_deadline.DEADLINE_EXTENSION``) cannot be held past it while its headers drip in.
    * Clients never follow redirects by themselves: the registry client follows them so that it can drop
      credentials on cross-origin hops.
    * :func:`retry_call` retries only what is safe to retry (connection failures, 5xx except 501, 429) and
      never a TLS verification failure or a :class:`VerificationError`; delays grow exponentially with
      jitter and are capped.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx

from cocoguest.errors import HttpStatusError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.registry.http_deadline import DeadlineTransport
from cocoguest.registry.types import RegistryEndpoint, TlsSettings

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried (:meth:`from_limits` builds it from a caller's Limits)."""

    attempts: int
    """Tries, the first included (>= 1; ``registry_retry_attempts``)."""
    base_delay_s: float
    """First backoff delay, doubled on each further attempt (``registry_retry_base_delay_s``)."""
    max_delay_s: float
    """Cap of one backoff delay (``registry_retry_max_delay_s``)."""
    retry_after_cap_s: float
    """Cap of a server's ``Retry-After``: no hour-long parking by a hostile server (``registry_retry_after_cap_s``)."""
    blob_resumes: int
    """Range resumptions of one blob download (``registry_blob_resumes``)."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.blob_resumes < 0:
            msg = "RetryPolicy: attempts must be >= 1 and blob_resumes >= 0"
            raise ValueError(msg)

    @classmethod
    def from_limits(cls, limits: Limits) -> RetryPolicy:
        """The policy a caller's :class:`Limits` describe."""
        return cls(
            attempts=limits.registry_retry_attempts,
            base_delay_s=limits.registry_retry_base_delay_s,
            max_delay_s=limits.registry_retry_max_delay_s,
            retry_after_cap_s=limits.registry_retry_after_cap_s,
            blob_resumes=limits.registry_blob_resumes,
        )

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1).

        A server's ``Retry-After`` is honoured up to :attr:`retry_after_cap_s`; otherwise exponential backoff
        with full jitter in [50 %, 100 %] of the capped exponential value.
        """
        if retry_after_s is not None:
            return max(0.0, min(retry_after_s, self.retry_after_cap_s))
        ceiling = min(self.max_delay_s, self.base_delay_s * float(2 ** (attempt - 1)))
        return float(ceiling * (0.5 + random.random() / 2))  # noqa: S311  (jitter, not crypto)


DEFAULT_RETRY = RetryPolicy.from_limits(DEFAULT_LIMITS)
"""The retry policy of the default limits, for callers that hold no :class:`Limits` (prefer :meth:`from_limits`)."""


class RetryBudget:
    """Total seconds of backoff and ``Retry-After`` sleeps one registry session may spend. Thread-safe.

    SECURITY: without it, a registry answering ``503 Retry-After: 100000`` to every request holds a pull for
    attempts x the Retry-After cap per request; with it, the sum over the whole session is bounded.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._lock = threading.Lock()

    def take(self, delay: float) -> bool:
        """Reserve ``delay`` seconds of sleep; False (nothing reserved) if that would exceed the budget."""
        with self._lock:
            if self._spent + delay > self.seconds:
                return False
            self._spent += delay
            return True


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_retryable_status(status: int) -> bool:
    """5xx except 501 (Not Implemented is permanent), and 429."""
    return status == httpx.codes.TOO_MANY_REQUESTS or (500 <= status <= 599 and status != 501)


# --- TLS ---------------------------------------------------------------------------------------------


def ssl_context(tls: TlsSettings, *, insecure: bool) -> ssl.SSLContext:
    """The TLS context for one registry.

    Extra CA files are added to the system roots (certs.d semantics); a client certificate pair enables
    mutual TLS.

    Raises:
        TransportError: a CA or client certificate file cannot be loaded.
    """
    ctx = ssl.create_default_context()
    try:
        for ca in tls.ca_files:
            ctx.load_verify_locations(cafile=str(ca))
        if tls.client_cert is not None:
            cert, key = tls.client_cert
            ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        msg = f"cannot load TLS certificates ({e})"
        raise TransportError(msg) from e
    if insecure or not tls.verify:
        # SECURITY: certificate verification off: only on explicit insecure / --tls-verify=false (warned).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --- proxies -----------------------------------------------------------------------------------------


def _env_get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name.upper()) or env.get(name.lower())
    return value.strip() if value and value.strip() else None


def _no_proxy_patterns(no_proxy: str) -> list[str] | None:
    """httpx mount patterns that bypass the proxy; ``None`` means "no proxy for anything" (``*``)."""
    patterns: list[str] = []
    for raw in no_proxy.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry == "*":
            return None
        if "://" in entry:
            patterns.append(entry)
            continue
        entry = entry.lstrip(".")
        try:
            address = ipaddress.ip_address(entry.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            patterns.append(f"all://[{address}]" if address.version == 6 else f"all://{address}")
        elif "/" in entry:
            # CIDR ranges are not expressible as httpx patterns (Go's httpproxy supports them).
            _logger.debug("NO_PROXY entry %r (CIDR) is not supported and ignored", entry)
        else:
            # "*name" matches name and its subdomains; an optional ":port" restricts to that port.
            patterns.append(f"all://*{entry}")
    return patterns


def proxy_mounts(env: Mapping[str, str], verify: ssl.SSLContext) -> dict[str, httpx.BaseTransport | None]:
    """httpx ``mounts`` implementing ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` from ``env``.

    Both upper- and lower-case names are honoured (upper first), as Go's ``httpproxy``.
    """
    by_scheme: dict[str, str] = {}
    all_proxy = _env_get(env, "ALL_PROXY")
    for scheme, var in (("http", "HTTP_PROXY"), ("https", "HTTPS_PROXY")):
        url = _env_get(env, var) or all_proxy
        if url:
            by_scheme[scheme] = url if "://" in url else f"http://{url}"
    if not by_scheme:
        return {}
    no_proxy = _env_get(env, "NO_PROXY")
    bypass = _no_proxy_patterns(no_proxy) if no_proxy else []
    if bypass is None:
        return {}
    mounts: dict[str, httpx.BaseTransport | None] = {
        f"{scheme}://": DeadlineTransport(verify=verify, proxy=url) for scheme, url in by_scheme.items()
    }
    for pattern in bypass:
        # None = "use the client's default (direct) transport" for matching hosts.
        mounts[pattern] = None
    return mounts


def make_client(endpoint: RegistryEndpoint, *, limits: Limits, env: Mapping[str, str] | None = None) -> httpx.Client:
    """An HTTP client for one registry endpoint.

    Args:
        endpoint: the registry host and its TLS settings.
        limits: the caller's limits (connect and read timeouts are taken from them).
        env: the process environment as passed down by the CLI (proxy variables only); ``None`` = no proxy.

    Raises:
        TransportError: the endpoint's certificates cannot be loaded.
    """
    insecure = endpoint.insecure or not endpoint.tls.verify
    if insecure:
        # SECURITY: warn on every use of an insecure endpoint (DESIGN.md §5).
        _logger.warning("registry %s: TLS certificate verification is disabled (insecure registry)", endpoint.host)
    verify = ssl_context(endpoint.tls, insecure=insecure)
    timeout = httpx.Timeout(limits.registry_read_timeout_s, connect=limits.registry_connect_timeout_s)
    return httpx.Client(
        verify=verify,
        timeout=timeout,
        # SECURITY: no compressed answers unless a server sends them unasked (then http_body bounds them).
        headers={"Accept-Encoding": "identity"},
        follow_redirects=False,
        trust_env=False,
        # SECURITY: a request's Deadline also bounds its connect, TLS and dripped headers (http_deadline).
        transport=DeadlineTransport(verify=verify),
        mounts=proxy_mounts(env or {}, verify),
    )


# --- error mapping -----------------------------------------------------------------------------------


def _tls_verify_failure(error: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        current = current.__cause__ or current.__context__
    return None


def is_tls_failure(error: BaseException) -> bool:
    """Whether an httpx error came from the TLS layer (handshake or plain-HTTP answer to TLS)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return True
        current = current.__cause__ or current.__context__
    text = str(error).lower()
    return "ssl" in text or "tls" in text or "wrong version number" in text


def map_http_error(error: httpx.HTTPError, *, what: str, host: str) -> TransportError:
    """A :class:`TransportError` for an httpx exception, naming ``what`` (image, blob) and the host.

    TLS verification failures are not retryable and carry a hint naming where a CA can be added (``--cert-dir``
    or certs.d for the CLI, ``[image] extra_root_certificates`` for the CDH) and how a test registry is trusted
    without one; connection and read failures are retryable.
    """
    verify_failure = _tls_verify_failure(error)
    if verify_failure is not None:
        reason = verify_failure.verify_message or str(verify_failure)
        msg = (
            f"{what}: TLS certificate of registry {host} not trusted ({reason}); "
            "add its CA (--cert-dir or certs.d; the CDH's [image] extra_root_certificates), or, for a test "
            "registry, use --tls-verify=false or mark it insecure in registries.conf"
        )
        return TransportError(msg, retryable=False)
    if isinstance(error, httpx.TimeoutException):
        return TransportError(f"{what}: registry {host} timed out ({type(error).__name__})", retryable=True)
    if isinstance(error, httpx.ConnectError) and is_tls_failure(error):
        # A TLS handshake failure (e.g. a plain-HTTP server) does not go away by retrying.
        msg = (
            f"{what}: TLS handshake with registry {host} failed ({error}); "
            "if it serves plain HTTP, use --tls-verify=false or mark it insecure in registries.conf"
        )
        return TransportError(msg, retryable=False)
    if isinstance(error, httpx.TransportError):
        detail = str(error) or type(error).__name__
        return TransportError(f"{what}: cannot reach registry {host}: {detail}", retryable=True)
    return TransportError(f"{what}: HTTP error talking to registry {host}: {error}", retryable=False)


_T = TypeVar("_T")


def retry_call(
    call: Callable[[], _T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    budget: RetryBudget | None = None,
) -> _T:
    """Run ``call`` until it succeeds or fails permanently.

    ``call`` raises :class:`TransportError` (``retryable`` says whether another try may help); the
    ``retry_after_s`` of an :class:`HttpStatusError` is honoured. Any other exception propagates at once.
    With a ``budget``, a sleep that would exceed it ends the retries at once with an error naming the limit.

    Raises:
        TransportError: the last error once attempts are exhausted or the error is permanent.
    """
    attempt = 1
    while True:
        try:
            return call()
        except TransportError as e:
            if not e.retryable or attempt >= policy.attempts:
                raise
            retry_after = e.retry_after_s if isinstance(e, HttpStatusError) else None
            if retry_after is not None and retry_after > policy.retry_after_cap_s:
                # A server asking for more than we would wait will not be ready after our capped wait either.
                msg = (
                    f"{what}: the registry asks to retry after {retry_after:.0f} s, longer than the "
                    f"{policy.retry_after_cap_s:g} s we wait (registry_retry_after_cap_s); last error: {e}"
                )
                raise TransportError(msg, retryable=False) from e
            delay = policy.delay(attempt, retry_after)
            if budget is not None and not budget.take(delay):
                msg = (
                    f"{what}: giving up after {attempt} attempt(s): waiting {delay:.1f} s more would exceed "
                    f"the retry budget of {budget.seconds:g} s (registry_retry_budget_s); last error: {e}"
                )
                raise TransportError(msg, retryable=False) from e
            _logger.info("%s: %s; retrying in %.1f s (attempt %d of %d)", what, e, delay, attempt + 1, policy.attempts)
            sleep(delay)
            attempt += 1
