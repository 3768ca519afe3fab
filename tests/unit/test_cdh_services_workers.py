"""The CDH's service layer runs PullImage and the other hub calls in worker threads of their own (issue 11;
guest-components.md §14 item 18: upstream serialises pulls behind one mutex).

Through :class:`CdhServices`' real handlers with a hub whose ``pull_image`` blocks until released (the hub's own
behaviour is covered end to end in tests/rpc_interop/test_cdh_pull.py and test_cdh_concurrent_pull.py):

* more held pulls than Python's default worker pool has threads (at most 32) do not hold up GetResource;
* pulls run concurrently up to ``Limits.cdh_max_concurrent_pulls`` and the next one waits for a free worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

from cocoguest.cdh.hub import PulledImage
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc.services.cdh import GET_RESOURCE_SERVICE, IMAGE_PULL_SERVICE, CdhServices

HELD_PULLS = 34
"""More than the default executor's largest pool (min(32, cpus + 4)), so shared workers would all be held."""


class HeldHub:
    """``pull_image`` blocks until :attr:`release` is set; ``get_resource`` answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def pull_image(self, image_url: str, bundle_path: Path) -> PulledImage:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            assert self.release.wait(60), "never released"
        finally:
            with self._lock:
                self.running -= 1
        return PulledImage(f"sha256:{image_url[-1] * 64}", "OK")

    def get_resource(self, uri: str) -> bytes:
        return uri.encode()


async def _scenario(services: CdhServices, hub: HeldHub) -> tuple[bytes, list[bytes]]:
    handlers = services.handlers()
    pull = handlers[IMAGE_PULL_SERVICE]["PullImage"]
    get = handlers[GET_RESOURCE_SERVICE]["GetResource"]
    requests = [pb.ImagePullRequest(image_url=f"r/i:{n % 10}", bundle_path=f"/b{n}") for n in range(HELD_PULLS)]
    pulls = [asyncio.create_task(pull(r.SerializeToString())) for r in requests]
    try:
        expected = services.limits.cdh_max_concurrent_pulls
        for _ in range(1000):  # a condition polled for at most 10 s
            if hub.running >= expected:
                break
            await asyncio.sleep(0.01)
        assert hub.running == expected, f"{hub.running} pulls running, expected {expected} (the pull limit)"
        # Every pull worker is held (with shared workers, every default worker would be): GetResource answers.
        request = pb.GetResourceRequest(ResourcePath="kbs:///a/b/c").SerializeToString()
        try:
            answer = await asyncio.wait_for(get(request), 10)
        except TimeoutError:
            raise AssertionError("GetResource waited behind held pulls: the CDH's workers are shared") from None
    finally:
        hub.release.set()  # never leave worker threads blocked, whatever failed
    return answer, await asyncio.wait_for(asyncio.gather(*pulls), 60)


def test_held_pulls_do_not_hold_up_get_resource_and_run_up_to_the_limit() -> None:
    hub = HeldHub()
    services = CdhServices(hub)  # type: ignore[arg-type]  (a hub with the two methods used here)
    answer, pulled = asyncio.run(_scenario(services, hub))
    response = pb.GetResourceResponse()
    response.ParseFromString(answer)
    assert response.Resource == b"kbs:///a/b/c"
    assert len(pulled) == HELD_PULLS
    assert hub.most_running == DEFAULT_LIMITS.cdh_max_concurrent_pulls, "pulls ran concurrently up to the limit"


def test_the_pull_limit_is_the_callers() -> None:
    hub = HeldHub()
    limits = dataclasses.replace(DEFAULT_LIMITS, cdh_max_concurrent_pulls=3)
    services = CdhServices(hub, limits=limits)  # type: ignore[arg-type]
    asyncio.run(_scenario(services, hub))
    assert hub.most_running == 3
