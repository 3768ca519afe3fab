"""The ``api-server-rest`` binary through a REAL attestation-agent process and the test KBS.

The AA runs with the sample attester explicitly allowed (no TEE here); the CDH side is the GetResource
ttrpc service of tests/fixtures/asr_binary.py, which fetches from the test KBS with the real AA's token.
Every route is exercised over real HTTP on loopback, with its status codes for bad input.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fixtures.aa_binary import running_aa
from tests.fixtures.asr_binary import RunningAsr, running_asr, running_cdh_for_asr
from tests.fixtures.test_kbs import TestKbs, sample_evidence

pytestmark = pytest.mark.interop

SECRET = b"workload secret \x00\xff"


@pytest.fixture(scope="module")
def kbs() -> Iterator[TestKbs]:
    with TestKbs(resources={"default/key/one": SECRET}).running() as server:
        yield server


@pytest.fixture(scope="module")
def stack(kbs: TestKbs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAsr]:
    """AA process + CDH (the real binary when present) + api-server-rest process (``-f all``)."""
    tmp = tmp_path_factory.mktemp("asr")
    config = tmp / "aa.toml"
    config.write_text(f'[token_configs.kbs]\nurl = "{kbs.url}"\n\n[eventlog_config]\nenable_eventlog = false\n')
    aa_address = f"unix://{tmp}/aa.sock"
    with (
        running_aa(aa_address, "-c", str(config), "--allow-sample-attester", env={"ENABLE_SAMPLE_DEVICE": "1"}),
        running_cdh_for_asr(tmp, kbs.url, aa_address) as cdh_address,
        running_asr("-b", "127.0.0.1:0", "-f", "all", "-a", aa_address, "-c", cdh_address) as asr,
    ):
        yield asr


def _request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str | None, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_info_lists_version_tees_and_feature(stack: RunningAsr) -> None:
    asr = stack
    status, content_type, body = _request(asr.url, "GET", "/info")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "version": "0.1.0",
        "tee": "sample",
        "additional_tees": ["sampledevice"],
        "feature": "all",
    }


def test_token_is_the_aa_token_json(stack: RunningAsr, kbs: TestKbs) -> None:
    asr = stack
    status, content_type, body = _request(asr.url, "GET", "/aa/token?token_type=kbs")
    assert (status, content_type) == (200, "application/octet-stream")
    document = json.loads(body)
    assert set(document) == {"token", "tee_keypair"}
    assert kbs.attestations >= 1


def test_evidence_raw_and_base64(stack: RunningAsr) -> None:
    asr = stack
    status, content_type, body = _request(asr.url, "GET", "/aa/evidence?runtime_data=hello%20world")
    assert (status, content_type) == (200, "application/octet-stream")
    assert body == sample_evidence(b"hello world")
    data = bytes(range(40))
    encoded = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    status, _, body = _request(asr.url, "GET", f"/aa/evidence?runtime_data={encoded}&encoding=base64")
    assert (status, body) == (200, sample_evidence(data))


def test_additional_evidence(stack: RunningAsr) -> None:
    asr = stack
    status, _, body = _request(asr.url, "GET", "/aa/additional-evidence?runtime_data=abc")
    assert status == 200
    assert json.loads(body) == {"sampledevice": {"svn": "2", "report_data": base64.b64encode(b"abc").decode()}}


def test_aael_answers_as_upstream(stack: RunningAsr) -> None:
    asr = stack
    event = json.dumps({"domain": "github.com/test", "operation": "Op", "content": "c d"}).encode()
    status, content_type, body = _request(asr.url, "POST", "/aa/aael", event, {"Content-Type": "application/json"})
    assert (status, content_type) == (200, "application/json")
    # The AA runs without an event log: upstream's exact NOT_ENABLED answer.
    assert body == b'{"success":"false","message": "Attestation Agent does not enable eventlog recording"}'


def test_cdh_resource_through_the_aa_token_and_the_kbs(stack: RunningAsr, kbs: TestKbs) -> None:
    asr = stack
    before = kbs.resource_gets
    status, content_type, body = _request(asr.url, "GET", "/cdh/resource/default/key/one")
    assert (status, content_type, body) == (200, "application/octet-stream", SECRET)
    assert kbs.resource_gets == before + 1


def test_cdh_error_is_500_with_the_backend_text(stack: RunningAsr) -> None:
    asr = stack
    status, _, body = _request(asr.url, "GET", "/cdh/resource/default/key/absent")
    assert status == 500
    assert b"[CDH] [ERROR]" in body
    assert b"default/key/absent" in body


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/aa/token", 400),
        ("GET", "/aa/evidence", 400),
        ("GET", "/aa/evidence?runtime_data=abc&encoding=hex", 400),
        ("GET", "/aa/evidence?runtime_data=!!!&encoding=base64", 400),
        ("GET", "/aa/additional-evidence", 400),
        ("GET", "/nowhere", 404),
        ("GET", "/aa/nowhere", 404),
        ("GET", "/cdh/resource/default/key", 404),
        ("GET", "/cdh/resource/a/b/c/d", 404),
        ("GET", "/cdh/other/a/b/c", 404),
        ("GET", "/cdh/resource/de%2F../key/one", 400),
        ("POST", "/info", 405),
        ("POST", "/aa/token?token_type=kbs", 405),
        ("GET", "/aa/aael", 405),
        ("DELETE", "/cdh/resource/default/key/one", 405),
    ],
)
def test_status_codes_for_bad_input(stack: RunningAsr, method: str, path: str, expected: int) -> None:
    asr = stack
    status, _, _ = _request(asr.url, method, path)
    assert status == expected


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"domain":"d","operation":"o"}', b'{"domain":1,"operation":"o","content":"c"}']
)
def test_malformed_aael_body_is_400(stack: RunningAsr, body: bytes) -> None:
    asr = stack
    status, _, text = _request(asr.url, "POST", "/aa/aael", body)
    assert status == 400
    assert text.startswith(b"Illegal AAEL entry format")


def test_spoofed_forwarded_headers_are_ignored(stack: RunningAsr) -> None:
    asr = stack
    headers = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"}
    status, _, _ = _request(asr.url, "GET", "/info", headers=headers)
    assert status == 200  # the socket peer is loopback; headers neither grant nor deny


def test_openapi_document_is_served(stack: RunningAsr) -> None:
    asr = stack
    status, content_type, body = _request(asr.url, "GET", "/openapi.json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["info"]["title"] == "api-server-rest"


def test_oversized_and_malformed_requests(stack: RunningAsr) -> None:
    asr = stack
    status, _, _ = _request(asr.url, "POST", "/aa/aael", b"x" * (64 * 1024 + 1))
    assert status == 413
    parts = urlsplit(asr.url)
    for raw, expected in (
        (b"GET /info HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", b" 431 "),
        (b"GARBAGE\r\n\r\n", b" 400 "),
        (b"POST /aa/aael HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b" 501 "),
    ):
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
            s.sendall(raw)
            answer = s.recv(4096)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1")
        assert expected in status_line


def test_features_select_the_backends(tmp_path: Path, kbs: TestKbs) -> None:
    config = tmp_path / "aa.toml"
    config.write_text(f'[token_configs.kbs]\nurl = "{kbs.url}"\n')
    aa_address = f"unix://{tmp_path}/aa.sock"
    with (
        running_aa(aa_address, "-c", str(config), "--allow-sample-attester"),
        running_asr("-b", "127.0.0.1:0", "-f", "attestation", "-a", aa_address, "-c", f"unix://{tmp_path}/none") as asr,
    ):
        assert _request(asr.url, "GET", "/cdh/resource/default/key/one")[::2] == (404, b"Resource Feature Not Enabled")
        info = json.loads(_request(asr.url, "GET", "/info")[2])
        assert info == {"version": "0.1.0", "tee": "sample", "feature": "attestation"}
        status, err = asr.stop()
    assert status == 0, err


def test_resource_feature_without_aa(tmp_path: Path, kbs: TestKbs) -> None:
    with (
        running_cdh_for_asr(tmp_path, kbs.url, f"unix://{tmp_path}/no-aa.sock") as cdh_address,
        running_asr("-b", "127.0.0.1:0", "-a", f"unix://{tmp_path}/no-aa.sock", "-c", cdh_address) as asr,
    ):
        assert _request(asr.url, "GET", "/aa/token?token_type=kbs")[::2] == (404, b"Attestation Feature Not Enabled")
        assert json.loads(_request(asr.url, "GET", "/info")[2]) == {"version": "0.1.0", "feature": "resource"}


def test_unreachable_backend_stops_start_up(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"did not start \(status 1\).*error: .*no-cdh\.sock"),
        running_asr("-b", "127.0.0.1:0", "-c", f"unix://{tmp_path}/no-cdh.sock"),
    ):
        pass
