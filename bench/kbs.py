"""Dev KBS throughput: RCAR handshakes/s and resource GETs/s (cached token), 1 and 16 concurrent clients.

Prints, asserts nothing. The server runs in its own process (as ``cocoguest kbs serve`` would; clients in the
same process would fight it for the GIL); clients are threads of this process, each with its own keep-alive
``http.client`` connection, the sample TEE and an EC P-256 TEE key. A GET counts when it answers 200 (the JWE is
not decrypted by the client, so the number measures the server). Targets (issue 10): >= 200 handshakes/s and
>= 1,000 GETs/s on the 2-core test machine.

    PYTHONPATH=src python bench/kbs.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk() -> dict[str, str]:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ECDH-ES+A256KW",
        "x": _b64u(pub.x.to_bytes(32, "big")),
        "y": _b64u(pub.y.to_bytes(32, "big")),
    }


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


def run(port: int, clients: int, seconds: float, mode: str) -> float:
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        key = _jwk()
        token = handshake(conn, key) if mode == "get" else ""
        while time.perf_counter() < stop:
            if mode == "handshake":
                handshake(conn, key)
            else:
                status, answer, _ = _call(
                    conn, "GET", "/kbs/v0/resource/default/key/k1", headers={"Authorization": f"Bearer {token}"}
                )
                assert status == 200, answer
            done[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "policy.rego").write_text('package policy\nimport rego.v1\nallow if data.plugin == "resource"\n')
        server = subprocess.Popen([sys.executable, "-c", _SERVER, tmp], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            setup = http.client.HTTPConnection("127.0.0.1", port)
            assert _call(setup, "POST", "/kbs/v0/resource/default/key/k1", b"k" * 32)[0] == 200
            for clients in (1, 16):
                hs = run(port, clients, args.seconds, "handshake")
                gets = run(port, clients, args.seconds, "get")
                print(f"dev KBS, {clients:2d} client(s): {hs:7.0f} RCAR handshakes/s   {gets:7.0f} resource GETs/s")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
