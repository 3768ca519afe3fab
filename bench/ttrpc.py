"""Benchmark of cocoguest's ttrpc server against Go containerd/ttrpc's, through the same (our) client.

In one run it:

1. builds the Go peer (tests/ttrpc_peer, Debian's golang-github-containerd-ttrpc-dev, offline) and starts it
   as a server on a unix socket; starts our server (``TtrpcServer`` with the same ``Echo`` method) in a
   separate Python process, so neither server shares the client's event loop or GIL;
2. for each server and each connection count (``--connections``, default 1 and 64), opens that many
   ``TtrpcClient`` connections and runs one caller per connection, each making sequential unary ``Echo``
   calls with a ``--payload-bytes`` payload until ``--calls`` calls are done in total (after a warm-up);
3. repeats that ``--rounds`` times (ours and Go back to back in each round, alternating who goes first) and
   prints the medians of calls/s, p50 and p99 latency, and the median of the per-round ratios ours / Go;
4. the same for the AA's ``GetTeeType``: cocoguest's ``attestation-agent`` binary (sample attester, explicitly
   allowed) against the Go peer's fixed-answer ``GetTeeType`` (the ratio is the whole AA service path, protobuf
   parsing and the agent call included, against a Go handler doing no work);
5. ``GetToken("kbs")`` latency through the attestation agent against the test KBS (tests/fixtures/test_kbs.py):
   with a cached token, and with a full RCAR handshake on every call (a KBS whose tokens live 1 s, inside the
   refresh margin, so the AA never caches them).

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

from cocoguest.rpc.services.attestation_agent_client import AaClient
from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.server import CallContext, TtrpcServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fixtures import aa_binary, go_ttrpc_peer  # noqa: E402 - recipes shared with the tests
from tests.fixtures.test_kbs import TestKbs  # noqa: E402

SERVICE = "cocoguest.test.Peer"
AA_SERVICE = "attestation_agent.AttestationAgentService"
WARMUP_CALLS = 200
GET_TEE_TYPE_ANSWER = b"\x0a\x06sample"


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


async def _measure(
    server: str,
    sock: Path,
    connections: int,
    calls: int,
    payload: bytes,
    *,
    service: str = SERVICE,
    method: str = "Echo",
    expected: bytes | None = None,
) -> Result:
    """One scenario: ``connections`` clients, one sequential caller each, ``calls`` measured calls in total."""
    clients = [await TtrpcClient.connect(f"unix://{sock}") for _ in range(connections)]
    per_client = max(1, calls // connections)
    latencies: list[float] = []

    async def caller(client: TtrpcClient, count: int, record: bool) -> None:
        for _ in range(count):
            start = time.perf_counter()
            answer = await client.call(service, method, payload)
            if record:
                latencies.append(time.perf_counter() - start)
            assert answer == (payload if expected is None else expected)

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


@contextlib.contextmanager
def our_aa(sock: Path, config: Path | None = None) -> Iterator[None]:
    """cocoguest's attestation-agent binary on ``sock`` (sample attester explicitly allowed)."""
    extra = ["-c", str(config)] if config is not None else []
    with aa_binary.running_aa(f"unix://{sock}", "--allow-sample-attester", *extra):
        yield


def _ratios(rounds: list[dict[tuple[str, int], Result]], ours_name: str, go_name: str, connections: list[int]) -> None:
    """Medians over the rounds; each ratio is taken within a round (ours and Go measured back to back)."""
    print(f"\nmedians of {len(rounds)} rounds, {ours_name} / {go_name} (calls/s: higher is better)")
    for count in connections:
        for name in (ours_name, go_name):
            runs = [r[name, count] for r in rounds]
            print(
                f"{name:>8} {count:>3} conn  {statistics.median(x.rate for x in runs):>8.0f} calls/s"
                f"  p50 {statistics.median(x.percentile(0.5) for x in runs) * 1e3:7.3f} ms"
                f"  p99 {statistics.median(x.percentile(0.99) for x in runs) * 1e3:7.3f} ms"
            )
        ratios = sorted(r[ours_name, count].rate / r[go_name, count].rate for r in rounds)
        p50s = [r[ours_name, count].percentile(0.5) / r[go_name, count].percentile(0.5) for r in rounds]
        print(
            f"{'ratio':>8} {count:>3} conn  calls/s {statistics.median(ratios):5.2f}x"
            f" (rounds: {', '.join(f'{x:.2f}' for x in ratios)})  p50 {statistics.median(p50s):5.2f}x"
        )


def _compare(
    servers: dict[str, Path], args: argparse.Namespace, request: bytes, expected: bytes | None, **call: str
) -> None:
    """Measure every server at every connection count, ``--rounds`` times, ours and Go interleaved."""
    rounds: list[dict[tuple[str, int], Result]] = []
    for index in range(args.rounds):
        results: dict[tuple[str, int], Result] = {}
        for connections in args.connections:
            # Alternate who goes first, so a burst of load from other work does not always hit the same side.
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for name in order:
                measure = _measure(name, servers[name], connections, args.calls, request, expected=expected, **call)
                result = asyncio.run(measure)
                results[name, connections] = result
                if args.verbose:
                    _print(result)
        rounds.append(results)
    ours, go = servers
    _ratios(rounds, ours, go, args.connections)


def _get_tee_type(work: Path, binary: Path, args: argparse.Namespace) -> None:
    print("\nGetTeeType through the AA service")
    socks = {"ours-aa": work / "ours-aa.sock", "go-aa": work / "go-aa.sock"}
    with our_aa(socks["ours-aa"]), go_ttrpc_peer.go_server(binary, socks["go-aa"]):
        # GetTeeTypeRequest{} serializes to no bytes.
        _compare(socks, args, b"", GET_TEE_TYPE_ANSWER, service=AA_SERVICE, method="GetTeeType")


async def _token_latencies(sock: Path, calls: int) -> list[float]:
    latencies: list[float] = []
    async with await AaClient.connect(f"unix://{sock}") as client:
        await client.get_token("kbs")  # warm-up (the first handshake)
        for _ in range(calls):
            start = time.perf_counter()
            await client.get_token("kbs")
            latencies.append(time.perf_counter() - start)
    return latencies


def _get_token(work: Path, calls: int) -> None:
    print("\nGetToken(kbs) through attestation-agent against the test KBS")
    for label, lifetime in (("cached token", 300), ("full RCAR handshake", 1)):
        with TestKbs(token_lifetime_s=lifetime).running() as kbs:
            config = work / f"aa-{lifetime}.toml"
            config.write_text(f'[token_configs.kbs]\nurl = "{kbs.url}"\n')
            sock = work / f"aa-token-{lifetime}.sock"
            with our_aa(sock, config):
                latencies = sorted(asyncio.run(_token_latencies(sock, calls)))
            attestations = kbs.attestations
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"  {label:<20} {calls} calls  p50 {p50 * 1e3:8.3f} ms  p99 {p99 * 1e3:8.3f} ms"
            f"  (KBS attestations: {attestations})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="measured calls per scenario")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--payload-bytes", type=int, default=16)
    parser.add_argument("--token-calls", type=int, default=200, help="GetToken calls per token scenario")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per scenario (medians are reported)")
    parser.add_argument("--only", nargs="+", choices=["echo", "tee", "token"], default=["echo", "tee", "token"])
    parser.add_argument("--verbose", action="store_true", help="print every round's numbers")
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
    with tempfile.TemporaryDirectory(prefix="bench-ttrpc-") as tmp:
        work = Path(tmp)
        binary = go_ttrpc_peer.build(work)
        if "echo" in args.only:
            print("Echo through the bare server")
            socks = {"ours": work / "ours.sock", "go": work / "go.sock"}
            with our_server(socks["ours"]), go_ttrpc_peer.go_server(binary, socks["go"]):
                _compare(socks, args, payload, None)
        if "tee" in args.only:
            _get_tee_type(work, binary, args)
        if "token" in args.only:
            _get_token(work, args.token_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
