"""The Store facade: committed layers, images, references, rmi, prune and repair over one work dir.

Invariants:
    * Nothing unverified is ever under ``layers/``: callers unpack into a :class:`LayerSlot`'s staging
      directory and call ``commit`` only after every check passed; a body that raises or never commits leaves
      no staging directory behind.
    * A layer is committed in this order, under its lock: flush, ``rename`` into ``layers/``, fsync the
      parents, then its DB row in one transaction. A crash (kill -9, power loss) between any two steps leaves
      either a staging directory or a layer directory without a row; :meth:`Store.repair` (run by
      :meth:`Store.open`) removes both once no live process holds the layer's lock.
    * Whoever needs a layer takes its lock first, so concurrent pulls (threads or processes) that need the
      same layer serialise and all but the first see it committed: a layer is unpacked once per source.
    * Reuse rule (SECURITY): a committed layer is handed out for a blob only when the store itself verified
      that very :class:`BlobSource` (digest, size, media type, key check) as producing the layer. Naming a
      diff_id proves nothing, and neither does unwrapping some key: otherwise an image could borrow another
      image's decrypted layer. For any other source the caller downloads and verifies the blob in full; on
      success its source is recorded and the existing layer is kept (same diff_id, same content).
    * Keys (cross-layer hardlinks): a layer is stored under its diff_id when its content is the tar alone, and
      under its chain ID (OCI image-spec config.md: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1)
      + " " + DiffID(Ln))) when the unpack copied lower-layer files up into it. Whether a layer copies up is a
      property of its tar stream alone (a link names a path the stream did not create), so a diff_id either
      always or never depends on parents: a diff_id-keyed layer is valid over any parents, and a chain-keyed
      one only over the parents its chain ID names (the same diff_id over other parents gets its own
      directory). Ordinary images are keyed by diff_id exactly as before. The verified-source mapping still
      names the diff_id (a fact about the blob); reusing a chain-keyed layer needs both that mapping and the
      caller's chain ID. Prune forgets mappings whose diff_id has no row, so after a prune a chain-keyed layer's
      blob is downloaded and verified once more (the stored layer is kept): safe, only slower.
    * Locks: a caller with a chain ID takes the diff_id's lock, then the chain ID's; nobody takes them in the
      other order (prune and repair take one lock at a time, without waiting). A cycle between two pulls
      would need a chain ID to be a diff_id whose chain ID is the first diff_id: a sha256 fixed point.
    * An image row names only committed layers (checked in the transaction that writes it); prune deletes a
      layer only when no image uses it, in a transaction, under the layer's lock.
    * Prune holds ``locks/gc.lock`` exclusively; a pull that wants its fresh layers to survive until its image
      is recorded holds :meth:`Store.lease` (shared) from its first layer to :meth:`Store.record_image`.
    * A bundle's layers stay while the bundle lives: the pull records a bundle lease (under the shared gc lock,
      before any layer) and ``bundle rm`` releases it; prune never deletes a leased layer. A lease whose
      bundle path no longer exists (a killed pull, a bundle deleted by hand) is dropped by prune.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cocoguest.digest import Digest
from cocoguest.errors import TransportError
from cocoguest.image.store.db import ImageRecord, MetadataDB
from cocoguest.image.store.layers import (
    HeldLock,
    LayerLayout,
    LayerRecord,
    LayerSlot,
    hold_layer_lock,
    hold_shared_file_lock,
    lock_key,
    parse_key,
    publish,
    remove_tree,
)
from cocoguest.image.store.sources import LAYER_META_NAME, BlobSource, layer_meta
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairReport:
    """What :meth:`Store.repair` cleaned up.

    Attributes:
        staging_removed: abandoned staging (or half-deleted) directories removed.
        orphan_layer_dirs_removed: layer directories without a DB row (crash between rename and DB write).
        missing_layer_rows_removed: DB rows whose layer directory is gone.
        images_removed: images dropped because one of their layers was gone.
        bytes_freed: disk space given back.
    """

    staging_removed: int = 0
    orphan_layer_dirs_removed: int = 0
    missing_layer_rows_removed: int = 0
    images_removed: int = 0
    bytes_freed: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was repaired."""
        return any(
            (self.staging_removed, self.orphan_layer_dirs_removed, self.missing_layer_rows_removed, self.images_removed)
        )


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`Store.prune` removed.

    Attributes:
        images_removed: dangling images (no reference names them).
        layers_removed: committed layers no image used.
        staging_removed: abandoned staging directories and orphan layer directories.
        compressed_mappings_removed: verified blob sources whose layer is gone.
        lock_files_removed: lock files of layers that are not in the store.
        bytes_freed: disk space given back.
    """

    images_removed: int = 0
    layers_removed: int = 0
    staging_removed: int = 0
    compressed_mappings_removed: int = 0
    lock_files_removed: int = 0
    bytes_freed: int = 0


class Store:
    """Content-addressed layers plus SQLite metadata under one work dir. Thread-safe; many processes may share it."""

    def __init__(self, layout: LayerLayout, db: MetadataDB, limits: Limits, *, durable: bool) -> None:
        """Wrap an open layout and DB; use :meth:`open`."""
        self._layout = layout
        self._db = db
        self._limits = limits
        self._durable = durable
        self._closed = False

    @classmethod
    def open(cls, work_dir: Path, *, limits: Limits = DEFAULT_LIMITS, durable: bool = True) -> Store:
        """Open (creating if needed) the store in ``work_dir`` and repair what a crash left behind.

        Args:
            work_dir: the store's directory (created private to the owner).
            limits: size and time limits.
            durable: flush layer content to disk before a commit becomes visible (turn off only for
                throwaway work dirs, e.g. on tmpfs, where a power loss loses everything anyway).

        Raises:
            TransportError: the directories or the DB cannot be created or opened.
            UnsupportedError: the DB was written by a newer cocoguest.
        """
        layout = LayerLayout(work_dir)
        try:
            layout.create()
        except OSError as e:
            msg = f"work dir {work_dir}: cannot create the store: {e}"
            raise TransportError(msg) from e
        db = MetadataDB.open(work_dir / "metadata.db", busy_timeout_s=limits.store_db_busy_timeout_s)
        store = cls(layout, db, limits, durable=durable)
        try:
            report = store.repair()
        except BaseException:
            db.close()
            raise
        if report.changed:
            _logger.warning("work dir %s: repaired after an interrupted run: %s", work_dir, report)
        return store

    @property
    def work_dir(self) -> Path:
        """The store's directory."""
        return self._layout.work_dir

    def close(self) -> None:
        """Close the DB; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> Store:
        """Use as a context manager that closes the store."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the store."""
        self.close()

    # -- layers ---------------------------------------------------------------------------------------------

    def _record(self, diff_id: Digest, size: int) -> LayerRecord:
        return LayerRecord(diff_id, size, self._layout.diff_dir(diff_id))

    def layer(self, diff_id: Digest) -> LayerRecord | None:
        """The committed layer with this diff_id, or None.

        SECURITY: a hit proves only that these bytes were verified once, from some blob. Never hand it out
        for a blob on this ground alone (an image could borrow another image's decrypted layer by naming
        its diff_id): use :meth:`acquire_layer` with the blob's source, which applies the reuse rule.

        Raises:
            TransportError: the DB failed.
        """
        row = self._db.get_layer(diff_id)
        if row is None or not self._layout.is_committed(diff_id):
            return None
        return self._record(diff_id, row.size)

    def verified_layer(self, source: BlobSource) -> LayerRecord | None:
        """The committed layer the store verified ``source`` to unpack to, or None.

        Raises:
            TransportError: the DB failed.
        """
        diff_id = self._db.verified_diff_id(source)
        return None if diff_id is None else self.layer(diff_id)

    def remember_verified(self, source: BlobSource, diff_id: Digest) -> None:
        """Record that ``source`` unpacks to ``diff_id``.

        SECURITY: call only after that very source was downloaded and verified in full (digest, size, HMAC,
        diff_id); the record lets later pulls of the same source skip the download.

        Raises:
            TransportError: the DB failed.
        """
        self._db.put_verified(source, diff_id)

    @contextlib.contextmanager
    def acquire_layer(
        self, diff_id: Digest, source: BlobSource | None = None, *, chain_id: Digest | None = None
    ) -> Iterator[LayerSlot]:
        """Hold the layer's lock and yield a slot: the existing layer, or an empty staging directory.

        With a ``source`` (the blob the caller would otherwise download), ``existing`` is set only when the
        store verified that source as producing ``diff_id`` (the reuse rule of the module docstring); else
        the caller gets a staging directory even if the layer is committed, and ``commit`` then keeps the
        committed layer and records the source. Without a ``source`` any committed layer is reused: only for
        callers whose content does not come from an untrusted blob.

        Concurrent callers (threads or processes) for the same diff_id serialise; the later ones see
        ``existing`` (for the same source). If the body raises or does not call ``commit``, the staging
        directory is removed.

        ``chain_id`` (the layer's chain ID, when it has lower layers): a layer stored under it (one whose
        content depended on these parents) is reused by the same rule, and ``commit(parent_dependent=True)``
        stores the staging directory under it (see the module docstring).

        Raises:
            TransportError: the lock, the staging directory or the DB failed.
        """
        with self._locked(diff_id, blocking=True):
            if chain_id is None or chain_id == diff_id:
                yield from self._slot_under_lock(diff_id, source, None)
                return
            with self._locked(chain_id, blocking=True):  # lock order: diff_id, then chain ID
                yield from self._slot_under_lock(diff_id, source, chain_id)

    @contextlib.contextmanager
    def _locked(self, diff_id: Digest, *, blocking: bool) -> Iterator[HeldLock | None]:
        """The layer's lock; OSErrors while taking it (not in the body) become TransportError."""
        path = self._layout.lock_path(diff_id)
        stack = contextlib.ExitStack()
        try:
            held = stack.enter_context(hold_layer_lock(path, blocking=blocking))
        except OSError as e:
            msg = f"layer {diff_id}: cannot lock {path}: {e}"
            raise TransportError(msg) from e
        with stack:
            yield held

    @contextlib.contextmanager
    def _gc_locked(self, *, exclusive: bool) -> Iterator[None]:
        path = self._layout.gc_lock_path
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(hold_shared_file_lock(path, exclusive=exclusive))
        except OSError as e:
            msg = f"work dir {self.work_dir}: cannot lock {path}: {e}"
            raise TransportError(msg) from e
        with stack:
            yield

    def _slot_under_lock(
        self, diff_id: Digest, source: BlobSource | None, chain_id: Digest | None
    ) -> Iterator[LayerSlot]:
        existing = self.layer(diff_id)
        chained = None if chain_id is None else self.layer(chain_id)
        # SECURITY: the reuse rule: only a source this store verified as producing diff_id gets the layer; a
        # chain-keyed layer also needs the caller's parents to be the ones its key names (the key says so).
        verified = source is None or self._db.verified_diff_id(source) == diff_id
        for reusable in (existing, chained):
            if reusable is not None and verified:
                yield LayerSlot(diff_id, reusable, None, None)
                return
        # A layer directory without a row (or a row without content), or a staging directory of this
        # layer, is a dead holder's leftover: we hold the lock(s), so nobody else is working on it.
        if existing is None:
            self._retire(diff_id)
        if chain_id is not None and chained is None:
            self._retire(chain_id)
        prefix = f"{lock_key(diff_id)}."
        for name in self._listdir(self._layout.staging_dir):
            if name.startswith(prefix):
                self._remove_quietly(self._layout.staging_dir / name, f"staging directory of layer {diff_id}")
        try:
            staging_root = self._layout.new_staging(diff_id)
        except OSError as e:
            msg = f"layer {diff_id}: cannot create a staging directory in {self._layout.staging_dir}: {e}"
            raise TransportError(msg) from e

        def publisher(size: int, after_rename: Callable[[], None] | None, parent_dependent: bool) -> LayerRecord:
            key, current = diff_id, existing
            if parent_dependent:
                if chain_id is None:
                    msg = f"layer {diff_id}: its content depends on lower layers, but no chain ID was given"
                    raise ValueError(msg)
                key, current = chain_id, chained
            if current is not None:
                # The blob verified to the diff_id of the committed layer (over the same parents, for a chain
                # key): same tar stream, same content. Keep the committed layer (bundles may use it) and vouch
                # for this source from now on.
                if source is not None:
                    self._db.put_verified(source, diff_id)
                return current
            if key == diff_id:
                return self._publish(diff_id, staging_root, size, after_rename, source)
            record = self._publish(key, staging_root, size, after_rename, None)
            if source is not None:
                self._db.put_verified(source, diff_id)  # the blob's fact: it unpacks to diff_id
            return record

        slot = LayerSlot(diff_id, None, staging_root / "diff", publisher)
        try:
            yield slot
        finally:
            # After a publish the staging root was renamed away and this finds nothing.
            self._remove_quietly(staging_root, f"staging directory of layer {diff_id}")

    def _publish(
        self,
        diff_id: Digest,
        staging_root: Path,
        size: int,
        after_rename: Callable[[], None] | None,
        source: BlobSource | None,
    ) -> LayerRecord:
        try:
            # Committed with the layer by the rename below: lets ``fsck --repair`` rebuild a lost DB.
            (staging_root / LAYER_META_NAME).write_bytes(layer_meta(size, source))
            publish(self._layout, diff_id, staging_root, durable=self._durable)
        except OSError as e:
            self._retire(diff_id)
            msg = f"layer {diff_id}: cannot commit {staging_root} into {self._layout.layer_dir(diff_id)}: {e}"
            raise TransportError(msg) from e
        try:
            if after_rename is not None:
                after_rename()
            self._db.insert_layer(diff_id, size, time.time(), source)
        except BaseException:
            # SECURITY: never leave a layer directory the DB does not vouch for.
            self._retire(diff_id)
            raise
        return self._record(diff_id, size)

    def _retire(self, diff_id: Digest) -> int:
        """Move the layer's directory (if any) out of ``layers/`` atomically, then delete it; the lock is held."""
        layer_dir = self._layout.layer_dir(diff_id)
        trash = self._layout.trash_path(diff_id)
        try:
            os.rename(layer_dir, trash)
        except FileNotFoundError:
            return 0
        except OSError as e:
            msg = f"layer {diff_id}: cannot remove {layer_dir}: {e}"
            raise TransportError(msg) from e
        try:
            return remove_tree(trash)
        except OSError as e:
            # Out of layers/ already; the next repair finishes the job.
            _logger.warning("layer %s: cannot delete %s: %s", diff_id, trash, e)
            return 0

    @staticmethod
    def _remove_quietly(path: Path, what: str) -> int:
        try:
            return remove_tree(path)
        except OSError as e:
            _logger.warning("%s: cannot delete %s: %s", what, path, e)
            return 0

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Keep :meth:`prune` out while held (shared: any number of pulls may hold it at once).

        Hold it from the first :meth:`acquire_layer` of a pull to its :meth:`record_image`, so that a
        concurrent prune cannot remove layers committed for an image not recorded yet. Never call
        :meth:`prune` while holding it (it would wait for itself).

        Raises:
            TransportError: the lock file cannot be locked.
        """
        with self._gc_locked(exclusive=False):
            yield

    # -- images ---------------------------------------------------------------------------------------------

    def record_image(self, image: ImageRecord) -> None:
        """Insert or replace an image; its references move to it (a reference names one image).

        An image that loses its last reference this way stays, dangling, until :meth:`prune`.

        Raises:
            ValueError: ``layers`` and ``compressed_layers`` differ in length.
            ResourceNotFoundError: a layer of the image is not committed.
            TransportError: the DB failed.
        """
        self._db.upsert_image(image)

    def find_image(self, name_or_digest: str) -> ImageRecord | None:
        """The image named by a reference, a manifest digest, or a unique digest prefix (>= 12 hex digits).

        References are matched exactly as recorded; normalise them the same way before both calls.

        Raises:
            ConfigError: the digest prefix is ambiguous.
            TransportError: the DB failed.
        """
        return self._db.find_image(name_or_digest)

    def images(self) -> list[ImageRecord]:
        """Every image, newest first.

        Raises:
            TransportError: the DB failed.
        """
        return self._db.images()

    def remove_image(self, name_or_digest: str) -> ImageRecord:
        """rmi: remove a reference (the image goes with its last one) or, by digest, the image and all its names.

        Layers stay until :meth:`prune`.

        Returns:
            The image as it was before the removal.

        Raises:
            ResourceNotFoundError: no image has that name.
            ConfigError: the digest prefix is ambiguous.
            TransportError: the DB failed.
        """
        return self._db.remove_image(name_or_digest)

    # -- maintenance ----------------------------------------------------------------------------------------

    def prune(self) -> PruneReport:
        """Remove dangling images, layers no image uses, abandoned staging, orphan mappings and lock files.

        Waits for every :meth:`lease` to be released; skips layers someone is acquiring right now.

        Raises:
            TransportError: a lock, the DB or a deletion failed.
        """
        with self._gc_locked(exclusive=True):
            return self._prune_locked()

    def _prune_locked(self) -> PruneReport:
        images_removed = self._db.delete_dangling_images()
        layers_removed = 0
        freed = 0
        # Exclusive gc lock: no pull can add a lease meanwhile, so this set stays complete while we delete.
        leased = self._leased_layers_of_live_bundles()
        for row in self._db.unused_layers():
            if row.diff_id in leased:
                continue  # SECURITY/safety: a live bundle's rootfs uses it (an overlay lowerdir or its origin)
            with self._try_lock(row.diff_id) as held:
                if held is None or not self._db.delete_layer_if_unused(row.diff_id):
                    continue
                freed += self._retire(row.diff_id)
                layers_removed += 1
                held.unlink_on_release = True
        repaired = self.repair()
        mappings = self._db.delete_orphan_compressed()
        locks_removed = self._sweep_lock_files()
        return PruneReport(
            images_removed=images_removed,
            layers_removed=layers_removed,
            staging_removed=repaired.staging_removed + repaired.orphan_layer_dirs_removed,
            compressed_mappings_removed=mappings,
            lock_files_removed=locks_removed,
            bytes_freed=freed + repaired.bytes_freed,
        )

    # -- bundle leases ---------------------------------------------------------------------------------------

    @staticmethod
    def bundle_key(bundle: Path) -> str:
        """How a bundle is named in its leases: its absolute path (lexically normalised)."""
        return os.path.abspath(bundle)

    def lease_bundle(self, bundle: Path, diff_ids: tuple[Digest, ...]) -> str:
        """Record that the bundle at ``bundle`` uses ``diff_ids`` until :meth:`release_bundle`; returns the lease id.

        Call while holding :meth:`lease` (so no prune runs between this and the bundle's creation).

        Raises:
            TransportError: the DB failed.
        """
        lease_id = uuid.uuid4().hex
        self._db.add_bundle_lease(lease_id, self.bundle_key(bundle), diff_ids, time.time())
        return lease_id

    def release_lease(self, lease_id: str) -> None:
        """Forget one lease (a pull that failed before its bundle was complete).

        Raises:
            TransportError: the DB failed.
        """
        self._db.delete_bundle_lease(lease_id)

    def release_bundle(self, bundle: Path) -> int:
        """Forget every lease of the bundle at ``bundle`` (``bundle rm``); returns how many there were.

        Raises:
            TransportError: the DB failed.
        """
        return self._db.delete_bundle_leases(self.bundle_key(bundle))

    def leased_bundles(self) -> list[str]:
        """The bundle paths holding a lease.

        Raises:
            TransportError: the DB failed.
        """
        return self._db.leased_bundles()

    def _leased_layers_of_live_bundles(self) -> set[Digest]:
        for bundle in self._db.leased_bundles():
            if not os.path.lexists(bundle):
                _logger.info("work dir %s: dropping the lease of vanished bundle %s", self.work_dir, bundle)
                self._db.delete_bundle_leases(bundle)
        return self._db.leased_layers()

    def _try_lock(self, diff_id: Digest) -> contextlib.AbstractContextManager[HeldLock | None]:
        return self._locked(diff_id, blocking=False)

    def _sweep_lock_files(self) -> int:
        removed = 0
        for diff_id, _path in self._layout.layer_lock_files():
            if self._db.get_layer(diff_id) is not None:
                continue
            with self._try_lock(diff_id) as held:
                # Holding it proves nobody is staging this layer; recheck the row under the lock.
                if held is not None and self._db.get_layer(diff_id) is None:
                    held.unlink_on_release = True
                    removed += 1
        return removed

    def repair(self) -> RepairReport:
        """Reconcile directories and DB after a crash; idempotent, safe while other processes use the store.

        Removes staging leftovers whose layer lock nobody holds, layer directories without a DB row, and DB
        rows whose layer directory is gone (with the images that used them). Anything locked by a live
        holder is left alone.

        Raises:
            TransportError: a lock, the DB or a deletion failed.
        """
        staging, freed = self._repair_staging()
        orphans, orphan_bytes = self._repair_orphan_dirs()
        rows, images = self._repair_missing_dirs()
        return RepairReport(
            staging_removed=staging,
            orphan_layer_dirs_removed=orphans,
            missing_layer_rows_removed=rows,
            images_removed=images,
            bytes_freed=freed + orphan_bytes,
        )

    def _listdir(self, path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except OSError as e:
            msg = f"work dir {self.work_dir}: cannot list {path}: {e}"
            raise TransportError(msg) from e

    def _remove(self, path: Path, what: str) -> int:
        try:
            return remove_tree(path)
        except OSError as e:
            msg = f"{what}: cannot delete {path}: {e}"
            raise TransportError(msg) from e

    def _repair_staging(self) -> tuple[int, int]:
        removed = freed = 0
        for name in self._listdir(self._layout.staging_dir):
            path = self._layout.staging_dir / name
            diff_id = parse_key(name)
            if diff_id is None:
                # Only this module writes here, always with a key; anything else is debris.
                freed += self._remove(path, f"work dir {self.work_dir}")
                removed += 1
                continue
            with self._try_lock(diff_id) as held:
                if held is None:
                    continue  # a live holder is unpacking or deleting it
                freed += self._remove(path, f"staging directory of layer {diff_id}")
                removed += 1
        return removed, freed

    def _repair_orphan_dirs(self) -> tuple[int, int]:
        removed = freed = 0
        known = set(self._db.layer_ids())
        for algorithm in self._listdir(self._layout.layers_dir):
            algorithm_dir = self._layout.layers_dir / algorithm
            for name in self._listdir(algorithm_dir) if algorithm_dir.is_dir() else []:
                try:
                    diff_id = Digest(algorithm, name)
                except ValueError:
                    freed += self._remove(algorithm_dir / name, f"work dir {self.work_dir}")
                    removed += 1
                    continue
                if diff_id in known:
                    continue
                with self._try_lock(diff_id) as held:
                    # Recheck under the lock: a holder may have written the row since we listed.
                    if held is None or self._db.get_layer(diff_id) is not None:
                        continue
                    _logger.warning("layer %s: removing %s, which has no DB row", diff_id, algorithm_dir / name)
                    freed += self._retire(diff_id)
                    removed += 1
        return removed, freed

    def _repair_missing_dirs(self) -> tuple[int, int]:
        rows = images = 0
        for diff_id in self._db.layer_ids():
            if self._layout.is_committed(diff_id):
                continue
            with self._try_lock(diff_id) as held:
                if held is None or self._layout.is_committed(diff_id) or self._db.get_layer(diff_id) is None:
                    continue
                _logger.warning("layer %s: its directory is gone; forgetting it and the images using it", diff_id)
                images += self._db.delete_layer_and_users(diff_id)
                self._retire(diff_id)
                rows += 1
        return rows, images
