"""Concurrent PullImage calls on one ``confidential-data-hub`` process are not serialised.

Upstream's CDH keeps one image client behind a mutex, so a pull waits for every pull before it
(guest-components.md §14 item 18). cocoguest runs each PullImage in its own worker thread and the store locks
per layer only. Proven here with real processes (the Go containerd/ttrpc peer as kata-agent, the
``attestation-agent`` and ``confidential-data-hub`` binaries, the dev KBS, Debian's docker-registry behind
:class:`tests.fixtures.faulty_proxy.FaultyProxy`, ``umoci unpack`` as the reference unpacker):

    * Pull A (image X) is held by the proxy in the middle of one of its layer blobs (the proxy reports it has
      sent part of the blob: no sleep decides anything). While A is held, pull B of image Y (another repository,
      other layers) completes with umoci's rootfs of Y. Then A is released; it resumes the blob and completes
      with umoci's rootfs of X. If pulls were serialised, B could not finish while A is held: the wait for B is
      bounded (:data:`BOUND_S`) and fails saying so.
    * On ONE ttrpc connection (as kata-agent holds it; cocoguest's own client), while pull A is held mid-layer,
      a GetResource and a pull of image Y on the same connection both complete; then A completes.
    * Two pulls of the same image into two bundles, the second started (its config blob served) while the first
      is held mid-layer, both succeed with equal rootfs trees (and equal to umoci's); the held layer is fetched
      only by the first pull (the held GET and its resume): the second waits on the layer's lock and reuses it.

Each test starts its own AA and CDH (a fresh image store), so every layer is really downloaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoguest.rpc.services.cdh_client import CdhClient
from tests.fixtures.cdh_guest import (
    ACCEPT,
    POLICY_ID,
    REGISTRIES_ID,
    go_pull,
    insecure_registries,
    running_guest,
    unmount_if_mounted,
)
from tests.fixtures.devkbs import DevKbs, dev_kbs
from tests.fixtures.faulty_proxy import Fault, FaultyProxy
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.registry import Registry, push_layout, start_registry
from tests.fixtures.umoci import assert_same_rootfs, skip_without_umoci, umoci_layers, umoci_unpack

pytestmark = [pytest.mark.interop, skip_without_umoci]

BOUND_S = 60.0
"""Longest wait for any step; a healthy run takes a few seconds."""
X_REPO, Y_REPO = "conc/x", "conc/y"


def y_layers() -> list[bytes]:
    """Image Y: two layers sharing nothing with :func:`umoci_layers` (image X)."""
    lower = (
        TarBuilder()
        .dir("srv", mode=0o755)
        .file("srv/data.bin", bytes(range(256)) * 64, mode=0o640, uid=7, gid=8)
        .symlink("srv/current", "data.bin")
        .build()
    )
    upper = TarBuilder().dir("etc", mode=0o755).file("etc/motd", b"image Y\n").whiteout("srv/current").build()
    return [lower, upper]


@dataclass
class World:
    """The host side, once per module: the KBS, the registry, images X and Y and umoci's rootfs of each."""

    kbs: DevKbs
    registry: Registry
    x: WrittenImage
    y: WrittenImage
    x_rootfs: Path
    y_rootfs: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("cdh-concurrent-pull")
    x = write_image_layout(base / "x", umoci_layers(), config_extra={"Cmd": ["/bin/sh"]})
    y = write_image_layout(base / "y", y_layers(), config_extra={"Cmd": ["/bin/true"]})
    assert not set(x.layer_digests) & set(y.layer_digests)
    (base / "kbs").mkdir()
    with dev_kbs(base / "kbs") as kbs, start_registry(base / "registry") as registry:
        push_layout(x.path, f"{registry.host}/{X_REPO}:v1")
        push_layout(y.path, f"{registry.host}/{Y_REPO}:v1")
        kbs.set_resource(POLICY_ID, ACCEPT)
        yield World(kbs, registry, x, y, umoci_unpack(x.path, base / "umoci-x"), umoci_unpack(y.path, base / "umoci-y"))


@pytest.fixture
def proxy(world: World) -> Iterator[FaultyProxy]:
    """The registry behind a fresh fault-injecting proxy; the KBS's registries.conf names the proxy (plain HTTP)."""
    with FaultyProxy(world.registry.host).running() as p:
        world.kbs.set_resource(REGISTRIES_ID, insecure_registries(p.host))
        yield p


@pytest.fixture
def guest(tmp_path: Path, world: World, proxy: FaultyProxy) -> Iterator[Path]:
    with running_guest(tmp_path / "guest", world.kbs.url) as sock:
        yield sock


def _stall_layer(world: World, proxy: FaultyProxy) -> tuple[Fault, str]:
    """Hold the first GET of X's bottom layer blob after half its bytes; (the fault, the blob's path)."""
    digest = world.x.layer_digests[0]
    size = (world.x.path / "blobs" / "sha256" / digest.removeprefix("sha256:")).stat().st_size
    path = f"/v2/{X_REPO}/blobs/{digest}"
    stall = Fault("stall", path=f"^{path}$", cut_after=size // 2)
    proxy.faults.append(stall)
    return stall, path


def _reach(fault: Fault, pull: Future[tuple[int, str, str]], proxy: FaultyProxy, what: str) -> None:
    """Wait until ``fault`` is reached; fail at once, with the pull's answer, if ``pull`` ends first."""
    for _ in range(int(BOUND_S / 0.05)):
        if fault.reached.wait(0.05):
            return
        if pull.done():
            seen = [f"{r.method} {r.path}" for r in proxy.log]
            pytest.fail(f"{what}: the pull ended first: {pull.result()}; the proxy saw {seen}")
    pytest.fail(f"{what}: not within {BOUND_S:.0f} s")


def _result(future: Future[tuple[int, str, str]], what: str) -> tuple[int, str, str]:
    try:
        return future.result(timeout=BOUND_S)
    except FutureTimeout:
        pytest.fail(f"{what} did not finish within {BOUND_S:.0f} s")


def test_a_pull_held_mid_layer_does_not_hold_back_a_pull_of_another_image(
    world: World, proxy: FaultyProxy, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stall, _ = _stall_layer(world, proxy)
    a_bundle, b_bundle = tmp_path / "a", tmp_path / "b"
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            a = pool.submit(go_pull, go_peer, guest, f"{proxy.host}/{X_REPO}:v1", a_bundle, request)
            _reach(stall, a, proxy, "pull A reaching its held layer blob")
            b = pool.submit(go_pull, go_peer, guest, f"{proxy.host}/{Y_REPO}:v1", b_bundle, request)
            try:
                b_code, b_message, b_digest = b.result(timeout=BOUND_S)
            except FutureTimeout:
                pytest.fail(
                    f"pulls are serialised: pull B ({Y_REPO}) did not finish within {BOUND_S:.0f} s "
                    f"while pull A ({X_REPO}) was held mid-layer"
                )
            assert b_code == 0, b_message
            assert not a.done(), "pull A ended while its layer blob was still held"
        finally:
            stall.release.set()  # also on failure, so the pool's threads end
        a_code, a_message, a_digest = _result(a, "pull A after its release")
    assert a_code == 0, a_message
    assert (a_digest, b_digest) == (world.x.manifest_digest, world.y.manifest_digest)
    assert_same_rootfs(b_bundle / "rootfs", world.y_rootfs)
    assert_same_rootfs(a_bundle / "rootfs", world.x_rootfs)


def test_two_concurrent_pulls_of_one_image_share_the_held_layer_and_give_equal_rootfs(
    world: World, proxy: FaultyProxy, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stall, layer_path = _stall_layer(world, proxy)
    image = f"{proxy.host}/{X_REPO}:v1"
    a_bundle, b_bundle = tmp_path / "a", tmp_path / "b"
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            a = pool.submit(go_pull, go_peer, guest, image, a_bundle, request)
            _reach(stall, a, proxy, "pull A reaching its held layer blob")
            # B's config blob GET is the first request after A's held one that only B makes.
            config_served = Fault("observe", path=f"^/v2/{X_REPO}/blobs/{world.x.config_digest}$")
            proxy.faults.append(config_served)
            b = pool.submit(go_pull, go_peer, guest, image, b_bundle, request)
            _reach(config_served, b, proxy, "pull B fetching the image config while A is held")
            assert not a.done(), "pull A ended while its layer blob was still held"
        finally:
            stall.release.set()
        a_code, a_message, _ = _result(a, "pull A after its release")
        b_code, b_message, _ = _result(b, "pull B")
    assert a_code == 0, a_message
    assert b_code == 0, b_message
    assert_same_rootfs(a_bundle / "rootfs", b_bundle / "rootfs")
    assert_same_rootfs(a_bundle / "rootfs", world.x_rootfs)
    held = proxy.requests_to(f"^{layer_path}$")
    assert len(held) == 2, f"the held layer was fetched {len(held)} times (expected: A's held GET and its resume)"
    assert held[1].headers.get("Range", "").startswith("bytes="), held[1].headers


async def _one_connection(world: World, proxy: FaultyProxy, guest: Path, tmp_path: Path, stall: Fault) -> None:
    async with await CdhClient.connect(f"unix://{guest}", timeout_s=BOUND_S) as client:
        a = asyncio.create_task(client.pull_image(f"{proxy.host}/{X_REPO}:v1", str(tmp_path / "a")))
        try:
            for _ in range(int(BOUND_S / 0.05)):
                if stall.reached.is_set() or a.done():
                    break
                await asyncio.sleep(0.05)  # polling the proxy's report, bounded
            assert stall.reached.is_set(), f"pull A did not reach its held layer blob (done: {a.done()})"
            try:
                resource = await asyncio.wait_for(client.get_resource(f"kbs:///{ONE_CONNECTION_ID}"), BOUND_S)
                b_digest = await asyncio.wait_for(
                    client.pull_image(f"{proxy.host}/{Y_REPO}:v1", str(tmp_path / "b")), BOUND_S
                )
            except TimeoutError:
                pytest.fail("a call on the connection of a held pull waited for it: calls are serialised")
            assert resource == ONE_CONNECTION_SECRET
            assert b_digest == world.y.manifest_digest
            assert not a.done(), "pull A ended while its layer blob was still held"
        finally:
            stall.release.set()
        assert await asyncio.wait_for(a, BOUND_S) == world.x.manifest_digest


ONE_CONNECTION_ID = "default/test/one-connection"
ONE_CONNECTION_SECRET = b"answered while a pull is held"


def test_on_one_connection_a_held_pull_holds_up_neither_get_resource_nor_another_pull(
    world: World, proxy: FaultyProxy, guest: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    world.kbs.set_resource(ONE_CONNECTION_ID, ONE_CONNECTION_SECRET)
    stall, _ = _stall_layer(world, proxy)
    for name in ("a", "b"):
        request.addfinalizer(lambda rootfs=tmp_path / name / "rootfs": unmount_if_mounted(rootfs))
    asyncio.run(_one_connection(world, proxy, guest, tmp_path, stall))
    assert_same_rootfs(tmp_path / "b" / "rootfs", world.y_rootfs)
    assert_same_rootfs(tmp_path / "a" / "rootfs", world.x_rootfs)
