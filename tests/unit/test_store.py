"""The layer store: commit and lookup, rollback, images/rmi/prune, references, digest prefixes, schema, repair."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, ResourceNotFoundError, UnsupportedError
from cocoguest.image.store import SCHEMA_VERSION, BlobSource, ImageRecord, LayerRecord, Store
from cocoguest.image.store.db import MIGRATIONS, MetadataDB, Migration
from cocoguest.image.store.layers import LayerLayout, remove_tree
from cocoguest.limits import DEFAULT_LIMITS


def _digest(label: str) -> Digest:
    return Digest.of_bytes(label.encode())


def _commit_layer(store: Store, label: str, content: bytes = b"hello") -> LayerRecord:
    diff_id = _digest(label)
    with store.acquire_layer(diff_id) as slot:
        assert slot.existing is None
        assert slot.staging is not None
        (slot.staging / "file").write_bytes(content)
        return slot.commit(len(content))


def _image(label: str, layers: list[LayerRecord], refs: tuple[str, ...], created: float = 1.0) -> ImageRecord:
    return ImageRecord(
        manifest_digest=_digest(f"manifest-{label}"),
        config_digest=_digest(f"config-{label}"),
        references=refs,
        layers=tuple(layer.diff_id for layer in layers),
        compressed_layers=tuple(_digest(f"blob-{layer.diff_id}") for layer in layers),
        created=created,
        policy='{"insecure": true}',
        platform="linux/amd64",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "work", durable=False) as s:
        yield s


def test_commit_then_lookup_and_reopen(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with Store.open(work) as store:
        record = _commit_layer(store, "a", b"content-a")
        assert record.path == work / "layers" / "sha256" / record.diff_id.hex / "diff"
        assert (record.path / "file").read_bytes() == b"content-a"
        assert store.layer(record.diff_id) == record
        assert store.layer(_digest("other")) is None
        assert os.listdir(work / "staging") == []
    with Store.open(work) as store:
        assert store.layer(record.diff_id) == record
        with store.acquire_layer(record.diff_id) as slot:
            assert slot.existing == record
            assert slot.staging is None
            with pytest.raises(ValueError, match="nothing to commit"):
                slot.commit(1)


def test_store_dirs_are_private(store: Store) -> None:
    for name in ("", "layers", "staging", "locks"):
        assert stat.S_IMODE((store.work_dir / name).stat().st_mode) == 0o700


def test_failing_body_leaves_nothing(store: Store) -> None:
    diff_id = _digest("fail")
    seen: list[Path] = []

    def unpack() -> None:
        with store.acquire_layer(diff_id) as slot:
            assert slot.staging is not None
            assert list(slot.staging.iterdir()) == []
            seen.append(slot.staging)
            (slot.staging / "partial").write_bytes(b"x" * 100)
            msg = "unpack failed"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="unpack failed"):
        unpack()
    assert not seen[0].exists()
    assert os.listdir(store.work_dir / "staging") == []
    assert not (store.work_dir / "layers" / "sha256" / diff_id.hex).exists()
    assert store.layer(diff_id) is None


def test_body_without_commit_leaves_nothing(store: Store) -> None:
    diff_id = _digest("no-commit")
    with store.acquire_layer(diff_id) as slot:
        assert slot.staging is not None
        (slot.staging / "f").write_bytes(b"x")
    assert os.listdir(store.work_dir / "staging") == []
    assert store.layer(diff_id) is None


def test_commit_twice_and_negative_size_refused(store: Store) -> None:
    with store.acquire_layer(_digest("twice")) as slot:
        with pytest.raises(ValueError, match="negative"):
            slot.commit(-1)
        slot.commit(0)
        with pytest.raises(ValueError, match="already committed"):
            slot.commit(0)
    assert store.layer(_digest("twice")) is not None


def test_db_failure_at_commit_leaves_no_layer_dir(store: Store) -> None:
    diff_id = _digest("db-fails")

    def boom() -> None:
        msg = "DB write failed"
        raise OSError(msg)

    def unpack() -> None:
        with store.acquire_layer(diff_id) as slot:
            assert slot.staging is not None
            (slot.staging / "f").write_bytes(b"x")
            slot._commit(1, after_rename=boom)

    with pytest.raises(OSError, match="DB write failed"):
        unpack()
    assert not (store.work_dir / "layers" / "sha256" / diff_id.hex).exists()
    assert os.listdir(store.work_dir / "staging") == []
    assert store.layer(diff_id) is None


def test_verified_source_mapping(store: Store) -> None:
    layer = _commit_layer(store, "c")
    source = BlobSource(str(_digest("blob-c")), 10, "application/vnd.oci.image.layer.v1.tar+gzip")
    assert store.verified_layer(source) is None
    store.remember_verified(source, layer.diff_id)
    assert store.verified_layer(source) == layer
    # A mapping to a layer that is not committed is never returned, and prune forgets it.
    orphan = BlobSource(str(_digest("blob-x")), 10, source.media_type)
    store.remember_verified(orphan, _digest("x"))
    assert store.verified_layer(orphan) is None
    report = store.prune()
    assert report.layers_removed == 1  # layer "c" is used by no image: its mapping goes with it
    assert report.compressed_mappings_removed == 2
    assert store.verified_layer(source) is None


def test_shared_layer_stored_once_survives_rmi_of_one_image(store: Store) -> None:
    base = _commit_layer(store, "base", b"b" * 10000)
    top1 = _commit_layer(store, "top1")
    top2 = _commit_layer(store, "top2")
    store.record_image(_image("one", [base, top1], ("example.com/one:latest",)))
    with store.acquire_layer(base.diff_id) as slot:
        assert slot.existing == base  # a second pull of the shared layer does no work
    store.record_image(_image("two", [base, top2], ("example.com/two:latest",)))
    assert len(os.listdir(store.work_dir / "layers" / "sha256")) == 3

    removed = store.remove_image("example.com/one:latest")
    assert removed.manifest_digest == _digest("manifest-one")
    assert store.find_image("example.com/one:latest") is None
    report = store.prune()
    assert report.layers_removed == 1
    assert store.layer(top1.diff_id) is None
    assert not top1.path.exists()
    assert store.layer(base.diff_id) == base
    assert (base.path / "file").read_bytes() == b"b" * 10000

    store.remove_image("example.com/two:latest")
    assert store.images() == []
    report = store.prune()
    assert report.layers_removed == 2
    assert report.bytes_freed >= 10000
    assert store.layer(base.diff_id) is None
    assert os.listdir(store.work_dir / "layers" / "sha256") == []
    assert os.listdir(store.work_dir / "locks") in ([], ["gc.lock"])
    assert store.prune().layers_removed == 0


def test_record_image_needs_committed_layers(store: Store) -> None:
    layer = _commit_layer(store, "present")
    missing = LayerRecord(_digest("missing"), 1, store.work_dir / "nowhere")
    with pytest.raises(ResourceNotFoundError, match=str(missing.diff_id)):
        store.record_image(_image("bad", [layer, missing], ("r:1",)))
    assert store.images() == []
    with pytest.raises(ValueError, match="blobs"):
        store.record_image(
            ImageRecord(_digest("m"), _digest("c"), ("r:1",), (layer.diff_id,), (), 1.0, "{}", "linux/amd64")
        )


def test_image_round_trip_and_listing_order(store: Store) -> None:
    layers = [_commit_layer(store, "l1"), _commit_layer(store, "l2")]
    old = _image("old", layers, ("r/old:1", "r/old:2"), created=10.0)
    new = _image("new", layers[:1], ("r/new:1",), created=20.0)
    store.record_image(old)
    store.record_image(new)
    assert store.find_image("r/old:2") == old
    assert store.find_image(str(old.manifest_digest)) == old
    assert [i.manifest_digest for i in store.images()] == [new.manifest_digest, old.manifest_digest]
    # Upsert: recording the same manifest again replaces its fields.
    store.record_image(_image("old", layers, ("r/old:1",), created=30.0))
    again = store.find_image(str(old.manifest_digest))
    assert again is not None
    assert again.created == 30.0
    assert again.references == ("r/old:1", "r/old:2")  # references only ever move to an image


def test_reference_moves_to_newer_image(store: Store) -> None:
    layer1 = _commit_layer(store, "v1")
    layer2 = _commit_layer(store, "v2")
    store.record_image(_image("v1", [layer1], ("example.com/app:latest", "example.com/app:v1")))
    store.record_image(_image("v2", [layer2], ("example.com/app:latest",)))
    found = store.find_image("example.com/app:latest")
    assert found is not None
    assert found.manifest_digest == _digest("manifest-v2")
    v1 = store.find_image("example.com/app:v1")
    assert v1 is not None
    assert v1.references == ("example.com/app:v1",)

    # Once v1 loses its last name it is dangling: listed, and removed (with its layer) by prune.
    store.record_image(_image("v3", [layer2], ("example.com/app:v1",)))
    dangling = store.find_image(str(_digest("manifest-v1")))
    assert dangling is not None
    assert dangling.references == ()
    report = store.prune()
    assert report.images_removed == 1
    assert report.layers_removed == 1
    assert store.layer(layer1.diff_id) is None
    assert store.layer(layer2.diff_id) is not None


def test_find_image_by_digest_prefix(store: Store) -> None:
    layer = _commit_layer(store, "p")
    image = _image("prefix", [layer], ("r:p",))
    store.record_image(image)
    hex_ = image.manifest_digest.hex
    assert store.find_image(hex_[:12]) == image
    assert store.find_image(f"sha256:{hex_[:20]}") == image
    assert store.find_image(hex_) == image
    assert store.find_image(hex_[:11]) is None  # too short to be an ID
    assert store.find_image("0" * 12 if not hex_.startswith("0" * 12) else "f" * 12) is None
    assert store.find_image("*" * 12) is None
    assert store.find_image("sha256:" + "?" * 12) is None

    # Two manifests that share a 12-digit prefix: the prefix is ambiguous, a longer one is not.
    twin_a = ImageRecord(
        Digest("sha256", "abcdef012345" + "0" * 52), _digest("ca"), ("t:a",), (), (), 1.0, "{}", "linux/amd64"
    )
    twin_b = ImageRecord(
        Digest("sha256", "abcdef012345" + "1" * 52), _digest("cb"), ("t:b",), (), (), 1.0, "{}", "linux/amd64"
    )
    store.record_image(twin_a)
    store.record_image(twin_b)
    with pytest.raises(ConfigError, match="ambiguous"):
        store.find_image("abcdef012345")
    assert store.find_image("abcdef0123451") == twin_b
    with pytest.raises(ConfigError, match="ambiguous"):
        store.remove_image("sha256:abcdef012345")


def test_remove_image_semantics(store: Store) -> None:
    layer = _commit_layer(store, "rmi")
    image = _image("rmi", [layer], ("r:a", "r:b"))
    store.record_image(image)
    with pytest.raises(ResourceNotFoundError, match="r:nope"):
        store.remove_image("r:nope")
    before = store.remove_image("r:a")
    assert before.references == ("r:a", "r:b")
    left = store.find_image("r:b")
    assert left is not None
    assert left.references == ("r:b",)
    # By digest: the image goes with all its names.
    store.record_image(image)
    store.remove_image(image.manifest_digest.hex[:16])
    assert store.images() == []
    assert store.find_image("r:a") is None
    assert store.layer(layer.diff_id) is not None  # layers wait for prune
    with pytest.raises(ResourceNotFoundError):
        store.remove_image(str(image.manifest_digest))


def test_schema_version_and_migration_path(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = MetadataDB.open(path)
    current = SCHEMA_VERSION
    assert db.schema_version() == current == len(MIGRATIONS)
    db.insert_layer(_digest("kept"), 5, 1.0)
    db.close()

    # A later version adds a column; opening migrates in place and keeps the data.
    later = current + 1
    newer = (*MIGRATIONS, Migration(later, ("ALTER TABLE layers ADD COLUMN note TEXT DEFAULT 'new'",)))
    db = MetadataDB.open(path, migrations=newer)
    assert db.schema_version() == later
    row = db.get_layer(_digest("kept"))
    assert row is not None
    assert row.size == 5
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT note FROM layers").fetchone() == ("new",)
    conn.close()
    db = MetadataDB.open(path, migrations=newer)  # idempotent
    assert db.schema_version() == later
    db.close()

    # This code refuses a DB from the future and does not touch it.
    with pytest.raises(UnsupportedError, match=f"schema version {later} is newer"):
        MetadataDB.open(path)
    with pytest.raises(ValueError, match="numbered"):
        MetadataDB.open(tmp_path / "other.db", migrations=(Migration(2, ()),))


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    MetadataDB.open(path).close()
    broken = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, ("CREATE TABLE extra (x)", "THIS IS NOT SQL")))
    with pytest.raises(Exception, match="migrate schema"):
        MetadataDB.open(path, migrations=broken)
    db = MetadataDB.open(path)
    assert db.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None
    conn.close()
    db.close()


def test_v1_blob_mappings_are_dropped_by_the_migration(tmp_path: Path) -> None:
    """A v1 store mapped a bare blob digest to a diff_id: such rows cannot vouch for a reuse any more."""
    path = tmp_path / "metadata.db"
    MetadataDB.open(path, migrations=MIGRATIONS[:1]).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO compressed_layers VALUES ('sha256:aa', 'sha256:bb')")
    conn.close()
    db = MetadataDB.open(path)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "compressed_layers" not in tables
    assert "verified_blobs" in tables
    db.close()


def test_version_1_db_migrates_to_bundle_leases(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    MetadataDB.open(path, migrations=MIGRATIONS[:1]).close()
    db = MetadataDB.open(path)
    assert db.schema_version() == SCHEMA_VERSION
    db.add_bundle_lease("l1", "/b", (_digest("x"),), 1.0)
    assert db.leased_layers() == {_digest("x")}
    db.close()


def test_repair_reconciles_both_directions(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with Store.open(work, durable=False) as store:
        kept = _commit_layer(store, "kept")
        lost = _commit_layer(store, "lost")
        store.record_image(_image("uses-lost", [kept, lost], ("r:lost",)))
        store.record_image(_image("uses-kept", [kept], ("r:kept",)))
    # A layer dir with no row (crash between rename and DB write) ...
    orphan = work / "layers" / "sha256" / _digest("orphan").hex
    (orphan / "diff").mkdir(parents=True)
    (orphan / "diff" / "f").write_bytes(b"x" * 5000)
    # ... a row whose dir vanished, a staging leftover, and debris.
    remove_tree(lost.path.parent)
    (work / "staging" / f"sha256-{_digest('dead').hex}.0123").mkdir()
    (work / "staging" / "junk").write_bytes(b"")
    (work / "layers" / "sha256" / "not-a-digest").mkdir()

    with Store.open(work, durable=False) as store:
        report = store.repair()  # open() already repaired: nothing left to do
        assert not report.changed
        assert store.layer(kept.diff_id) == kept
        assert store.layer(lost.diff_id) is None
        assert store.find_image("r:lost") is None  # it cannot be served without its layer
        assert store.find_image("r:kept") is not None
        assert not orphan.exists()
        assert os.listdir(work / "staging") == []
        assert os.listdir(work / "layers" / "sha256") == [kept.diff_id.hex]
        again = _commit_layer(store, "lost")
        assert again.diff_id == lost.diff_id


def test_repair_report_counts(tmp_path: Path) -> None:
    work = tmp_path / "work"
    Store.open(work, durable=False).close()
    (work / "staging" / f"sha256-{_digest('dead').hex}.0123" / "diff").mkdir(parents=True)
    orphan = work / "layers" / "sha256" / _digest("orphan").hex / "diff"
    orphan.mkdir(parents=True)
    (orphan / "f").write_bytes(b"x" * 8192)
    # Built without open(), so that this repair() is the first and its report shows the counts.
    store = Store(LayerLayout(work), MetadataDB.open(work / "metadata.db"), DEFAULT_LIMITS, durable=False)
    report = store.repair()
    assert report.staging_removed == 1
    assert report.orphan_layer_dirs_removed == 1
    assert report.bytes_freed >= 8192
    assert store.repair() == type(report)()
    store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a whiteout needs root")
def test_prune_removes_whiteouts(store: Store) -> None:
    diff_id = _digest("whiteouts")
    with store.acquire_layer(diff_id) as slot:
        assert slot.staging is not None
        os.mknod(slot.staging / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
        slot.commit(0)
    assert store.prune().layers_removed == 1
    assert store.layer(diff_id) is None


def test_remove_tree_handles_read_only_and_deep_trees(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_bytes(b"keep")
    # Read-only and mode-000 directories, a symlink to a directory outside, a fifo and a hard link.
    (root / "ro" / "inner").mkdir(parents=True)
    (root / "ro" / "inner" / "f").write_bytes(b"data")
    os.link(root / "ro" / "inner" / "f", root / "hardlink")
    (root / "ro" / "inner").chmod(0o000)
    (root / "ro").chmod(0o500)
    os.symlink(outside, root / "link-out")
    os.mkfifo(root / "fifo")
    # Deeper than the removal keeps descriptors for (and than PATH_MAX lets a path name).
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(300):
        os.mkdir("d" * 30, dir_fd=fd)
        child = os.open("d" * 30, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    with os.fdopen(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o400, dir_fd=fd), "wb") as leaf:
        leaf.write(b"leaf")
    os.close(fd)
    freed = remove_tree(root)
    assert not root.exists()
    assert freed > 0
    assert (outside / "canary").read_bytes() == b"keep"
    assert remove_tree(root) == 0


def test_layer_missing_dir_is_not_served(store: Store) -> None:
    layer = _commit_layer(store, "vanishing")
    remove_tree(layer.path.parent)
    assert store.layer(layer.diff_id) is None
    # Acquiring it again stages afresh and the commit replaces the stale row.
    again = _commit_layer(store, "vanishing", b"again")
    assert store.layer(layer.diff_id) == again
    assert hashlib.sha256((again.path / "file").read_bytes()).hexdigest() == hashlib.sha256(b"again").hexdigest()


_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _source(label: str, media_type: str = _GZIP, key_check: str = "") -> BlobSource:
    return BlobSource(str(_digest(f"blob-{label}")), 100, media_type, key_check)


def _commit_from(store: Store, diff_id: Digest, source: BlobSource, content: bytes) -> LayerRecord:
    with store.acquire_layer(diff_id, source) as slot:
        assert slot.existing is None
        assert slot.staging is not None
        (slot.staging / "file").write_bytes(content)
        return slot.commit(len(content))


def test_a_layer_is_reused_only_for_a_source_the_store_verified(store: Store) -> None:
    diff_id = _digest("secret-layer")
    honest = _source("enc", f"{_GZIP}+encrypted", key_check="check-of-the-right-key")
    layer = _commit_from(store, diff_id, honest, b"plaintext")
    with store.acquire_layer(diff_id, honest) as slot:
        assert slot.existing == layer
    # SECURITY: the same diff_id from any other source is not handed out: the caller must download and verify.
    borrowers = [
        BlobSource(honest.digest, honest.size, _GZIP),  # the same blob, said to be unencrypted
        BlobSource(honest.digest, honest.size, honest.media_type, "check-of-the-attackers-key"),  # another key
        _source("attacker"),  # another blob
        BlobSource(honest.digest, honest.size + 1, honest.media_type, honest.key_check),  # another size
    ]
    for borrower in borrowers:
        with store.acquire_layer(diff_id, borrower) as slot:
            assert slot.existing is None
            assert slot.staging is not None
            (slot.staging / "file").write_bytes(b"attacker bytes that failed verification")
            # no commit: verification failed
        assert store.verified_layer(borrower) is None
    # the committed layer is untouched by the failed attempts
    assert (layer.path / "file").read_bytes() == b"plaintext"
    assert store.layer(diff_id) == layer
    assert not os.listdir(store.work_dir / "staging")


def test_a_fully_verified_second_source_keeps_the_layer_and_is_recorded(store: Store) -> None:
    diff_id = _digest("shared")
    first, second = _source("gzip"), _source("zstd", "application/vnd.oci.image.layer.v1.tar+zstd")
    layer = _commit_from(store, diff_id, first, b"same content")
    with store.acquire_layer(diff_id, second) as slot:
        assert slot.existing is None
        assert slot.staging is not None
        (slot.staging / "file").write_bytes(b"same content")
        assert slot.commit(12) == layer  # the committed layer stays (bundles may use it)
    assert store.verified_layer(second) == layer
    with store.acquire_layer(diff_id, second) as slot:
        assert slot.existing == layer
    assert (layer.path / "file").read_bytes() == b"same content"
    assert not os.listdir(store.work_dir / "staging")
