"""The layer store under concurrency and crashes: threads, processes, kill -9 mid-write and mid-commit, leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cocoguest.digest import Digest
from cocoguest.image.store import BlobSource, ImageRecord, LayerRecord, Store

# A pull in a separate process: open the store, acquire one layer, optionally stop at a chosen point.
_CHILD = r"""
import os, sys, time
from pathlib import Path
from cocoguest.digest import Digest
from cocoguest.image.store import Store

work, diff_id, mode = Path(sys.argv[1]), Digest.parse(sys.argv[2]), sys.argv[3]
markers, tag = Path(sys.argv[4]), sys.argv[5]

def mark(name):
    (markers / f"{tag}-{name}").write_text(str(os.getpid()))

def hang():
    time.sleep(600)

with Store.open(work, durable=False) as store:
    mark("opened")
    with store.acquire_layer(diff_id) as slot:
        if slot.existing is not None:
            print("existing", slot.existing.path, flush=True)
            sys.exit(0)
        mark("acquired")
        (slot.staging / "file").write_bytes(f"from {tag}".encode())
        (slot.staging / "dir").mkdir()
        if mode == "hang-staging":
            mark("written")
            hang()
        if mode == "wait-go":
            while not (markers / "go").exists():
                time.sleep(0.01)
        if mode == "hang-after-rename":
            slot._commit(6, after_rename=lambda: (mark("renamed"), hang()))
        else:
            slot.commit(6)
        print("committed", slot.committed.path, flush=True)
"""

_TIMEOUT_S = 60.0


def _spawn(work: Path, diff_id: Digest, mode: str, markers: Path, tag: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(work), str(diff_id), mode, str(markers), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + _TIMEOUT_S
    while not predicate():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"child exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=_TIMEOUT_S)
    assert proc.returncode == 0, err
    return out


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL


def _layer_dirs(work: Path) -> list[str]:
    return sorted(os.listdir(work / "layers" / "sha256"))


def test_two_threads_same_layer_unpack_once(tmp_path: Path) -> None:
    diff_id = Digest.of_bytes(b"threads")
    work_done: list[str] = []
    results: dict[str, LayerRecord | None] = {}
    first_has_slot = threading.Event()
    release_first = threading.Event()
    second_done = threading.Event()

    with Store.open(tmp_path / "work", durable=False) as store:

        def pull(name: str) -> None:
            with store.acquire_layer(diff_id) as slot:
                if name == "first":
                    first_has_slot.set()
                    assert release_first.wait(_TIMEOUT_S)
                if slot.existing is not None:
                    results[name] = slot.existing
                    return
                assert slot.staging is not None
                work_done.append(name)
                (slot.staging / "file").write_bytes(name.encode())
                results[name] = slot.commit(5)

        first = threading.Thread(target=pull, args=("first",))
        first.start()
        assert first_has_slot.wait(_TIMEOUT_S)

        def pull_second() -> None:
            pull("second")
            second_done.set()

        second = threading.Thread(target=pull_second)
        second.start()
        # The second waits for the first's lock (it would otherwise stage and commit on its own).
        assert not second_done.wait(0.3)
        assert "second" not in results
        release_first.set()
        first.join(_TIMEOUT_S)
        second.join(_TIMEOUT_S)

        assert work_done == ["first"]
        assert results["first"] == results["second"]
        record = results["first"]
        assert record is not None
        assert (record.path / "file").read_bytes() == b"first"
        assert os.listdir(store.work_dir / "staging") == []


def test_racing_pulls_of_one_diff_id_from_different_sources_each_verify(tmp_path: Path) -> None:
    """The second of two racing pulls waits for the first's lock, then does not get the layer for a source
    the store never verified: it must download and verify its own blob (issue 7, defect 2)."""
    diff_id = Digest.of_bytes(b"race")
    honest = BlobSource(str(Digest.of_bytes(b"enc-blob")), 9, "application/vnd.oci.image.layer.v1.tar+encrypted", "k1")
    other = BlobSource(honest.digest, honest.size, honest.media_type, "attackers-key")
    first_has_slot = threading.Event()
    release_first = threading.Event()
    seen: dict[str, bool] = {}

    with Store.open(tmp_path / "work", durable=False) as store:

        def pull(name: str, source: BlobSource) -> None:
            with store.acquire_layer(diff_id, source) as slot:
                if name == "first":
                    first_has_slot.set()
                    assert release_first.wait(_TIMEOUT_S)
                seen[name] = slot.existing is not None
                if slot.existing is None and name == "first":
                    assert slot.staging is not None
                    (slot.staging / "file").write_bytes(b"plaintext")
                    slot.commit(9)
                # "second" fails its verification: no commit

        first = threading.Thread(target=pull, args=("first", honest))
        first.start()
        assert first_has_slot.wait(_TIMEOUT_S)
        second = threading.Thread(target=pull, args=("second", other))
        second.start()
        release_first.set()
        first.join(_TIMEOUT_S)
        second.join(_TIMEOUT_S)
        assert seen == {"first": False, "second": False}
        assert store.verified_layer(other) is None
        layer = store.verified_layer(honest)
        assert layer is not None
        assert (layer.path / "file").read_bytes() == b"plaintext"
        assert os.listdir(store.work_dir / "staging") == []


def test_many_threads_many_layers(tmp_path: Path) -> None:
    layers = [Digest.of_bytes(f"layer-{i}".encode()) for i in range(6)]
    unpacked: list[Digest] = []
    mutex = threading.Lock()
    errors: list[BaseException] = []

    with Store.open(tmp_path / "work", durable=False) as store:

        def pull(index: int) -> None:
            try:
                mine = layers[index % 3 :] + layers[: index % 3]
                with store.lease():
                    records = []
                    for diff_id in mine:
                        with store.acquire_layer(diff_id) as slot:
                            if slot.existing is None:
                                assert slot.staging is not None
                                (slot.staging / "f").write_bytes(str(diff_id).encode())
                                with mutex:
                                    unpacked.append(diff_id)
                                records.append(slot.commit(1))
                            else:
                                records.append(slot.existing)
                    store.record_image(
                        ImageRecord(
                            Digest.of_bytes(f"manifest-{index}".encode()),
                            Digest.of_bytes(f"config-{index}".encode()),
                            (f"r:{index}",),
                            tuple(r.diff_id for r in records),
                            tuple(r.diff_id for r in records),
                            float(index),
                            "{}",
                            "linux/amd64",
                        )
                    )
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=pull, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(_TIMEOUT_S)
        assert errors == []
        assert sorted(unpacked) == sorted(layers)  # each layer unpacked exactly once
        assert len(store.images()) == 8
        assert _layer_dirs(store.work_dir) == sorted(d.hex for d in layers)


def test_two_processes_same_layer_second_blocks_then_sees_existing(tmp_path: Path) -> None:
    work, markers = tmp_path / "work", tmp_path / "markers"
    markers.mkdir()
    diff_id = Digest.of_bytes(b"processes")
    first = _spawn(work, diff_id, "wait-go", markers, "a")
    _wait_for((markers / "a-acquired").exists, "the first child's slot", first)
    second = _spawn(work, diff_id, "normal", markers, "b")
    try:
        # The second one's Store.open (and its repair) ran while the first held its staging directory ...
        _wait_for((markers / "b-opened").exists, "the second child's open", second)
        time.sleep(0.3)
        # ... and it is still waiting for the layer lock.
        assert second.poll() is None
        assert not (markers / "b-acquired").exists()
        (markers / "go").write_text("")
        out_first = _finish(first)
        out_second = _finish(second)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert out_first.startswith("committed ")
    assert out_second.startswith("existing ")
    assert out_first.split()[1] == out_second.split()[1]
    assert not (markers / "b-acquired").exists()
    with Store.open(work, durable=False) as store:
        record = store.layer(diff_id)
        assert record is not None
        assert (record.path / "file").read_bytes() == b"from a"
        assert os.listdir(work / "staging") == []


def test_racing_processes_commit_once(tmp_path: Path) -> None:
    work, markers = tmp_path / "work", tmp_path / "markers"
    markers.mkdir()
    diff_id = Digest.of_bytes(b"race")
    procs = [_spawn(work, diff_id, "normal", markers, f"p{i}") for i in range(4)]
    outputs = [_finish(p).split()[0] for p in procs]
    assert sorted(outputs) == ["committed", "existing", "existing", "existing"]
    assert _layer_dirs(work) == [diff_id.hex]


@pytest.mark.parametrize(
    ("mode", "marker", "left_in"),
    [("hang-staging", "written", "staging"), ("hang-after-rename", "renamed", "layers")],
)
def test_kill_9_holder_then_open_repairs(tmp_path: Path, mode: str, marker: str, left_in: str) -> None:
    work, markers = tmp_path / "work", tmp_path / "markers"
    markers.mkdir()
    diff_id = Digest.of_bytes(mode.encode())
    child = _spawn(work, diff_id, mode, markers, "k")
    try:
        _wait_for((markers / f"k-{marker}").exists, f"the child to reach {marker}", child)
    finally:
        _kill(child)
    # The crash left debris exactly where expected: a staging dir, or a layer dir without its DB row.
    if left_in == "staging":
        assert len(os.listdir(work / "staging")) == 1
        assert _layer_dirs(work) == []
    else:
        assert os.listdir(work / "staging") == []
        assert _layer_dirs(work) == [diff_id.hex]

    with Store.open(work, durable=False) as store:
        assert os.listdir(work / "staging") == []
        assert _layer_dirs(work) == []
        assert store.layer(diff_id) is None
        assert not store.repair().changed
        with store.acquire_layer(diff_id) as slot:
            assert slot.existing is None
            assert slot.staging is not None
            assert list(slot.staging.iterdir()) == []
            (slot.staging / "file").write_bytes(b"retry")
            record = slot.commit(5)
        assert store.layer(diff_id) == record
        assert (record.path / "file").read_bytes() == b"retry"


def test_kill_9_while_another_process_waits(tmp_path: Path) -> None:
    work, markers = tmp_path / "work", tmp_path / "markers"
    markers.mkdir()
    diff_id = Digest.of_bytes(b"waiter")
    first = _spawn(work, diff_id, "hang-staging", markers, "a")
    _wait_for((markers / "a-written").exists, "the first child's write", first)
    second = _spawn(work, diff_id, "normal", markers, "b")
    try:
        _wait_for((markers / "b-opened").exists, "the second child's open", second)
        assert len(os.listdir(work / "staging")) == 1  # a live holder's staging survives another's repair
        _kill(first)
        # The kernel drops the dead holder's lock; the waiter takes over, cleans up and unpacks.
        out = _finish(second)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert out.startswith("committed ")
    with Store.open(work, durable=False) as store:
        record = store.layer(diff_id)
        assert record is not None
        assert (record.path / "file").read_bytes() == b"from b"
        assert os.listdir(work / "staging") == []


def test_lease_keeps_prune_from_fresh_layers(tmp_path: Path) -> None:
    diff_id = Digest.of_bytes(b"leased")
    with Store.open(tmp_path / "work", durable=False) as store:
        prune_done = threading.Event()
        reports = []

        def prune() -> None:
            reports.append(store.prune())
            prune_done.set()

        with store.lease():
            with store.acquire_layer(diff_id) as slot:
                assert slot.staging is not None
                record = slot.commit(0)
            pruner = threading.Thread(target=prune)
            pruner.start()
            # Prune waits for the lease; without it the fresh, not yet used layer would be deleted here.
            assert not prune_done.wait(0.3)
            store.record_image(
                ImageRecord(
                    Digest.of_bytes(b"m"), Digest.of_bytes(b"c"), ("r:1",), (diff_id,), (diff_id,), 1.0, "{}", "l/a"
                )
            )
        pruner.join(_TIMEOUT_S)
        assert prune_done.is_set()
        assert reports[0].layers_removed == 0
        assert store.layer(diff_id) == record


def test_prune_skips_a_layer_being_acquired(tmp_path: Path) -> None:
    diff_id = Digest.of_bytes(b"busy")
    with Store.open(tmp_path / "work", durable=False) as store:
        with store.acquire_layer(diff_id) as slot:
            assert slot.staging is not None
            slot.commit(0)
        # Unused, but someone holds its lock (e.g. a pull that found it existing): prune leaves it.
        with store.acquire_layer(diff_id) as slot:
            assert slot.existing is not None
            done: list[int] = []
            pruner = threading.Thread(target=lambda: done.append(store.prune().layers_removed))
            pruner.start()
            pruner.join(_TIMEOUT_S)
            assert done == [0]
            assert store.layer(diff_id) is not None
        assert store.prune().layers_removed == 1


def test_processes_creating_the_store_at_once_all_open_it(tmp_path: Path) -> None:
    # The first opens race to switch the new DB to WAL; SQLite may answer "database is locked" at once.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from cocoguest.image.store import Store\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "Store.open(Path(sys.argv[1])).close()\n"
    )
    for attempt in range(3):
        work = tmp_path / f"work{attempt}"
        start = f"{time.time() + 1.0:.3f}"  # all start together, after their imports
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(work), start], stderr=subprocess.PIPE) for _ in range(8)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
