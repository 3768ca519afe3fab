"""The store's SQLite metadata: schema, migrations and queries.

Tables (schema version 2):

    ``schema_version``     one row: the version the DB was migrated to
    ``layers``             committed layers by diff_id (uncompressed digest) and size
    ``verified_blobs``     (v2) which blob source (digest, size, media type, key check) was verified to unpack to
                           which diff_id: the only grounds for reusing a committed layer
    ``images``             one row per manifest digest: config digest, creation time, policy decision, platform
    ``image_layers``       which image uses which layer, in order (lowest first), with the blob digest
    ``image_references``   reference string -> manifest digest (a reference names exactly one image)
    ``bundle_leases``      (version 2) which layers a bundle's rootfs uses, per lease (one per pull), until
                           ``bundle rm``; prune never deletes a leased layer

Invariants:
    * Every write runs in one ``BEGIN IMMEDIATE`` transaction, so concurrent writers (threads of one process
      share a connection behind a mutex; other processes use their own) serialise on SQLite's write lock and
      a reader never sees half an image.
    * ``image_layers.diff_id`` references ``layers``: an image row never names a layer the DB does not have.
    * Migrations run in order from the stored version to :data:`SCHEMA_VERSION`, each in the same transaction
      as its version bump; a DB newer than this code is refused, never modified.
    * This module does no filesystem work besides the DB file: the layer directories are ``layers.py``'s.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, ResourceNotFoundError, TransportError, UnsupportedError
from cocoguest.image.store.sources import BlobSource
from cocoguest.limits import DEFAULT_LIMITS

"""How long a DB operation waits for another process's write lock (belongs in ``Limits``)."""

MIN_DIGEST_PREFIX: Final = 12
"""Fewest hex digits that select an image by manifest digest prefix (Docker's short ID length)."""

_HEX_PREFIX_RE: Final = re.compile(r"[0-9a-f]+")


class MetadataCorruptError(TransportError):
    """The metadata DB file is not a usable SQLite DB (garbage, truncated, malformed pages).

    The message names the file and says how to recover (``cocoguest fsck --repair``).
    """

    def __init__(self, path: Path, detail: str) -> None:
        """Name the corrupt file ``path``; ``detail`` is what SQLite said."""
        super().__init__(
            f"metadata DB {path} is corrupt ({detail}); "
            f"run 'cocoguest fsck --repair --work-dir {path.parent}' to rebuild it from the layers"
        )
        self.path = path


_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


@dataclass(frozen=True, slots=True)
class Migration:
    """The statements that bring the schema from ``version - 1`` to ``version``."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        (
            """CREATE TABLE layers (
                diff_id   TEXT PRIMARY KEY,
                size      INTEGER NOT NULL CHECK (size >= 0),
                committed REAL NOT NULL
            )""",
            """CREATE TABLE compressed_layers (
                compressed_digest TEXT PRIMARY KEY,
                diff_id           TEXT NOT NULL
            )""",
            "CREATE INDEX compressed_layers_diff_id ON compressed_layers (diff_id)",
            """CREATE TABLE images (
                manifest_digest TEXT PRIMARY KEY,
                config_digest   TEXT NOT NULL,
                created         REAL NOT NULL,
                policy          TEXT NOT NULL,
                platform        TEXT NOT NULL
            )""",
            """CREATE TABLE image_layers (
                manifest_digest   TEXT NOT NULL REFERENCES images (manifest_digest) ON DELETE CASCADE,
                position          INTEGER NOT NULL,
                diff_id           TEXT NOT NULL REFERENCES layers (diff_id),
                compressed_digest TEXT NOT NULL,
                PRIMARY KEY (manifest_digest, position)
            )""",
            "CREATE INDEX image_layers_diff_id ON image_layers (diff_id)",
            """CREATE TABLE image_references (
                reference       TEXT PRIMARY KEY,
                manifest_digest TEXT NOT NULL REFERENCES images (manifest_digest) ON DELETE CASCADE
            )""",
            "CREATE INDEX image_references_manifest ON image_references (manifest_digest)",
        ),
    ),
    Migration(
        2,
        (
            # SECURITY: v1 mapped a blob digest alone to a diff_id, without the media type or the key that
            # decoded it, so its rows cannot vouch for a reuse under the v2 rule: they are dropped (the next
            # pull of such a blob downloads and verifies it once more).
            "DROP TABLE compressed_layers",
            """CREATE TABLE verified_blobs (
                compressed_digest TEXT NOT NULL,
                size              INTEGER NOT NULL,
                media_type        TEXT NOT NULL,
                key_check         TEXT NOT NULL,
                diff_id           TEXT NOT NULL,
                PRIMARY KEY (compressed_digest, size, media_type, key_check)
            )""",
            "CREATE INDEX verified_blobs_diff_id ON verified_blobs (diff_id)",
        ),
    ),
    Migration(
        3,
        (
            """CREATE TABLE bundle_leases (
                lease_id TEXT NOT NULL,
                bundle   TEXT NOT NULL,
                diff_id  TEXT NOT NULL,
                created  REAL NOT NULL,
                PRIMARY KEY (lease_id, diff_id)
            )""",
            "CREATE INDEX bundle_leases_bundle ON bundle_leases (bundle)",
            "CREATE INDEX bundle_leases_diff_id ON bundle_leases (diff_id)",
        ),
    ),
)
"""Every schema change ever made, oldest first. Append only; never edit a released migration."""

SCHEMA_VERSION: Final = MIGRATIONS[-1].version
"""The version this code reads and writes."""


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store.

    Attributes:
        manifest_digest: digest of the (platform) manifest that was pulled.
        config_digest: digest of its config blob.
        references: the reference strings that name this image (sorted); empty for a dangling image.
        layers: diff_ids, lowest first.
        compressed_layers: the blob digests of the manifest's layers, same order as ``layers``.
        created: when the image was recorded (seconds since the epoch).
        policy: JSON text of the policy decision that admitted the image.
        platform: ``os/arch[/variant]`` of the manifest.
    """

    manifest_digest: Digest
    config_digest: Digest
    references: tuple[str, ...]
    layers: tuple[Digest, ...]
    compressed_layers: tuple[Digest, ...]
    created: float
    policy: str
    platform: str


@dataclass(frozen=True, slots=True)
class LayerRow:
    """A row of ``layers``."""

    diff_id: Digest
    size: int


_CONFIGURE_RETRY_S: Final = 0.01
"""Pause between attempts to configure a DB another process is switching to WAL."""


def _configure(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Set the connection's pragmas, retrying while another process holds the lock the WAL switch needs.

    Switching a new DB to WAL takes an exclusive lock and SQLite may report ``database is locked`` at once,
    without waiting for the busy timeout, when several processes create the store at the same moment.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # WAL: readers never block the writer; NORMAL sync keeps the DB consistent across a power loss
            # (the last transactions may be lost: repair() then finds directories without rows).
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() >= deadline:
                raise
            time.sleep(_CONFIGURE_RETRY_S)
        else:
            return


class MetadataDB:
    """One SQLite connection to ``metadata.db``, shared by the threads of a process behind a mutex."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Wrap an open connection; use :meth:`open`."""
        self._path = path
        self._conn = conn
        self._mutex = threading.RLock()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        busy_timeout_s: float = DEFAULT_LIMITS.store_db_busy_timeout_s,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> MetadataDB:
        """Open (creating if needed) the DB at ``path`` and migrate it to the newest schema.

        Args:
            path: the DB file.
            busy_timeout_s: how long to wait for another process's write lock.
            migrations: the schema history (tests pass a longer one to exercise the mechanism).

        Raises:
            UnsupportedError: the DB was written by a newer cocoguest (schema version too high).
            TransportError: the file cannot be opened or is not a usable SQLite DB.
        """
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False, cached_statements=64
            )
        except sqlite3.Error as e:
            msg = f"metadata DB {path}: cannot open: {e}"
            raise TransportError(msg) from e
        db = cls(path, conn)
        try:
            with db._errors("configure"):
                _configure(conn, busy_timeout_s)
            db._migrate(migrations)
        except BaseException:
            conn.close()
            raise
        return db

    @property
    def path(self) -> Path:
        """The DB file."""
        return self._path

    def close(self) -> None:
        """Close the connection."""
        with self._mutex:
            self._conn.close()

    # -- plumbing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) in _CORRUPT_CODES:
                raise MetadataCorruptError(self._path, f"{what}: {e}") from e
            msg = f"metadata DB {self._path}: {what}: {e}"
            raise TransportError(msg) from e

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on any exception.

        Raises:
            TransportError: SQLite failed (including a busy timeout).
        """
        with self._mutex, self._errors(what):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        with self._mutex, self._errors(what):
            self._conn.execute("BEGIN DEFERRED")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(migrations) + 1)):
            msg = f"migrations must be numbered 1..n in order, got {versions}"
            raise ValueError(msg)
        latest = versions[-1] if versions else 0
        with self.transaction("migrate schema") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version WHERE id = 0").fetchone()
            current = 0 if row is None else int(row[0])
            if current > latest:
                msg = (
                    f"metadata DB {self._path}: schema version {current} is newer than this cocoguest "
                    f"supports ({latest}); upgrade cocoguest or use another --work-dir"
                )
                raise UnsupportedError(msg)
            for migration in migrations[current:]:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (id, version) VALUES (0, ?)"
                    " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    (migration.version,),
                )

    def integrity_problems(self) -> list[str]:
        """What SQLite's integrity and foreign-key checks report; empty when the DB is sound."""
        with self._mutex, self._errors("check integrity"):
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
            problems = [str(r[0]) for r in rows if r[0] != "ok"]
            problems += [
                f"table {r[0]} row {r[1]} names a missing row of {r[2]}"
                for r in self._conn.execute("PRAGMA foreign_key_check").fetchall()
            ]
        return problems

    def schema_version(self) -> int:
        """The version recorded in the DB."""
        with self._read("read schema version") as conn:
            row = conn.execute("SELECT version FROM schema_version WHERE id = 0").fetchone()
        return 0 if row is None else int(row[0])

    # -- layers ---------------------------------------------------------------------------------------------

    def get_layer(self, diff_id: Digest) -> LayerRow | None:
        """The row of a committed layer, or None."""
        with self._read(f"read layer {diff_id}") as conn:
            row = conn.execute("SELECT size FROM layers WHERE diff_id = ?", (str(diff_id),)).fetchone()
        return None if row is None else LayerRow(diff_id, int(row[0]))

    def insert_layer(self, diff_id: Digest, size: int, committed: float, source: BlobSource | None = None) -> None:
        """Record a committed layer (replacing a stale row), and the verified source it came from, atomically."""
        with self.transaction(f"record layer {diff_id}") as conn:
            conn.execute(
                "INSERT INTO layers (diff_id, size, committed) VALUES (?, ?, ?)"
                " ON CONFLICT (diff_id) DO UPDATE SET size = excluded.size, committed = excluded.committed",
                (str(diff_id), size, committed),
            )
            if source is not None:
                self._put_verified(conn, source, diff_id)

    def layer_ids(self) -> list[Digest]:
        """Every committed layer's diff_id."""
        with self._read("list layers") as conn:
            rows = conn.execute("SELECT diff_id FROM layers ORDER BY diff_id").fetchall()
        return [Digest.parse(r[0]) for r in rows]

    def unused_layers(self) -> list[LayerRow]:
        """Layers no image uses."""
        with self._read("list unused layers") as conn:
            rows = conn.execute(
                "SELECT diff_id, size FROM layers"
                " WHERE diff_id NOT IN (SELECT diff_id FROM image_layers) ORDER BY diff_id"
            ).fetchall()
        return [LayerRow(Digest.parse(r[0]), int(r[1])) for r in rows]

    def delete_layer_if_unused(self, diff_id: Digest) -> bool:
        """Delete a layer row unless an image uses it; True if deleted."""
        key = str(diff_id)
        with self.transaction(f"delete layer {diff_id}") as conn:
            if conn.execute("SELECT 1 FROM image_layers WHERE diff_id = ? LIMIT 1", (key,)).fetchone():
                return False
            return conn.execute("DELETE FROM layers WHERE diff_id = ?", (key,)).rowcount > 0

    def delete_layer_and_users(self, diff_id: Digest) -> int:
        """Delete a layer row and every image that uses it (repair of a lost layer dir); returns images deleted."""
        key = str(diff_id)
        with self.transaction(f"forget layer {diff_id}") as conn:
            images = conn.execute(
                "DELETE FROM images WHERE manifest_digest IN"
                " (SELECT manifest_digest FROM image_layers WHERE diff_id = ?)",
                (key,),
            ).rowcount
            conn.execute("DELETE FROM layers WHERE diff_id = ?", (key,))
        return images

    # -- verified blob sources -> diff_id -------------------------------------------------------------------

    def put_verified(self, source: BlobSource, diff_id: Digest) -> None:
        """Remember that ``source`` was downloaded and verified to unpack to ``diff_id``."""
        with self.transaction(f"remember blob {source.digest}") as conn:
            self._put_verified(conn, source, diff_id)

    @staticmethod
    def _put_verified(conn: sqlite3.Connection, source: BlobSource, diff_id: Digest) -> None:
        conn.execute(
            "INSERT INTO verified_blobs (compressed_digest, size, media_type, key_check, diff_id)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (compressed_digest, size, media_type, key_check)"
            " DO UPDATE SET diff_id = excluded.diff_id",
            (source.digest, source.size, source.media_type, source.key_check, str(diff_id)),
        )

    def verified_diff_id(self, source: BlobSource) -> Digest | None:
        """The diff_id ``source`` was verified to unpack to, or None (the layer may be gone since)."""
        with self._read(f"look up blob {source.digest}") as conn:
            row = conn.execute(
                "SELECT diff_id FROM verified_blobs"
                " WHERE compressed_digest = ? AND size = ? AND media_type = ? AND key_check = ?",
                (source.digest, source.size, source.media_type, source.key_check),
            ).fetchone()
        return None if row is None else Digest.parse(row[0])

    def delete_orphan_compressed(self) -> int:
        """Forget verified sources whose layer is not committed; returns how many."""
        with self.transaction("prune blob mappings") as conn:
            return conn.execute("DELETE FROM verified_blobs WHERE diff_id NOT IN (SELECT diff_id FROM layers)").rowcount

    # -- images ---------------------------------------------------------------------------------------------

    def upsert_image(self, image: ImageRecord) -> None:
        """Insert or replace an image; its references move to it from whatever image they named.

        Raises:
            ValueError: ``layers`` and ``compressed_layers`` differ in length.
            ResourceNotFoundError: a layer of the image is not committed (e.g. pruned concurrently).
            TransportError: SQLite failed.
        """
        if len(image.layers) != len(image.compressed_layers):
            msg = (
                f"image {image.manifest_digest}: {len(image.layers)} diff_ids but {len(image.compressed_layers)} blobs"
            )
            raise ValueError(msg)
        key = str(image.manifest_digest)
        with self.transaction(f"record image {image.manifest_digest}") as conn:
            for diff_id in image.layers:
                if conn.execute("SELECT 1 FROM layers WHERE diff_id = ?", (str(diff_id),)).fetchone() is None:
                    msg = f"image {image.manifest_digest}: layer {diff_id} is not in the store (pruned meanwhile?)"
                    raise ResourceNotFoundError(msg)
            conn.execute(
                "INSERT INTO images (manifest_digest, config_digest, created, policy, platform)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (manifest_digest) DO UPDATE SET"
                " config_digest = excluded.config_digest, created = excluded.created,"
                " policy = excluded.policy, platform = excluded.platform",
                (key, str(image.config_digest), image.created, image.policy, image.platform),
            )
            conn.execute("DELETE FROM image_layers WHERE manifest_digest = ?", (key,))
            conn.executemany(
                "INSERT INTO image_layers (manifest_digest, position, diff_id, compressed_digest) VALUES (?, ?, ?, ?)",
                [
                    (key, i, str(d), str(c))
                    for i, (d, c) in enumerate(zip(image.layers, image.compressed_layers, strict=True))
                ],
            )
            conn.executemany(
                "INSERT INTO image_references (reference, manifest_digest) VALUES (?, ?)"
                " ON CONFLICT (reference) DO UPDATE SET manifest_digest = excluded.manifest_digest",
                [(ref, key) for ref in image.references],
            )

    def _image(self, conn: sqlite3.Connection, manifest_digest: str) -> ImageRecord | None:
        row = conn.execute(
            "SELECT config_digest, created, policy, platform FROM images WHERE manifest_digest = ?",
            (manifest_digest,),
        ).fetchone()
        if row is None:
            return None
        refs = conn.execute(
            "SELECT reference FROM image_references WHERE manifest_digest = ? ORDER BY reference",
            (manifest_digest,),
        ).fetchall()
        layers = conn.execute(
            "SELECT diff_id, compressed_digest FROM image_layers WHERE manifest_digest = ? ORDER BY position",
            (manifest_digest,),
        ).fetchall()
        return ImageRecord(
            manifest_digest=Digest.parse(manifest_digest),
            config_digest=Digest.parse(row[0]),
            references=tuple(r[0] for r in refs),
            layers=tuple(Digest.parse(r[0]) for r in layers),
            compressed_layers=tuple(Digest.parse(r[1]) for r in layers),
            created=float(row[1]),
            policy=str(row[2]),
            platform=str(row[3]),
        )

    def resolve_image(self, name_or_digest: str) -> tuple[str, str | None] | None:
        """Which manifest digest ``name_or_digest`` names, and the reference if it was a reference.

        Lookup order: exact reference, full manifest digest, then a unique manifest digest prefix of at least
        :data:`MIN_DIGEST_PREFIX` hex digits (with or without ``sha256:``).

        Raises:
            ConfigError: the prefix matches more than one image.
        """
        with self._read(f"look up image {name_or_digest!r}") as conn:
            return self._resolve(conn, name_or_digest)

    def _resolve(self, conn: sqlite3.Connection, name: str) -> tuple[str, str | None] | None:
        row = conn.execute("SELECT manifest_digest FROM image_references WHERE reference = ?", (name,)).fetchone()
        if row is not None:
            return str(row[0]), name
        if conn.execute("SELECT 1 FROM images WHERE manifest_digest = ?", (name,)).fetchone() is not None:
            return name, None
        algorithm, sep, prefix = name.rpartition(":")
        if not sep:
            algorithm = "sha256"
        if len(prefix) < MIN_DIGEST_PREFIX or not _HEX_PREFIX_RE.fullmatch(prefix) or not algorithm.isalnum():
            return None
        # The prefix is hex and the algorithm alphanumeric, so the GLOB pattern has no wildcard from the input.
        rows = conn.execute(
            "SELECT manifest_digest FROM images WHERE manifest_digest GLOB ? LIMIT 2", (f"{algorithm}:{prefix}*",)
        ).fetchall()
        if len(rows) > 1:
            msg = f"image ID prefix {name!r} is ambiguous: give more digits"
            raise ConfigError(msg)
        return (str(rows[0][0]), None) if rows else None

    def find_image(self, name_or_digest: str) -> ImageRecord | None:
        """The image named by a reference, manifest digest or unique digest prefix, or None.

        Raises:
            ConfigError: an ambiguous digest prefix.
        """
        with self._read(f"look up image {name_or_digest!r}") as conn:
            resolved = self._resolve(conn, name_or_digest)
            return None if resolved is None else self._image(conn, resolved[0])

    def images(self) -> list[ImageRecord]:
        """Every image, newest first."""
        with self._read("list images") as conn:
            keys = conn.execute("SELECT manifest_digest FROM images ORDER BY created DESC, manifest_digest").fetchall()
            records = [self._image(conn, str(k[0])) for k in keys]
        return [r for r in records if r is not None]

    def remove_image(self, name_or_digest: str) -> ImageRecord:
        """Untag (by reference) or delete (by digest) an image; the row goes when no reference is left.

        Returns:
            The image as it was before the removal.

        Raises:
            ResourceNotFoundError: nothing in the store has that name.
            ConfigError: an ambiguous digest prefix.
        """
        with self.transaction(f"remove image {name_or_digest!r}") as conn:
            resolved = self._resolve(conn, name_or_digest)
            image = None if resolved is None else self._image(conn, resolved[0])
            if resolved is None or image is None:
                msg = f"image {name_or_digest!r} is not in the store"
                raise ResourceNotFoundError(msg)
            manifest_digest, reference = resolved
            if reference is not None:
                conn.execute("DELETE FROM image_references WHERE reference = ?", (reference,))
                left = conn.execute(
                    "SELECT 1 FROM image_references WHERE manifest_digest = ? LIMIT 1", (manifest_digest,)
                ).fetchone()
                if left is not None:
                    return image
            conn.execute("DELETE FROM images WHERE manifest_digest = ?", (manifest_digest,))
        return image

    def delete_dangling_images(self) -> int:
        """Delete images no reference names; returns how many."""
        with self.transaction("prune dangling images") as conn:
            return conn.execute(
                "DELETE FROM images WHERE manifest_digest NOT IN (SELECT manifest_digest FROM image_references)"
            ).rowcount

    # -- bundle leases --------------------------------------------------------------------------------------

    def add_bundle_lease(self, lease_id: str, bundle: str, diff_ids: Sequence[Digest], created: float) -> None:
        """Record that the bundle at ``bundle`` (an absolute path) uses ``diff_ids``, under ``lease_id``."""
        with self.transaction(f"lease layers to bundle {bundle}") as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO bundle_leases (lease_id, bundle, diff_id, created) VALUES (?, ?, ?, ?)",
                [(lease_id, bundle, str(d), created) for d in diff_ids],
            )

    def delete_bundle_lease(self, lease_id: str) -> int:
        """Forget one lease; returns the rows deleted."""
        with self.transaction(f"release lease {lease_id}") as conn:
            return conn.execute("DELETE FROM bundle_leases WHERE lease_id = ?", (lease_id,)).rowcount

    def delete_bundle_leases(self, bundle: str) -> int:
        """Forget every lease of the bundle at ``bundle``; returns the leases deleted."""
        with self.transaction(f"release bundle {bundle}") as conn:
            count = conn.execute(
                "SELECT COUNT(DISTINCT lease_id) FROM bundle_leases WHERE bundle = ?", (bundle,)
            ).fetchone()
            conn.execute("DELETE FROM bundle_leases WHERE bundle = ?", (bundle,))
        return int(count[0])

    def leased_bundles(self) -> list[str]:
        """The bundle paths that hold a lease."""
        with self._read("list bundle leases") as conn:
            rows = conn.execute("SELECT DISTINCT bundle FROM bundle_leases ORDER BY bundle").fetchall()
        return [str(r[0]) for r in rows]

    def leased_layers(self) -> set[Digest]:
        """The layers some bundle holds a lease on."""
        with self._read("list leased layers") as conn:
            rows = conn.execute("SELECT DISTINCT diff_id FROM bundle_leases").fetchall()
        return {Digest.parse(r[0]) for r in rows}
