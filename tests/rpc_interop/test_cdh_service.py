"""The ``confidential-data-hub`` binary driven by the Go containerd/ttrpc peer (kata-agent's role), talking to a
real ``attestation-agent`` process (sample attester explicitly allowed: no TEE here) and the test KBS.

Covers issue 11's acceptance: GetResource five times with one attestation (passport mode through the AA's
GetToken); UnsealSecret of a signed vault secret whose key is a KBS resource, and refusals of a tampered payload
and an unknown kid; UnWrapKey of an AnnotationPacket whose KEK is in the KBS; SecureMount answers UNIMPLEMENTED
until its hook is set.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc._generated import keyprovider_pb2 as kp
from tests.fixtures.aa_binary import running_aa
from tests.fixtures.cdh_binary import running_cdh
from tests.fixtures.test_kbs import TestKbs

pytestmark = pytest.mark.interop

KEK = bytes(range(32))
OPTIONS = b'{"symkey":"c2VjcmV0","cipheroptions":{}}'
SECRET = b"the vault secret"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A P-256 key and its public JWK, made with pyca directly (independent of the code under test)."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64u(numbers.x.to_bytes(32, "big")),
        "y": _b64u(numbers.y.to_bytes(32, "big")),
    }
    return key, json.dumps(jwk).encode()


def _seal(key: ec.EllipticCurvePrivateKey, kid: str, payload: dict[str, object]) -> str:
    header = _b64u(json.dumps({"alg": "ES256", "kid": kid}).encode())
    body = _b64u(json.dumps(payload).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"sealed.{header}.{body}.{_b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


VAULT = {
    "version": "0.1.0",
    "type": "vault",
    "name": "kbs:///default/secret/plain",
    "provider": "kbs",
    "provider_settings": {},
    "annotations": {},
}


@pytest.fixture(scope="module")
def signing() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    return _signing_key()


@pytest.fixture(scope="module")
def kbs(signing: tuple[ec.EllipticCurvePrivateKey, bytes]) -> Iterator[TestKbs]:
    resources = {
        "default/key/one": b"resource one",
        "default/key/kek": KEK,
        "default/sealed-key/pub": signing[1],
        "default/secret/plain": SECRET,
    }
    with TestKbs(resources=resources).running() as server:
        yield server


@pytest.fixture
def guest(tmp_path: Path, kbs: TestKbs) -> Iterator[Path]:
    """A running AA and CDH; yields the CDH socket path."""
    aa_sock = tmp_path / "aa.sock"
    (tmp_path / "aa.toml").write_text(f'[token_configs.kbs]\nurl = "{kbs.url}"\n')
    cdh_sock = tmp_path / "cdh.sock"
    key_dir = tmp_path / "sealed-keys"
    key_dir.mkdir()
    (tmp_path / "cdh.toml").write_text(
        f'socket = "unix://{cdh_sock}"\nsealed_secret_key_dir = "{key_dir}"\n\n'
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n\n[aa]\naa_socket = "unix://{aa_sock}"\n'
    )
    aa_args = ("-c", str(tmp_path / "aa.toml"), "--allow-sample-attester")
    with running_aa(f"unix://{aa_sock}", *aa_args), running_cdh(tmp_path / "cdh.toml", cdh_sock) as cdh:
        yield cdh_sock
        status, err = cdh.stop()
        assert status == 0, err
        assert not cdh_sock.exists()


def _go_call(go_peer: Path, sock: Path, service: str, method: str, request: bytes) -> tuple[int, str, bytes]:
    args = [str(go_peer), "-mode", "client", "-addr", str(sock), "-service", service, "-method", method]
    args += ["-payload-hex", request.hex(), "-timeout", "60s"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=90, check=True)
    answer = json.loads(result.stdout)
    return answer["code"], answer["message"], bytes.fromhex(answer["payload_hex"])


def test_get_resource_five_calls_one_attestation(guest: Path, kbs: TestKbs, go_peer: Path) -> None:
    before = kbs.attestations
    for _ in range(5):
        request = pb.GetResourceRequest(ResourcePath="kbs:///default/key/one").SerializeToString()
        code, message, payload = _go_call(go_peer, guest, "api.GetResourceService", "GetResource", request)
        assert code == 0, message
        answer = pb.GetResourceResponse()
        answer.ParseFromString(payload)
        assert answer.Resource == b"resource one"
    assert kbs.attestations - before == 1

    request = pb.GetResourceRequest(ResourcePath="kbs:///default/key/missing").SerializeToString()
    code, message, _ = _go_call(go_peer, guest, "api.GetResourceService", "GetResource", request)
    assert code == 13  # INTERNAL
    assert message.startswith("[CDH] [ERROR]: ")
    assert "default/key/missing" in message


def test_unseal_signed_vault_secret_and_refusals(
    guest: Path, go_peer: Path, signing: tuple[ec.EllipticCurvePrivateKey, bytes]
) -> None:
    key, _ = signing
    sealed = _seal(key, "kbs:///default/sealed-key/pub", VAULT)

    def unseal(secret: str) -> tuple[int, str, bytes]:
        request = pb.UnsealSecretInput(secret=secret.encode()).SerializeToString()
        return _go_call(go_peer, guest, "api.SealedSecretService", "UnsealSecret", request)

    code, message, payload = unseal(sealed)
    assert code == 0, message
    answer = pb.UnsealSecretOutput()
    answer.ParseFromString(payload)
    assert answer.plaintext == SECRET

    prefix, header, _body, signature = sealed.split(".")
    tampered_body = _b64u(json.dumps({**VAULT, "name": "kbs:///default/key/one"}).encode())
    code, message, _ = unseal(".".join([prefix, header, tampered_body, signature]))
    assert code == 13
    assert "does not verify" in message
    assert "kbs:///default/sealed-key/pub" in message

    code, message, _ = unseal(_seal(key, "unknown-kid", VAULT))
    assert code == 13
    assert "unknown-kid" in message
    assert "unknown kid" in message

    code, message, _ = unseal(f"sealed.fakejwsheader.{_b64u(json.dumps(VAULT).encode())}.fakesignature")
    assert code == 13, "the unsigned legacy form is refused unless verification is skipped"


def test_unwrap_key_of_an_annotation_packet_whose_kek_is_in_the_kbs(guest: Path, go_peer: Path) -> None:
    iv = os.urandom(12)
    packet = {
        "kid": "kbs:///default/key/kek",
        "wrapped_data": base64.b64encode(AESGCM(KEK).encrypt(iv, OPTIONS, None)).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": "A256GCM",
    }
    # What Go ocicrypt sends: the annotation ([]byte of the packet JSON) as base64 in the protocol JSON.
    annotation = base64.b64encode(json.dumps(packet).encode()).decode()
    protocol = {
        "op": "keyunwrap",
        "keywrapparams": {"ec": None, "optsdata": None},
        "keyunwrapparams": {"dc": {"Parameters": {}}, "annotation": annotation},
    }
    request = kp.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=json.dumps(protocol).encode())
    code, message, payload = _go_call(
        go_peer, guest, "keyprovider.KeyProviderService", "UnWrapKey", request.SerializeToString()
    )
    assert code == 0, message
    answer = kp.keyProviderKeyWrapProtocolOutput()
    answer.ParseFromString(payload)
    result = json.loads(answer.KeyProviderKeyWrapProtocolOutput)
    assert bytes(result["keyunwrapresults"]["optsdata"]) == OPTIONS

    packet["kid"] = "kbs:///default/key/one"  # a KEK that does not open it
    protocol["keyunwrapparams"]["dc"] = None  # type: ignore[index]
    protocol["keyunwrapparams"]["annotation"] = base64.b64encode(json.dumps(packet).encode()).decode()  # type: ignore[index]
    request = kp.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=json.dumps(protocol).encode())
    code, message, _ = _go_call(
        go_peer, guest, "keyprovider.KeyProviderService", "UnWrapKey", request.SerializeToString()
    )
    assert code == 13
    assert message.startswith("[CDH] [ERROR]: UnWrapKey")


def test_secure_mount_is_served_and_validates_before_touching_a_device(guest: Path, go_peer: Path) -> None:
    request = pb.SecureMountRequest(volume_type="block-device", mount_point="/mnt").SerializeToString()
    code, message, _ = _go_call(go_peer, guest, "api.SecureMountService", "SecureMount", request)
    assert code == 13  # INTERNAL, with the validation error: the CDH binary wires the secure-mount hook
    assert message.startswith("[CDH] [ERROR]: SecureMount")
