"""Directory metadata applied after a tree is written, kept in bounded memory.

A directory's mode, owner and mtime are set only after all its children exist (creating a child changes the
directory's mtime; a read-only mode would forbid creating them). Unpacking or merging a tree therefore
remembers one record per directory until the end. :class:`DirMetaLog` keeps up to ``memory_entries`` records
in a dict; beyond that it moves them to a temporary SQLite file beside the tree (never inside it), so that a
layer of a million directories costs a few MB of memory instead of hundreds.

Invariants:
    * Memory is bounded by ``memory_entries`` records plus SQLite's page cache (about 1 MiB).
    * The latest :meth:`DirMetaLog.set` for a path wins; :meth:`DirMetaLog.discard` forgets it.
    * :meth:`DirMetaLog.deepest_first` yields each remembered path once, deepest first (children before
      their parents, so that a parent's restrictive mode is set after its children were opened).
    * The spill file lives in ``spill_dir`` (which the caller owns and removes on failure) and is deleted by
      :meth:`DirMetaLog.close`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from cocoguest.image.fs.safe_ops import Components

SPILL_PREFIX: Final = ".cocoguest-dirmeta-"
_SPILL_CACHE_KIB: Final = 1024
"""SQLite page cache of the spill file (KiB)."""


class DirMeta(NamedTuple):
    """What is applied to a directory at the end: mode (with special bits), owner (None: keep), mtime (None: keep)."""

    mode: int
    uid: int | None
    gid: int | None
    mtime_ns: int | None


class DirMetaLog:
    """Directory metadata records, in memory up to a bound and spilled to a temporary SQLite file beyond it."""

    def __init__(self, spill_dir: Path, *, memory_entries: int) -> None:
        """Remember records in memory; spill beyond ``memory_entries`` to a new file in ``spill_dir``."""
        self._spill_dir = spill_dir
        self._memory_entries = max(1, memory_entries)
        self._pending: dict[Components, DirMeta] = {}
        self._spill_path: Path | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def spilled(self) -> bool:
        """Whether records were moved to the spill file."""
        return self._conn is not None

    def set(self, components: Components, meta: DirMeta) -> None:
        """Remember ``meta`` for directory ``components`` (replacing an earlier record).

        Raises:
            OSError: the spill file cannot be written (``EIO``).
        """
        self._pending[components] = meta
        if len(self._pending) > self._memory_entries:
            self._flush()

    def discard(self, components: Components) -> None:
        """Forget the record of ``components`` (the directory was removed).

        Raises:
            OSError: the spill file cannot be written (``EIO``).
        """
        self._pending.pop(components, None)
        if self._conn is not None:
            with self._errors():
                self._conn.execute(
                    "DELETE FROM dirs WHERE depth = ? AND path = ?", (len(components), _encode(components))
                )

    def deepest_first(self) -> Iterator[tuple[Components, DirMeta]]:
        """Every record, deepest path first (one pass; do not ``set`` or ``discard`` meanwhile).

        Raises:
            OSError: the spill file cannot be read (``EIO``).
        """
        if self._conn is None:
            yield from sorted(self._pending.items(), key=lambda item: -len(item[0]))
            return
        self._flush()
        with self._errors():
            cursor = self._conn.execute("SELECT path, mode, uid, gid, mtime FROM dirs ORDER BY depth DESC, path")
            for path, mode, uid, gid, mtime in cursor:
                yield _decode(path), DirMeta(mode, uid, gid, mtime)

    def close(self) -> None:
        """Close and delete the spill file (idempotent)."""
        self._pending.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._spill_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._spill_path.unlink()
            self._spill_path = None

    def __enter__(self) -> DirMetaLog:
        """Use as a context manager that closes the log."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the log."""
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise OSError(errno.EIO, f"directory metadata spill file {self._spill_path}: {e}") from e

    def _open(self) -> sqlite3.Connection:
        self._spill_path = self._spill_dir / f"{SPILL_PREFIX}{uuid.uuid4().hex}.db"
        with self._errors():
            conn = sqlite3.connect(self._spill_path, isolation_level=None, check_same_thread=False)
            # A scratch file: no journal, no fsync; it is deleted when the work ends, or with its directory.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"PRAGMA cache_size = -{_SPILL_CACHE_KIB}")
            conn.execute("PRAGMA temp_store = FILE")
            conn.execute(
                "CREATE TABLE dirs (depth INTEGER NOT NULL, path BLOB NOT NULL, mode INTEGER NOT NULL,"
                " uid INTEGER, gid INTEGER, mtime INTEGER, PRIMARY KEY (depth, path)) WITHOUT ROWID"
            )
        return conn

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._conn is None:
            self._conn = self._open()
        rows = [(len(c), _encode(c), m.mode, m.uid, m.gid, m.mtime_ns) for c, m in self._pending.items()]
        with self._errors():
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
        self._pending.clear()


def _encode(components: Components) -> bytes:
    # Components never contain "/" (they were split on it), so the join is unambiguous.
    return os.fsencode("/".join(components))


def _decode(path: bytes) -> Components:
    return tuple(os.fsdecode(path).split("/")) if path else ()
