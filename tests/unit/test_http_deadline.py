"""The request deadline inside the connection (registry/http_deadline.py): over TLS and through a proxy.

A server that drips its status line and headers one byte every 0.2 s never trips httpx's per-read timeout; the
deadline must cut it off. Each test is bounded by pytest-timeout only to end a regression (no timing asserted).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cocoguest.errors import TransportError
from cocoguest.limits import Limits
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.docker import DockerSource
from cocoguest.registry.http import make_client
from cocoguest.registry.http_body import Deadline
from cocoguest.registry.http_deadline import DEADLINE_EXTENSION
from cocoguest.registry.types import RegistryEndpoint, TlsSettings
from tests.fixtures.hostile_registry import REPO, TAG, Answer, HostileRegistry
from tests.fixtures.registry import make_ca

_HONEST = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


@contextlib.contextmanager
def _tls_server(tmp_path: Path, *, drip: bool) -> Iterator[tuple[int, Path]]:
    """A TLS server on loopback answering every request honestly, or dripping its head until stopped."""
    ca = make_ca(tmp_path / "ca")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(ca.server_cert), str(ca.server_key))
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def serve_one(raw: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(65536)
            if not drip:
                conn.sendall(_HONEST)
                return
            for byte in b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 100_000:
                if stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                stop.wait(0.2)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(10)
            threading.Thread(target=serve_one, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), ca.ca_cert
    finally:
        stop.set()
        thread.join()
        listener.close()


def _client(port: int, ca: Path) -> httpx.Client:
    endpoint = RegistryEndpoint(host=f"127.0.0.1:{port}", tls=TlsSettings(ca_files=(ca,)))
    return make_client(endpoint, limits=Limits())


@pytest.mark.timeout(60)
def test_tls_still_works_through_the_deadline_streams(tmp_path: Path) -> None:
    with _tls_server(tmp_path, drip=False) as (port, ca), _client(port, ca) as client:
        request = client.build_request(
            "GET", f"https://127.0.0.1:{port}/v2/", extensions={DEADLINE_EXTENSION: Deadline(30)}
        )
        response = client.send(request)
    assert response.status_code == 200
    assert response.content == b"{}"


@pytest.mark.timeout(60)
def test_a_tls_server_dripping_its_head_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    deadline = Deadline(1)
    with _tls_server(tmp_path, drip=True) as (port, ca), _client(port, ca) as client:
        request = client.build_request(
            "GET", f"https://127.0.0.1:{port}/v2/", extensions={DEADLINE_EXTENSION: deadline}
        )
        with pytest.raises(httpx.TimeoutException):
            client.send(request)
    assert deadline.expired
    with pytest.raises(TransportError, match=r"within 1 s \(registry_request_deadline_s\)"):
        deadline.check("the probe")


@pytest.mark.timeout(60)
def test_a_proxy_dripping_the_head_is_cut_off_at_the_deadline() -> None:
    # The hostile server acts as the HTTP proxy (requests arrive in absolute form and match its routes); the
    # registry host itself is never contacted, so it need not exist.
    limits = Limits(
        registry_request_deadline_s=1,
        registry_retry_attempts=1,
        registry_retry_base_delay_s=0.01,
        registry_retry_max_delay_s=0.02,
    )
    proxy = HostileRegistry().route(
        r"GET .*/v2/.*/manifests/", Answer(200, {}, b"{}", drip_head_s=0.2, max_seconds=600)
    )
    with proxy.running():
        reference = ImageReference.parse(f"registry.invalid:5000/{REPO}:{TAG}")
        endpoint = RegistryEndpoint(host="registry.invalid:5000", insecure=True)
        env = {"HTTP_PROXY": f"http://{proxy.host}", "HTTPS_PROXY": f"http://{proxy.host}"}
        with (
            DockerSource(reference, endpoint, None, limits=limits, env=env) as source,
            pytest.raises(TransportError) as caught,
        ):
            source.get_manifest()
    assert proxy.requests_to(r"GET .*/manifests/")
    message = str(caught.value)
    assert f"http://registry.invalid:5000/v2/{REPO}/manifests/{TAG}" in message
    assert "within 1 s (registry_request_deadline_s)" in message
