"""``kbs-session-id`` sessions (kbs-protocol.md §1.2): ``Authed{tee, nonce}`` -> ``Attested{token}``.

Invariants:
    * A session id is 32 lowercase hex characters from the OS RNG (UUIDv4 "simple" form, as Trustee).
    * An expired session is never returned; it is deleted when read and by :meth:`SessionStore.sweep`.
    * Thread-safe: one lock around the table; at most ``Limits.devkbs_max_sessions`` sessions (the oldest is
      dropped first), so a flood of ``/auth`` calls cannot grow memory without bound.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from cocoguest.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class Session:
    """One session. ``token`` is set once the session is attested."""

    id: str
    tee: str
    nonce: str
    expires_at: float
    token: str | None = None


class SessionStore:
    """All live sessions."""

    def __init__(
        self, lifetime_s: float, *, clock: Callable[[], float] = time.time, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        """An empty store; sessions live ``lifetime_s`` seconds from ``/auth``."""
        self._lifetime_s = lifetime_s
        self._clock = clock
        self._max = limits.devkbs_max_sessions
        self._lock = threading.Lock()
        self._table: OrderedDict[str, Session] = OrderedDict()

    def create(self, tee: str, nonce: str) -> Session:
        """A new ``Authed`` session."""
        session = Session(uuid.uuid4().hex, tee, nonce, self._clock() + self._lifetime_s)
        with self._lock:
            while len(self._table) >= self._max:
                self._table.popitem(last=False)
            self._table[session.id] = session
        return session

    def get(self, untrusted_id: str) -> Session | None:
        """The live session ``untrusted_id``, or ``None`` (unknown or expired; an expired one is deleted)."""
        with self._lock:
            session = self._table.get(untrusted_id)
            if session is None:
                return None
            if session.expires_at <= self._clock():
                del self._table[untrusted_id]
                return None
            return session

    def attested(self, session: Session, token: str) -> Session:
        """Mark ``session`` attested with ``token`` (same id and expiry)."""
        updated = replace(session, token=token)
        with self._lock:
            if session.id in self._table:
                self._table[session.id] = updated
        return updated

    def sweep(self) -> int:
        """Delete every expired session; returns how many."""
        now = self._clock()
        with self._lock:
            dead = [sid for sid, s in self._table.items() if s.expires_at <= now]
            for sid in dead:
                del self._table[sid]
        return len(dead)

    def __len__(self) -> int:
        """Live and not yet swept sessions."""
        with self._lock:
            return len(self._table)
