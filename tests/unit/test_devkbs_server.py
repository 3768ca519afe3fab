"""The dev KBS's asyncio HTTP front end on real sockets: keep-alive and pipelining, the idle timeout, the
connection cap, unsupported methods, ``Expect: 100-continue``, and TLS (a stalled handshake holds nobody up)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.server import running
from cocoguest.limits import DEFAULT_LIMITS
from tests.fixtures.devkbs import DevKbs, dev_kbs

LIMITS = replace(DEFAULT_LIMITS, devkbs_socket_timeout_s=1.0, devkbs_max_connections=4)


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[DevKbs]:
    with dev_kbs(tmp_path, limits=LIMITS) as server:
        yield server


def _connect(kbs: DevKbs) -> socket.socket:
    host, port = kbs.server.addresses[0]
    return socket.create_connection((host, port), timeout=10)


def _read_until_closed(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_keep_alive_and_pipelining_answer_in_order_on_one_connection(kbs: DevKbs) -> None:
    with _connect(kbs) as s:
        s.sendall(
            b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        answer = _read_until_closed(s)
    assert answer.count(b"HTTP/1.1 ") == 3
    first, second, third = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ")
    assert second.startswith(b"404 ")
    assert b'"type":"https://github.com/confidential-containers/kbs/errors/InvalidRequestPath"' in second
    assert third.startswith(b"200 ")
    assert b"Connection: close" in third


def test_idle_connections_are_closed_and_do_not_block_others(kbs: DevKbs) -> None:
    with _connect(kbs) as idle, _connect(kbs) as trickle:
        trickle.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finishes its headers
        assert httpx.get(f"{kbs.url}/healthz").status_code == 200
        assert _read_until_closed(idle) == b""  # closed by the server after the timeout (recv returns)
        assert _read_until_closed(trickle) == b""


def test_connections_over_the_cap_are_closed_at_once(kbs: DevKbs) -> None:
    held = [_connect(kbs) for _ in range(LIMITS.devkbs_max_connections)]
    try:
        for s in held:  # all four are being served
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        with _connect(kbs) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert _read_until_closed(extra) == b""
    finally:
        for s in held:
            s.close()
    for _ in range(50):  # the server notices the closes asynchronously
        try:
            if httpx.get(f"{kbs.url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            continue
    else:
        pytest.fail("the server did not accept connections again")


def test_unknown_methods_and_expect_continue(kbs: DevKbs) -> None:
    with _connect(kbs) as s:
        s.sendall(b"PATCH /kbs/v0/auth HTTP/1.1\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 501 ")
    with _connect(kbs) as s:
        s.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"[]")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"AttestationError" in answer


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_and_a_stalled_handshake_holds_nobody_up(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = DevKbsConfig(
        sockets=(("127.0.0.1", 0),),
        certificate=cert,
        private_key=key,
        insecure_api=True,
        resource_dir=tmp_path / "repo",
        policy_path=tmp_path / "policy.rego",
        limits=LIMITS,
    )
    context = ssl.create_default_context(cafile=str(cert))
    with running(config) as server:
        assert server.url.startswith("https://")
        host, port = server.addresses[0]
        with socket.create_connection((host, port), timeout=10) as stalled:
            stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
            with httpx.Client(verify=context) as client:
                assert client.get(f"{server.url}/healthz").status_code == 200
                put = client.post(f"{server.url}/kbs/v0/resource/default/key/k1", content=b"k")
                assert put.status_code == 200
            assert _read_until_closed(stalled) == b""  # dropped after the handshake timeout
