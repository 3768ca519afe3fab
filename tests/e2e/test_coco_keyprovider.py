"""The ``coco-keyprovider`` binary against a real dev KBS (tests/fixtures/devkbs.py) on loopback.

WrapKey is called through cocoguest's ocicrypt gRPC client (the same path ``cocoguest copy`` takes); the KEK the
provider registered is then fetched back from the KBS by the INDEPENDENT RCAR client of tests/fixtures/devkbs.py
(attested with sample evidence) and used with pyca's AES-GCM to open the returned AnnotationPacket.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.ocicrypt.keyprovider.protocol import (
    ProviderFailedError,
    build_unwrap_request,
    build_wrap_request,
    parse_wrap_response,
)
from cocoguest.rpc.keyprovider_client import GrpcTransport
from tests.fixtures.coco_keyprovider import coco_keyprovider, keyprovider_command
from tests.fixtures.devkbs import DevKbs, RcarClient, TeeKey, dev_kbs

OPTIONS = b'{"cipher":"AES_256_CTR_HMAC_SHA256","cipheroptions":{"symkey":"a2V5"}}'


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[DevKbs]:
    with dev_kbs(tmp_path) as server:
        yield server


def wrap(address: str, params: str) -> dict[str, str]:
    request = build_wrap_request({"attestation-agent": [params.encode()]}, OPTIONS)
    answer = GrpcTransport("attestation-agent", address, DEFAULT_LIMITS).call("wrap", request)
    packet: dict[str, str] = json.loads(parse_wrap_response(answer, "attestation-agent"))
    return packet


def kbs_resource(kbs: DevKbs, path: str) -> bytes:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    try:
        answer = client.attest()
        assert answer.status_code == 200, answer.text
        resource = client.get_resource(path)
        assert resource.status_code == 200, resource.text
        return client.key.decrypt(resource.content)
    finally:
        client.close()


def test_wrapkey_registers_the_kek_in_the_kbs(kbs: DevKbs) -> None:
    with coco_keyprovider("--kbs", kbs.url, "-a", str(kbs.admin_key_file)) as provider:
        packet = wrap(provider.address, "keyid=kbs:///default/image-kek/k1::algorithm=A256GCM")
    assert packet["kid"] == "kbs:///default/image-kek/k1"
    kek = kbs_resource(kbs, "default/image-kek/k1")
    assert len(kek) == 32
    sealed, iv = base64.b64decode(packet["wrapped_data"]), base64.b64decode(packet["iv"])
    assert AESGCM(kek).decrypt(iv, sealed, None) == OPTIONS


def test_concurrent_wraps_each_register_their_own_kek(kbs: DevKbs) -> None:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with coco_keyprovider("--kbs", kbs.url, "-a", str(kbs.admin_key_file)) as provider, ThreadPoolExecutor(8) as pool:
        packets = list(pool.map(lambda i: wrap(provider.address, f"keyid=/default/image-kek/c{i}"), range(16)))
    for i, packet in enumerate(packets):
        kek = kbs_resource(kbs, f"default/image-kek/c{i}")
        sealed, iv = base64.b64decode(packet["wrapped_data"]), base64.b64decode(packet["iv"])
        assert AESGCM(kek).decrypt(iv, sealed, None) == OPTIONS


def test_without_the_admin_key_the_kbs_refusal_is_named(kbs: DevKbs) -> None:
    with coco_keyprovider("--kbs", kbs.url) as provider, pytest.raises(ProviderFailedError) as info:
        wrap(provider.address, "keyid=/default/image-kek/k2")
    message = str(info.value)
    assert "FAILED_PRECONDITION" in message
    assert "default/image-kek/k2" in message
    assert "HTTP 401" in message


def test_bad_params_are_invalid_argument_naming_them(kbs: DevKbs) -> None:
    provider_args = ("--kbs", kbs.url, "-a", str(kbs.admin_key_file))
    with coco_keyprovider(*provider_args) as provider, pytest.raises(ProviderFailedError) as info:
        wrap(provider.address, "keyid=/default/image-kek/k3::algorithm=A128KW")
    assert "INVALID_ARGUMENT" in str(info.value)
    assert "algorithm='A128KW'" in str(info.value)


def test_unwrapkey_is_unimplemented(kbs: DevKbs) -> None:
    with coco_keyprovider("--kbs", kbs.url) as provider:
        transport = GrpcTransport("attestation-agent", provider.address, DEFAULT_LIMITS)
        with pytest.raises(ProviderFailedError, match="UNIMPLEMENTED"):
            transport.call("unwrap", build_unwrap_request({}, b"{}"))


def test_an_oversized_request_is_refused_and_the_server_keeps_serving(kbs: DevKbs) -> None:
    with coco_keyprovider("--kbs", kbs.url, "-a", str(kbs.admin_key_file)) as provider:
        huge = build_wrap_request(
            {"attestation-agent": [b""]}, b"x" * (DEFAULT_LIMITS.keyprovider_server_max_request_bytes + 1)
        )
        with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED"):
            GrpcTransport("attestation-agent", provider.address, DEFAULT_LIMITS).call("wrap", huge)
        assert wrap(provider.address, "keyid=/default/image-kek/after")["kid"].endswith("/after")


def test_sigterm_stops_it_with_status_0(kbs: DevKbs) -> None:
    with coco_keyprovider("--kbs", kbs.url) as provider:
        assert provider.stop() == 0


def test_auth_key_without_kbs_is_one_error_line(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    result = subprocess.run([*keyprovider_command(), "-s", "127.0.0.1:0", "-a", str(key)], capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: --auth-private-key needs --kbs"


def test_daemon_mode_writes_pid_and_logs(kbs: DevKbs, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["-s", "127.0.0.1:0", "--kbs", kbs.url, "-a", str(kbs.admin_key_file), "-d", "--run-dir", str(run_dir)]
    result = subprocess.run([*keyprovider_command(), *args], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "listening on" not in _read(run_dir / "coco_keyprovider.err"):
        time.sleep(0.1)
    pid = int((run_dir / "coco_keyprovider.pid").read_text())
    try:
        address = _read(run_dir / "coco_keyprovider.err").split("listening on ", 1)[1].split()[0]
        (tmp_path / "kek").write_bytes(bytes(32))
        assert wrap(address, f"keypath={tmp_path / 'kek'}::keyid=/default/k/d")["kid"] == "kbs:///default/k/d"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
