"""A layer with a cross-layer hardlink waits for its lower layers without holding a store lock, then retries;
chain IDs follow the OCI image spec."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from cocoguest.digest import Digest
from cocoguest.image.fs.whiteouts import WhiteoutFormat
from cocoguest.image.layer.fetch import LayerJob, LayerOutcome, pull_layer
from cocoguest.image.layer.lowers import LowerLayers, chain_ids
from cocoguest.image.layer.parallel import LayerCancelledError
from cocoguest.image.layout import OciLayoutImageSource
from cocoguest.image.store import Store
from cocoguest.image.store.layers import hold_layer_lock
from cocoguest.oci.descriptor import ImageManifest
from cocoguest.oci.image_name import LayoutImageName
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import write_image_layout


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = (Digest("sha256", hashlib.sha256(x).hexdigest()) for x in (b"a", b"b", b"c"))
    ab = hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = hashlib.sha256(f"sha256:{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, Digest("sha256", ab), Digest("sha256", abc)]
    assert chain_ids([]) == []


class _Watched(LowerLayers):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.waiting = threading.Event()

    def wait_below(self, index: int, cancel: threading.Event) -> list[Path]:
        self.waiting.set()
        return super().wait_below(index, cancel)


def test_upper_layer_waits_for_its_lower_layer_holding_no_lock(tmp_path: Path) -> None:
    base = TarBuilder().dir("etc").file("etc/file", b"lower\n").build()
    upper = TarBuilder().hardlink("link", "etc/file").build()
    image = write_image_layout(tmp_path / "image", [base, upper])
    source = OciLayoutImageSource(LayoutImageName.parse(f"oci:{image.path}:latest"))
    manifest = ImageManifest.from_bytes(source.get_manifest()[0])
    diff_ids = [Digest.parse(d) for d in image.diff_ids]
    chains = chain_ids(diff_ids)
    jobs = [LayerJob(i, d, diff_ids[i], chain_id=chains[i]) for i, d in enumerate(manifest.layers)]
    store = Store.open(tmp_path / "work", durable=False)
    lowers = _Watched(2)
    cancel = threading.Event()
    results: list[LayerOutcome | BaseException] = []

    def pull(job: LayerJob) -> LayerOutcome:
        return pull_layer(source, job, store, image="image", whiteouts=WhiteoutFormat.USER, cancel=cancel,
                          lowers=lowers)  # fmt: skip

    def upper_thread() -> None:
        try:
            results.append(pull(jobs[1]))
        except BaseException as e:  # noqa: BLE001  (reported below)
            results.append(e)

    thread = threading.Thread(target=upper_thread)
    thread.start()
    try:
        assert lowers.waiting.wait(timeout=30)
        # While it waits, it holds neither its diff_id's nor its chain ID's lock (no deadlock with other pulls).
        for key in (diff_ids[1], chains[1]):
            with hold_layer_lock(tmp_path / "work" / "locks" / f"sha256-{key.hex}.lock", blocking=False) as held:
                assert held is not None
        assert store.layer(diff_ids[1]) is None
        assert store.layer(chains[1]) is None
        pull(jobs[0])  # the lower layer commits and wakes it
    finally:
        cancel_after = threading.Timer(30, cancel.set)
        cancel_after.start()
        thread.join()
        cancel_after.cancel()
    (outcome,) = results
    assert isinstance(outcome, LayerOutcome)
    assert outcome.record.diff_id == chains[1]
    assert (outcome.record.path / "link").read_bytes() == b"lower\n"
    assert (outcome.record.path / "link").stat().st_ino == (outcome.record.path / "etc/file").stat().st_ino
    store.close()


def test_waiting_ends_when_the_pull_is_cancelled() -> None:
    lowers = LowerLayers(3)
    lowers.committed(0, Path("/layer0"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LayerCancelledError):
        lowers.wait_below(2, cancel)
    assert lowers.wait_below(1, cancel) == [Path("/layer0")]
    assert lowers.ready_below(2) is None
