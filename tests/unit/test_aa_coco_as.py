"""GetToken("coco_as"): evidence for empty runtime data posted to a CoCo attestation service on loopback."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from cocoguest.attestation.agent import AttestationAgent
from cocoguest.attestation.config import AaConfig, CocoAsTokenConfig
from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.errors import AttestationError
from cocoguest.limits import Limits


class _Service(http.server.ThreadingHTTPServer):
    status = 200
    answer = b"eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
    requests: list[tuple[str, dict[str, object]]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Service

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)


@contextlib.contextmanager
def _service() -> Iterator[_Service]:
    server = _Service(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _agent(server: _Service, limits: Limits | None = None) -> AttestationAgent:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return AttestationAgent(
        SampleAttester(), config=AaConfig(coco_as=CocoAsTokenConfig(url)), limits=limits or Limits()
    )


def test_token_is_the_answer_verbatim_and_the_request_has_upstream_shape() -> None:
    with _service() as server:
        assert _agent(server).get_token("coco_as") == server.answer
    ((path, body),) = server.requests
    assert path == "/attestation"
    assert body["policy_ids"] == []
    (request,) = body["verification_requests"]  # type: ignore[misc]
    assert request["tee"] == "sample"
    encoded = request["evidence"]
    assert "=" not in encoded
    evidence = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert base64.b64decode(evidence["report_data"]) == b""  # upstream: evidence for EMPTY runtime data


def test_refusal_names_the_service_and_status() -> None:
    with _service() as server:
        server.status, server.answer = 403, b"policy denied the evidence"
        with pytest.raises(AttestationError, match=r"/attestation: HTTP 403: policy denied the evidence"):
            _agent(server).get_token("coco_as")


def test_oversized_answer_is_refused() -> None:
    with _service() as server:
        server.answer = b"x" * 5000
        with pytest.raises(AttestationError, match="over the 4096-byte limit"):
            _agent(server, Limits(aa_coco_as_max_response_bytes=4096)).get_token("coco_as")
