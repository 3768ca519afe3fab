"""The dev KBS against an independent RCAR client (tests/fixtures/devkbs.py): issue 10 acceptance.

Resources with EC P-256, P-521, RSA-OAEP-256 and RSA1_5 TEE keys, by cookie and by Bearer token; each refusal
(wrong nonce, report data or key, old version, missing resource, deny-all, unauthenticated admin) the Trustee
way; garbage and oversized bodies do not stop the server.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.fixtures.devkbs import DevKbs, RcarClient, TeeKey, admin_token, b64u, dev_kbs, unb64u

ERR = "https://github.com/confidential-containers/kbs/errors/"


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[DevKbs]:
    with dev_kbs(tmp_path) as server:
        answer = server.admin("POST", "/kbs/v0/resource/default/key/k1", b"secret-bytes\x00\xff")
        assert answer.status_code == 200, answer.text
        yield server


def _refused(answer: httpx.Response, status: int, variant: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"type", "detail"}
    assert body["type"] == ERR + variant
    return str(body["detail"])


@pytest.mark.parametrize("kind", ["P-256", "P-521", "RSA-OAEP-256", "RSA1_5"])
@pytest.mark.parametrize("by", ["cookie", "bearer"])
def test_resource_released_encrypted_to_the_tee_key(kbs: DevKbs, kind: str, by: str) -> None:
    key = TeeKey.generate(kind)
    client = RcarClient(kbs.url, key)
    token = client.get_token()
    header = json.loads(unb64u(token.split(".")[0]))
    assert header["alg"] == "ES256"
    assert header["jwk"]["crv"] == "P-256"
    assert header["jwk"]["alg"] == "ES256"
    claims = json.loads(unb64u(token.split(".")[1]))
    assert claims["exp"] - claims["iat"] == 300
    assert claims["iss"] == "CoCo-Attestation-Service"
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"] == key.public_jwk()
    assert cpu0["ear.status"] == "contraindicated"  # no reference values: as Trustee's sample
    answer = client.get_resource("default/key/k1", by=by)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert key.decrypt(answer.content) == b"secret-bytes\x00\xff"
    client.close()


def test_attest_again_on_an_attested_cookie_returns_the_same_token(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    first = client.get_token()
    again = client.http.post("/kbs/v0/attest", content=b"{}", headers={"Cookie": f"kbs-session-id={client.cookie}"})
    assert again.json()["token"] == first


def test_wrong_nonce_is_refused(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    nonce = client.challenge()
    other = base64.b64encode(b"\x01" * 32).decode()
    detail = _refused(client.attest(client.attestation(other, evidence_nonce=other)), 401, "AttestationError")
    assert detail.startswith("Attestation error: RCAR handshake Attest failed")
    assert "nonce" in detail
    # the evidence bound to a different nonce than the runtime data
    detail = _refused(client.attest(client.attestation(nonce, evidence_nonce=other)), 401, "AttestationError")
    assert "REPORT_DATA" in detail


def test_wrong_report_data_is_refused(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    nonce = client.challenge()
    detail = _refused(client.attest(client.attestation(nonce, report_data=b"\x00" * 48)), 401, "AttestationError")
    assert "REPORT_DATA is different" in detail


def test_evidence_bound_to_another_public_key_is_refused(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    nonce = client.challenge()
    other = TeeKey.generate("P-256").public_jwk()
    _refused(client.attest(client.attestation(nonce, bound_key=other)), 401, "AttestationError")


def test_extra_jwk_members_break_the_binding_as_in_trustee(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    nonce = client.challenge()
    attestation = client.attestation(nonce, bound_key={**client.key.public_jwk(), "use": "enc"})
    attestation["runtime-data"]["tee-pubkey"]["use"] = "enc"  # type: ignore[index]
    _refused(client.attest(attestation), 401, "AttestationError")


def test_old_protocol_version_is_refused(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"), version="0.3.0")
    detail = _refused(client.auth(), 401, "AttestationError")
    assert detail == (
        "Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: "
        "expect =0.4.0 while the request is 0.3.0"
    )


def test_missing_resource_is_401_plugin_internal_error(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    client.get_token()
    _refused(client.get_resource("default/key/nope"), 401, "PluginInternalError")
    _refused(client.get_resource("default/key/..", by="bearer"), 401, "PluginInternalError")


def test_no_token_and_forged_token_are_refused(kbs: DevKbs) -> None:
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    assert (
        _refused(client.get_resource("default/key/k1", by="none"), 401, "TokenNotFound")
        == "Attestation Token not found"
    )
    token = client.get_token()
    head, claims, sig = token.split(".")
    forged = json.loads(unb64u(claims))
    forged["submods"]["cpu0"]["ear.status"] = "affirming"
    client.token = f"{head}.{b64u(json.dumps(forged).encode())}.{sig}"
    _refused(client.get_resource("default/key/k1", by="bearer"), 401, "TokenVerifierError")


def test_deny_all_policy_refuses(kbs: DevKbs) -> None:
    kbs.set_policy("deny_all.rego")
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    client.get_token()
    assert _refused(client.get_resource("default/key/k1"), 401, "PolicyDeny") == "Access denied by policy"


def test_default_policy_denies_the_sample_tee(kbs: DevKbs) -> None:
    kbs.set_policy("default.rego")
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    client.get_token()
    _refused(client.get_resource("default/key/k1"), 401, "PolicyDeny")


def test_affirming_policy_follows_reference_values(kbs: DevKbs) -> None:
    kbs.set_policy("affirming.rego")
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    client.get_token()
    _refused(client.get_resource("default/key/k1"), 401, "PolicyDeny")
    values = {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1}
    message = {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(json.dumps(values).encode()).decode()}
    assert kbs.admin("POST", "/kbs/v0/reference-value", json.dumps(message).encode()).status_code == 200
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    token = client.get_token()
    assert json.loads(unb64u(token.split(".")[1]))["submods"]["cpu0"]["ear.status"] == "affirming"
    assert client.key.decrypt(client.get_resource("default/key/k1").content) == b"secret-bytes\x00\xff"


def test_unauthenticated_admin_calls_are_refused(kbs: DevKbs) -> None:
    _refused(kbs.admin("POST", "/kbs/v0/resource/default/key/k2", b"x", token=None), 401, "AdminAuthInitialization")
    _refused(kbs.admin("DELETE", "/kbs/v0/resource/default/key/k1", token=None), 401, "AdminAuthInitialization")
    body = json.dumps({"policy": b64u(b"package policy\n")}).encode()
    _refused(kbs.admin("POST", "/kbs/v0/resource-policy", body, token=None), 401, "AdminAuthAccess")
    other = ed25519.Ed25519PrivateKey.generate()
    _refused(kbs.admin("POST", "/kbs/v0/resource-policy", body, token=admin_token(other)), 401, "AdminAuthAccess")
    _refused(
        kbs.admin("POST", "/kbs/v0/resource-policy", body, token=admin_token(kbs.admin_key, lifetime_s=-3600)),
        401,
        "AdminAuthAccess",
    )
    assert not (kbs.root / "repository/default/key/k2").exists()
    assert (kbs.root / "repository/default/key/k1").read_bytes() == b"secret-bytes\x00\xff"


def test_admin_resource_lifecycle_and_policy_uploads(kbs: DevKbs) -> None:
    assert kbs.admin("POST", "/kbs/v0/resource/r1/t.x/g-1", b"v1").status_code == 200
    assert (kbs.root / "repository/r1/t.x/g-1").read_bytes() == b"v1"
    assert kbs.admin("DELETE", "/kbs/v0/resource/r1/t.x/g-1").status_code == 200
    _refused(kbs.admin("DELETE", "/kbs/v0/resource/r1/t.x/g-1"), 401, "PluginInternalError")
    _refused(kbs.admin("POST", "/kbs/v0/resource/.hidden/a/b", b"x"), 401, "PluginInternalError")
    padded_b64 = base64.urlsafe_b64encode(b"package policy\n\n").decode()
    assert padded_b64.endswith("=")
    padded = json.dumps({"policy": padded_b64}).encode()
    _refused(kbs.admin("POST", "/kbs/v0/resource-policy", padded), 401, "SerdeError")
    broken = json.dumps({"policy": b64u(b"package policy\nallow if {")}).encode()
    _refused(kbs.admin("POST", "/kbs/v0/resource-policy", broken), 401, "ParsePolicyError")
    assert kbs.admin("GET", "/kbs/v0/resource-policy").json() == ["resource-policy"]
    _refused(kbs.admin("GET", "/kbs/v0/nosuchplugin/x"), 404, "PluginNotFound")
    assert httpx.get(f"{kbs.url}/healthz").status_code == 200
    assert "kbs_http_requests_total" in httpx.get(f"{kbs.url}/metrics").text
    assert httpx.post(f"{kbs.url}/metrics").status_code == 405


def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_and_oversized_bodies_do_not_stop_the_server(kbs: DevKbs) -> None:
    assert b"400" in _raw(kbs.url, b"\x16\x03\x01garbage\r\n\r\n")  # the stdlib answers in HTTP/0.9 form
    assert _raw(kbs.url, b"POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: nope\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = 2 * 1024 * 1024 + 1
    answer = _raw(kbs.url, b"POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % big + b"{" * 4096)
    assert answer.startswith(b"HTTP/1.1 413")
    with pytest.raises(httpx.HTTPError):  # the server closes without reading 3 MiB
        httpx.post(f"{kbs.url}/kbs/v0/attest", content=b"x" * (3 * 1024 * 1024)).raise_for_status()
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    for junk in (b"\xff\xfe", b"[]", b'{"version":"0.4.0"}', b"{" * 100_000, json.dumps({"a": "b" * 100}).encode()):
        assert client.http.post("/kbs/v0/auth", content=junk).status_code == 401
        assert client.http.post("/kbs/v0/attest", content=junk).status_code == 401
    client.challenge()
    assert client.attest(b"\x00garbage" and {"runtime-data": 5}).status_code == 401  # type: ignore[arg-type]
    token = client.get_token()
    assert token
    assert client.key.decrypt(client.get_resource("default/key/k1").content) == b"secret-bytes\x00\xff"
