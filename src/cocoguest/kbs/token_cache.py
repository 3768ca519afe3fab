"""The token cache: one attestation per token lifetime (beyond upstream, which attests on every GetToken).

Rules:
    * :meth:`TokenCache.get` returns the cached credentials while ``now < exp - margin``
      (``Limits.kbs_token_refresh_margin_s``); otherwise it fetches new ones (an RCAR handshake, or the AA's
      token in passport mode).
    * A token without ``exp``, or one that is already inside the margin when it arrives, is handed to the one
      caller that fetched it and not cached (the next call fetches again).
    * :meth:`TokenCache.invalidate` drops the credentials a KBS refused (a 401) only if they are still the
      cached ones, so N concurrent requests refused with the same stale token cause one new fetch, not N.

Invariants:
    * One fetch in flight: fetching happens under a lock, and callers waiting on it get its result from the
      cache. The lock is a :class:`threading.Lock`, so sync callers in threads and async callers (through
      ``asyncio.to_thread``) share it.
    * A failed fetch caches nothing and raises to the caller that triggered it; the next caller tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cocoguest.kbs.protocol import AttestationToken
from cocoguest.kbs.tee_key import TeeKeyPair

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class Credentials:
    """A token and the TEE key pair the KBS encrypts resources to for that token."""

    token: AttestationToken
    tee_key: TeeKeyPair


class TokenCache:
    """Caches :class:`Credentials` until shortly before their token expires."""

    __slots__ = ("_clock", "_current", "_fetch", "_lock", "_margin_s", "fetches")

    def __init__(self, fetch: Callable[[], Credentials], *, margin_s: float, clock: Callable[[], float]) -> None:
        """Create an empty cache.

        Args:
            fetch: obtains new credentials (runs an attestation); called under the cache's lock.
            margin_s: re-fetch this long before ``exp``.
            clock: seconds since the epoch (``time.time``; tests pass a fake clock).
        """
        self._fetch = fetch
        self._margin_s = margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self.fetches = 0
        """How many times ``fetch`` was called (successful or not)."""

    def _usable(self, credentials: Credentials) -> bool:
        exp = credentials.token.untrusted_exp
        return exp is not None and self._clock() < exp - self._margin_s

    def get(self) -> Credentials:
        """Cached credentials if still fresh, else new ones from ``fetch``.

        Raises:
            Whatever ``fetch`` raises (nothing is cached then).
        """
        with self._lock:
            current = self._current
            if current is not None and self._usable(current):
                return current
            return self._refetch()

    def refresh(self) -> Credentials:
        """New credentials from ``fetch``, whatever the cache holds (``kbs attest``).

        Raises:
            Whatever ``fetch`` raises (the cache is then empty).
        """
        with self._lock:
            return self._refetch()

    def _refetch(self) -> Credentials:
        self._current = None
        self.fetches += 1
        fresh = self._fetch()
        if self._usable(fresh):
            self._current = fresh
        else:
            _logger.warning(
                "KBS token has no exp or expires within %s s (exp=%s); it is used once and not cached",
                self._margin_s,
                fresh.token.untrusted_exp,
            )
        return fresh

    def invalidate(self, stale: Credentials) -> None:
        """Forget ``stale`` if it is still the cached entry (a KBS refused its token)."""
        with self._lock:
            if self._current is stale:
                self._current = None

    def peek(self) -> Credentials | None:
        """The cached credentials, fresh or not, without fetching."""
        with self._lock:
            return self._current
