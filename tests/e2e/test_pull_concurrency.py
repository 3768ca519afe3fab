"""Concurrent pulls share the store and download each layer once; a pull killed with SIGKILL is repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import store_layer_dirs
from tests.fixtures.faulty_proxy import FaultyProxy
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


def _pull_process(ref: str, work: Path, bundle: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cocoguest", "pull", "--insecure-policy", "-q", "--tls-verify=false",
               "--snapshotter", "copy", "--work-dir", str(work), ref, str(bundle)]  # fmt: skip
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


def test_sigkill_mid_pull_is_repaired(image: WrittenImage, tmp_path: Path) -> None:
    work = tmp_path / "work"
    process = subprocess.Popen(
        [sys.executable, "-m", "cocoguest", "pull", "--insecure-policy", "-q", "--snapshotter", "copy",
         "--max-concurrent-downloads", "1", "--work-dir", str(work), f"oci:{image.path}", str(tmp_path / "b1")],
    )  # fmt: skip
    staging = work / "staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if staging.is_dir() and any(p.is_dir() and any(p.rglob("f*")) for p in staging.iterdir()):
            break
        time.sleep(0.005)
    if process.poll() is not None:
        pytest.skip("the pull finished before it could be killed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # the next command repairs: no staging leftovers, and only complete layers remain
    listed = subprocess.run([sys.executable, "-m", "cocoguest", "images", "--work-dir", str(work)],
                            capture_output=True, check=False)  # fmt: skip
    assert listed.returncode == 0, listed.stderr.decode()
    assert not staging.exists() or not any(staging.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "cocoguest", "pull", "--insecure-policy", "-q", "--snapshotter", "copy",
         "--work-dir", str(work), f"oci:{image.path}", str(tmp_path / "b2")],
        capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert len(store_layer_dirs(work)) == 3
    assert len(list((tmp_path / "b2" / "rootfs" / "d0").iterdir())) == 40
