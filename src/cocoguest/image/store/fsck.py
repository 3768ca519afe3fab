"""``fsck``: check the store's metadata against its layer directories, and rebuild a lost or corrupt DB.

Invariants:
    * A check never changes the store (it does not run :meth:`Store.repair`, which would delete layer
      directories a lost DB no longer knows).
    * A repair holds ``locks/gc.lock`` exclusively, so no pull (which holds it shared) and no prune runs.
    * A repair rebuilds only from what the store itself vouches for: a directory under ``layers/`` got there
      by an atomic rename after every check passed (see :mod:`cocoguest.image.store.layers`), so a layer
      directory named by a valid digest is a verified layer, and its ``layer.json`` (written before that
      rename) restores its size and the blob source it was verified from. Image records cannot be rebuilt
      from the layers: lost images are reported as lost, never invented.
    * A corrupt DB file is moved aside (``metadata.db.corrupt-<time>``), never deleted.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cocoguest.digest import Digest
from cocoguest.errors import ResourceNotFoundError, TransportError
from cocoguest.image.store.db import MetadataCorruptError, MetadataDB
from cocoguest.image.store.layers import LayerLayout, hold_shared_file_lock
from cocoguest.image.store.sources import LAYER_META_NAME, parse_layer_meta
from cocoguest.image.store.store import Store
from cocoguest.limits import DEFAULT_LIMITS, Limits

DB_NAME = "metadata.db"
_DB_SIDE_FILES = ("-wal", "-shm")


@dataclass
class FsckReport:
    """What :func:`check_store` found or :func:`repair_store` did.

    Attributes:
        db_corrupt: the DB could not be read (or failed SQLite's integrity check); the detail.
        problems: one line per inconsistency found.
        layers_adopted: layer directories given back their DB rows (repair).
        rows_removed: DB rows of layers whose directory is gone (repair).
        images_lost: images dropped because a layer was gone, by manifest digest (repair).
        moved_aside: where a corrupt DB was moved (repair).
    """

    db_corrupt: str | None = None
    problems: list[str] = field(default_factory=list)
    layers_adopted: int = 0
    rows_removed: int = 0
    images_lost: list[str] = field(default_factory=list)
    moved_aside: Path | None = None

    @property
    def clean(self) -> bool:
        """Whether the store is consistent."""
        return self.db_corrupt is None and not self.problems


def _layer_dirs(layout: LayerLayout) -> tuple[list[Digest], list[Path]]:
    """Committed layer directories by diff_id, and entries under ``layers/`` that are not layers."""
    layers: list[Digest] = []
    debris: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for algorithm in sorted(os.listdir(layout.layers_dir)):
            algorithm_dir = layout.layers_dir / algorithm
            if not algorithm_dir.is_dir() or algorithm_dir.is_symlink():
                debris.append(algorithm_dir)
                continue
            for name in sorted(os.listdir(algorithm_dir)):
                try:
                    diff_id = Digest(algorithm, name)
                except ValueError:
                    debris.append(algorithm_dir / name)
                    continue
                if layout.is_committed(diff_id):
                    layers.append(diff_id)
                else:
                    debris.append(algorithm_dir / name)
    return layers, debris


def _open_db(path: Path, limits: Limits) -> tuple[MetadataDB | None, str | None]:
    """The DB, or None and why it is corrupt."""
    try:
        db = MetadataDB.open(path, busy_timeout_s=limits.store_db_busy_timeout_s)
    except MetadataCorruptError as e:
        return None, str(e.__cause__ or e)
    problems = db.integrity_problems()
    if problems:
        db.close()
        return None, "; ".join(problems[:3])
    return db, None


def _compare(layout: LayerLayout, db: MetadataDB, report: FsckReport) -> tuple[set[Digest], set[Digest]]:
    """Fill ``report.problems``; return (rows without a directory, directories without a row)."""
    on_disk, debris = _layer_dirs(layout)
    rows = set(db.layer_ids())
    missing_dirs = rows - set(on_disk)
    missing_rows = set(on_disk) - rows
    report.problems += [
        f"layer {d}: in the DB but its directory {layout.diff_dir(d)} is gone" for d in sorted(missing_dirs, key=str)
    ]
    report.problems += [
        f"layer {d}: directory {layout.layer_dir(d)} has no DB row" for d in sorted(missing_rows, key=str)
    ]
    report.problems += [f"{path}: not a layer directory" for path in debris]
    for image in db.images():
        gone = [d for d in image.layers if d in missing_dirs]
        if gone:
            report.problems.append(f"image {image.manifest_digest}: layer {gone[0]} is gone")
    return missing_dirs, missing_rows


def check_store(work_dir: Path, *, limits: Limits = DEFAULT_LIMITS) -> FsckReport:
    """Check the store without changing it.

    Raises:
        ResourceNotFoundError: ``work_dir`` holds no store.
        TransportError: a directory cannot be read.
    """
    layout = LayerLayout(work_dir)
    db_path = work_dir / DB_NAME
    if not layout.layers_dir.is_dir() and not db_path.exists():
        msg = f"work dir {work_dir}: no store here"
        raise ResourceNotFoundError(msg)
    report = FsckReport()
    if not db_path.exists():
        report.db_corrupt = f"metadata DB {db_path} is missing"
        return report
    db, corrupt = _open_db(db_path, limits)
    if db is None:
        report.db_corrupt = f"metadata DB {db_path} is corrupt ({corrupt})"
        return report
    try:
        _compare(layout, db, report)
    finally:
        db.close()
    return report


def _move_aside(db_path: Path) -> Path:
    aside = db_path.with_name(f"{DB_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.rename(db_path, aside)
        for suffix in _DB_SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.rename(db_path.with_name(DB_NAME + suffix), aside.with_name(aside.name + suffix))
    except OSError as e:
        msg = f"metadata DB {db_path}: cannot move it aside: {e}"
        raise TransportError(msg) from e
    return aside


def _adopt(layout: LayerLayout, db: MetadataDB, diff_id: Digest) -> None:
    """Give a verified layer directory its row back (and its first verified source, if recorded)."""
    try:
        size, source = parse_layer_meta((layout.layer_dir(diff_id) / LAYER_META_NAME).read_bytes())
    except FileNotFoundError:
        size, source = None, None
    except OSError as e:
        msg = f"layer {diff_id}: cannot read {layout.layer_dir(diff_id) / LAYER_META_NAME}: {e}"
        raise TransportError(msg) from e
    db.insert_layer(diff_id, size if size is not None else 0, time.time(), source)


def repair_store(work_dir: Path, *, limits: Limits = DEFAULT_LIMITS) -> FsckReport:
    """Make the store consistent: rebuild a corrupt DB from the layer directories, adopt layer directories
    without rows, drop rows (and the images using them) whose directory is gone; then the usual crash repair.

    Raises:
        ResourceNotFoundError: ``work_dir`` holds no store.
        TransportError: the DB, a lock or a directory failed.
    """
    found = check_store(work_dir, limits=limits)
    layout = LayerLayout(work_dir)
    report = FsckReport(db_corrupt=found.db_corrupt, problems=found.problems)
    db_path = work_dir / DB_NAME
    try:
        layout.create()
    except OSError as e:
        msg = f"work dir {work_dir}: cannot create the store: {e}"
        raise TransportError(msg) from e
    with hold_shared_file_lock(layout.gc_lock_path, exclusive=True):
        db, _ = _open_db(db_path, limits)
        if db is None:
            if db_path.exists():
                report.moved_aside = _move_aside(db_path)
            db = MetadataDB.open(db_path, busy_timeout_s=limits.store_db_busy_timeout_s)
        try:
            missing_dirs, missing_rows = _compare(layout, db, FsckReport())
            for diff_id in sorted(missing_rows, key=str):
                _adopt(layout, db, diff_id)
                report.layers_adopted += 1
            images = db.images()
            for diff_id in sorted(missing_dirs, key=str):
                report.images_lost += [str(i.manifest_digest) for i in images if diff_id in i.layers]
                db.delete_layer_and_users(diff_id)
                report.rows_removed += 1
        finally:
            db.close()
    # Staging leftovers and debris: the ordinary crash repair (every layer directory now has its row).
    Store.open(work_dir, limits=limits).close()
    return report
