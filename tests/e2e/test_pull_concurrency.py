"""Concurrent pulls share the store and download each layer once; a pull killed with SIGKILL is repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import store_layer_dirs
from tests.fixtures.faulty_proxy import Fault, FaultyProxy
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.registry import Registry, push_layout, start_registry

pytestmark = pytest.mark.interop


def _big_layer(seed: int, files: int = 40, size: int = 256 * 1024) -> bytes:
    builder = TarBuilder().dir(f"d{seed}")
    for i in range(files):
        builder.file(f"d{seed}/f{i}", os.urandom(size))
    return builder.build()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> WrittenImage:
    return write_image_layout(
        tmp_path_factory.mktemp("img") / "layout",
        [_big_layer(0), _big_layer(1), _big_layer(2)],
        config_extra={"Cmd": ["/bin/sh"]},
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, image: WrittenImage) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("reg")) as reg:
        push_layout(image.path, f"{reg.host}/test/big:1")
        yield reg


def _pull_process(ref: str, work: Path, bundle: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cocoguest", "pull", "--insecure-policy", "-q", "--tls-verify=false",
               "--snapshotter", "copy", "--work-dir", str(work), *extra, ref, str(bundle)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_concurrent_pulls_download_each_layer_once(registry: Registry, image: WrittenImage, tmp_path: Path) -> None:
    with FaultyProxy(registry.host).running() as proxy:
        ref = f"{proxy.host}/test/big:1"
        work = tmp_path / "work"
        first = _pull_process(ref, work, tmp_path / "b1")
        second = _pull_process(ref, work, tmp_path / "b2")
        for process in (first, second):
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err.decode()
        for digest in image.layer_digests:
            assert len(proxy.requests_to(f"/blobs/{digest}")) == 1, digest
    assert len(store_layer_dirs(work)) == 3
    for bundle in ("b1", "b2"):
        assert len(list((tmp_path / bundle / "rootfs" / "d2").iterdir())) == 40


def _stall_last_layer(image: WrittenImage, at: int) -> Fault:
    """A fault that stops the last layer's blob after ``at`` bytes (once) and holds the connection."""
    return Fault("stall", path=f"/blobs/{image.layer_digests[-1]}$", cut_after=at)


def _wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    """Poll ``condition`` until it holds; the pull is stalled by the proxy, so it cannot finish first."""
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, f"the pull ended ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(process: subprocess.Popen[bytes]) -> None:
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()


def test_sigkill_mid_pull_is_repaired(registry: Registry, image: WrittenImage, tmp_path: Path) -> None:
    work = tmp_path / "work"
    staging = work / "staging"
    stall = _stall_last_layer(image, at=5 * 1024 * 1024)  # half of the layer: its staging dir has files
    with FaultyProxy(registry.host, faults=[stall]).running() as proxy:
        ref = f"{proxy.host}/test/big:1"
        process = _pull_process(ref, work, tmp_path / "b1")
        assert stall.reached.wait(60), "the pull never reached the last layer"
        _wait_for(lambda: staging.is_dir() and any(p.is_dir() and any(p.rglob("f*")) for p in staging.iterdir()),
                  "a partly unpacked layer in staging", process)  # fmt: skip
        _kill(process)
        # the next command repairs: no staging leftovers, and only complete layers remain
        listed = subprocess.run([sys.executable, "-m", "cocoguest", "images", "--work-dir", str(work)],
                                capture_output=True, check=False)  # fmt: skip
        assert listed.returncode == 0, listed.stderr.decode()
        assert not staging.exists() or not any(staging.iterdir())
        assert len(store_layer_dirs(work)) < 3
        done = _pull_process(ref, work, tmp_path / "b2")
        _, err = done.communicate(timeout=120)
        assert done.returncode == 0, err.decode()
    assert len(store_layer_dirs(work)) == 3
    assert len(list((tmp_path / "b2" / "rootfs" / "d0").iterdir())) == 40


def test_sigkill_mid_bundle_leaves_no_partial_bundle_and_a_retry_succeeds(
    registry: Registry, image: WrittenImage, tmp_path: Path
) -> None:
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    stall = _stall_last_layer(image, at=1000)
    with FaultyProxy(registry.host, faults=[stall]).running() as proxy:
        ref = f"{proxy.host}/test/big:1"
        process = _pull_process(ref, work, bundle, "--max-concurrent-downloads", "1")
        assert stall.reached.wait(60), "the pull never reached the last layer"
        # layers 0 and 1 are merged into the rootfs (wherever the pull builds it) while layer 2 is stalled
        _wait_for(lambda: any(len(list(d.iterdir())) == 40 for d in tmp_path.glob("*/rootfs/d1")),
                  "the first two layers merged", process)  # fmt: skip
        _kill(process)
        assert not bundle.exists()  # no partial rootfs, no bundle without config.json
        retry = _pull_process(ref, work, bundle)
        _, err = retry.communicate(timeout=120)
        assert retry.returncode == 0, err.decode()
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]
    for layer in ("d0", "d1", "d2"):
        assert len(list((bundle / "rootfs" / layer).iterdir())) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "work"]  # the killed build was cleaned up
