"""Benchmark of cocoguest's ttrpc server against Go containerd/ttrpc's, through the same (our) client.

In one run it:

1. builds the Go peer (tests/ttrpc_peer, Debian's golang-github-containerd-ttrpc-dev, offline) and starts it
   as a server on a unix socket; starts our server (``TtrpcServer`` with the same ``Echo`` method) in a
   separate Python process, so neither server shares the client's event loop or GIL;
2. for each server and each connection count (``--connections``, default 1 and 64), opens that many
   ``TtrpcClient`` connections and runs one caller per connection, each making sequential unary ``Echo``
   calls with a ``--payload-bytes`` payload until ``--calls`` calls are done in total (after a warm-up);
3. prints calls/s, p50 and p99 latency per scenario, then the ratios ours / Go.

The client is the same for both servers, so the ratios compare the servers (the client's cost is in both).
Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.server import CallContext, TtrpcServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fixtures import go_ttrpc_peer  # noqa: E402 - the Go peer's build recipe is shared with the tests

SERVICE = "cocoguest.test.Peer"
WARMUP_CALLS = 200


@dataclass(frozen=True)
class Result:
    server: str
    connections: int
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _echo(request: bytes, _context: CallContext) -> bytes:
    return request


async def _serve(sock: str) -> None:
    server = TtrpcServer()
    server.register(SERVICE, {"Echo": _echo})
    await server.listen(f"unix://{sock}")
    print("ready", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def our_server(sock: Path) -> Iterator[None]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            msg = "our ttrpc server did not start"
            raise RuntimeError(msg)
        yield
    finally:
        process.terminate()
        process.wait()


async def _measure(server: str, sock: Path, connections: int, calls: int, payload: bytes) -> Result:
    clients = [await TtrpcClient.connect(f"unix://{sock}") for _ in range(connections)]
    per_client = max(1, calls // connections)
    latencies: list[float] = []

    async def caller(client: TtrpcClient, count: int, record: bool) -> None:
        for _ in range(count):
            start = time.perf_counter()
            answer = await client.call(SERVICE, "Echo", payload)
            if record:
                latencies.append(time.perf_counter() - start)
            assert answer == payload

    try:
        await asyncio.gather(*(caller(c, max(1, WARMUP_CALLS // connections), False) for c in clients))
        start = time.perf_counter()
        await asyncio.gather(*(caller(c, per_client, True) for c in clients))
        seconds = time.perf_counter() - start
    finally:
        for client in clients:
            await client.close()
    return Result(server, connections, per_client * connections, seconds, latencies)


def _print(result: Result) -> None:
    print(
        f"{result.server:>5} {result.connections:>5} conn  {result.rate:>9.0f} calls/s"
        f"  p50 {result.percentile(0.5) * 1e3:7.3f} ms  p99 {result.percentile(0.99) * 1e3:7.3f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="measured calls per scenario")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--payload-bytes", type=int, default=16)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    reason = go_ttrpc_peer.missing_reason()
    if reason is not None:
        print(f"Go peer unavailable: {reason}", file=sys.stderr)
        return 1
    payload = bytes(range(256)) * (args.payload_bytes // 256) + bytes(range(args.payload_bytes % 256))
    results: dict[tuple[str, int], Result] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ttrpc-") as tmp:
        work = Path(tmp)
        binary = go_ttrpc_peer.build(work)
        for name in ("ours", "go"):
            sock = work / f"{name}.sock"
            server = our_server(sock) if name == "ours" else go_ttrpc_peer.go_server(binary, sock)
            with server:
                for connections in args.connections:
                    result = asyncio.run(_measure(name, sock, connections, args.calls, payload))
                    results[name, connections] = result
                    _print(result)
    print("\nratios ours / go (calls/s: higher is better; latency: lower is better)")
    for connections in args.connections:
        ours, go = results["ours", connections], results["go", connections]
        print(
            f"{connections:>5} conn  calls/s {ours.rate / go.rate:5.2f}x"
            f"  p50 {ours.percentile(0.5) / go.percentile(0.5):5.2f}x"
            f"  p99 {ours.percentile(0.99) / go.percentile(0.99):5.2f}x"
            f"  (mean latency ours {statistics.fmean(ours.latencies) * 1e3:.3f} ms,"
            f" go {statistics.fmean(go.latencies) * 1e3:.3f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
