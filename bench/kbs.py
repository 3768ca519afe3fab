"""Dev KBS throughput: RCAR handshakes/s and resource GETs/s (cached token), 1 and 16 concurrent clients.

Prints, asserts nothing. The server runs in its own process (as ``cocoguest kbs serve`` would; clients in the
same process would fight it for the GIL); the clients are threads spread over ``--procs`` client processes
(default 2), each with its own keep-alive connection, the sample TEE and an EC P-256 TEE key. A handshake does the
real RCAR steps (auth, evidence bound to the nonce and key, attest, token); a GET counts when its answer is a JWE
that decrypts to the stored resource under the client's TEE key, as a guest does (so one client's rate is the
round trip a real client sees: server, client and two wake-ups). ``--client stdlib`` (default): ``http.client``
and cocoguest's JWE parsing and decryption (``kbs.protocol``, ``kbs.tee_key``); ``--client cocoguest``: the
whole cocoguest KBS client (``KbsClient``: kept-alive ``http.client`` connections, token cache, size caps and
deadlines). Each scenario is measured ``--repeat`` times with a fresh server process and the median is printed,
with the server's CPU time per operation (from /proc), so client-bound runs show as such. ``--baseline-src DIR``
also measures the server of another source tree (e.g. ``git archive <commit> src | tar -x -C DIR``),
interleaved, for before/after numbers.
Targets (issue 10): >= 200 handshakes/s and >= 1,000 GETs/s on the 2-core test machine.

    PYTHONPATH=src python bench/kbs.py [--seconds 3] [--repeat 3] [--procs 2] [--baseline-src DIR/src]
        [--client stdlib|cocoguest]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.protocol import parse_resource_response
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import TeeKeyPair

RESOURCE = b"k" * 32
"""The resource every GET fetches (``default/key/k1``)."""


class _SampleEvidence:
    """The ``sample`` attester as the KBS client's evidence source."""

    tee = "sample"

    def get_evidence(self, report_data: bytes) -> bytes:
        return json.dumps(SampleAttester().evidence(report_data)).encode()


def _call(
    http: http.client.HTTPConnection, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    http.request(method, path, body=body, headers=headers or {})
    answer = http.getresponse()
    return answer.status, answer.read(), answer.getheader("set-cookie") or ""


def handshake(http: http.client.HTTPConnection, key: dict[str, str]) -> str:
    request = json.dumps({"version": "0.4.0", "tee": "sample", "extra-params": ""}).encode()
    _, body_auth, set_cookie = _call(http, "POST", "/kbs/v0/auth", request)
    nonce = json.loads(body_auth)["nonce"]
    cookie = set_cookie.split(";")[0]
    rd = {"tee-pubkey": key, "nonce": nonce, "additional-evidence": ""}
    digest = hashlib.sha384(json.dumps(rd, sort_keys=True, separators=(",", ":")).encode()).digest()
    body = {
        "init-data": None,
        "runtime-data": {"nonce": nonce, "tee-pubkey": key},
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": base64.b64encode(digest).decode()},
            "additional_evidence": "",
        },
    }
    status, answer, _ = _call(http, "POST", "/kbs/v0/attest", json.dumps(body).encode(), {"Cookie": cookie})
    assert status == 200, answer
    return str(json.loads(answer)["token"])


def _stdlib_worker(port: int, mode: str, stop: float, done: list[int], i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    key = TeeKeyPair.generate()
    jwk = key.public_jwk()
    token = handshake(conn, jwk) if mode == "get" else ""
    while time.perf_counter() < stop:
        if mode == "handshake":
            handshake(conn, jwk)
        else:
            status, answer, _ = _call(
                conn, "GET", "/kbs/v0/resource/default/key/k1", headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 200, answer
            assert key.decrypt(parse_resource_response(answer, "k1"), "k1") == RESOURCE
        done[i] += 1
    conn.close()


def _cocoguest_worker(port: int, mode: str, stop: float, done: list[int], i: int) -> None:
    client = KbsClient(f"http://127.0.0.1:{port}", _SampleEvidence())
    uri = ResourceUri.parse("kbs:///default/key/k1")
    while time.perf_counter() < stop:
        if mode == "handshake":
            client.attest_now()
        else:
            assert client.get_resource(uri) == RESOURCE  # the first GET attests, the rest use the cached token
        done[i] += 1
    client.close()


_WORKERS = {"stdlib": _stdlib_worker, "cocoguest": _cocoguest_worker}


def _client_process(
    port: int, mode: str, stop: float, threads: int, client: str, out: multiprocessing.SimpleQueue[int]
) -> None:
    logging.disable(logging.WARNING)  # the sample attester warns on every use
    done = [0] * threads
    worker = _WORKERS[client]
    workers = [threading.Thread(target=worker, args=(port, mode, stop, done, i)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put(sum(done))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc; Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    port: int, server_pid: int, clients: int, seconds: float, mode: str, procs: int, client: str
) -> tuple[float, float]:
    """(operations/s, server CPU ms per operation) of ``clients`` connections spread over ``procs`` processes."""
    procs = max(1, min(procs, clients))
    context = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue[int] = context.SimpleQueue()
    start = time.perf_counter()
    cpu0 = _cpu_s(server_pid)
    stop = start + seconds
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    children = [context.Process(target=_client_process, args=(port, mode, stop, n, client, out)) for n in share]
    for child in children:
        child.start()
    total = sum(out.get() for _ in children)
    elapsed = time.perf_counter() - start
    cpu = _cpu_s(server_pid) - cpu0
    for child in children:
        child.join()
        assert child.exitcode == 0, f"client process failed ({child.exitcode})"
    return total / elapsed, 1000 * cpu / max(total, 1)


_SERVER = """
import sys
from pathlib import Path
from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.server import DevKbsServer
root = Path(sys.argv[1])
config = DevKbsConfig(sockets=(("127.0.0.1", 0),), insecure_http=True, insecure_api=True,
                      resource_dir=root / "repo", policy_path=root / "policy.rego")
server = DevKbsServer(config)
print(server.addresses[0][1], flush=True)
server.serve_forever()
"""


class _Server:
    """A dev KBS in its own process, from the source tree ``src`` (``None``: this interpreter's path)."""

    def __init__(self, root: Path, src: str | None) -> None:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = src
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        setup = http.client.HTTPConnection("127.0.0.1", self.port)
        assert _call(setup, "POST", "/kbs/v0/resource/default/key/k1", RESOURCE)[0] == 200
        setup.close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per scenario (the median is printed)")
    parser.add_argument("--procs", type=int, default=2, help="client processes the connections are spread over")
    parser.add_argument("--baseline-src", help="also measure the server of this source tree (interleaved)")
    parser.add_argument("--client", choices=sorted(_WORKERS), default="stdlib", help="the client (module docstring)")
    args = parser.parse_args()
    servers: dict[str, str | None] = {"current": None}
    if args.baseline_src:
        servers = {"baseline": args.baseline_src, **servers}
    results: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    print(f"load average at start: {os.getloadavg()[0]:.1f}; client: {args.client}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in servers:
            root = Path(tmp) / name
            root.mkdir()
            (root / "policy.rego").write_text('package policy\nimport rego.v1\nallow if data.plugin == "resource"\n')
        for _ in range(args.repeat):
            for name, src in servers.items():
                server = _Server(Path(tmp) / name, src)
                try:
                    for clients in (1, 16):
                        for mode in ("handshake", "get"):
                            result = run(
                                server.port, server.proc.pid, clients, args.seconds, mode, args.procs, args.client
                            )
                            results.setdefault((name, clients, mode), []).append(result)
                finally:
                    server.close()
    print(f"load average at end: {os.getloadavg()[0]:.1f}; median of {args.repeat} x {args.seconds:g} s")
    for (name, clients, mode), values in results.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        what = "RCAR handshakes/s" if mode == "handshake" else "resource GETs/s  "
        runs = " ".join(f"{v[0]:.0f}" for v in values)
        print(f"{name:8s} {clients:2d} client(s): {rate:7.0f} {what}  server CPU {cpu:5.2f} ms/op   (runs: {runs})")


if __name__ == "__main__":
    main()
