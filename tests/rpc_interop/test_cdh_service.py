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
from tests.e2e.conftest import base_layer, top_layer
from tests.fixtures.aa_binary import running_aa
from tests.fixtures.cdh_binary import RunningCdh, running_cdh
from tests.fixtures.cli import run_cocoguest
from tests.fixtures.go_ttrpc_peer import unary_call
from tests.fixtures.oci_images import write_image_layout
from tests.fixtures.registry import push_layout, start_registry
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
    return unary_call(go_peer, sock, service, method, request)


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


# --- cocoguest cdh / cocoguest secret against the running CDH --------------------------------------------


def _tool(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cocoguest("cdh", "-s", f"unix://{sock}", *args)


def _assert_one_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_cdh_tool_get_resource(guest: Path) -> None:
    result = _tool(guest, "get-resource", "--resource-uri", "kbs:///default/key/one")
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip()) == b"resource one"
    _assert_one_error(_tool(guest, "get-resource", "-r", "kbs:///default/key/missing"), "default/key/missing")
    _assert_one_error(_tool(guest, "get-resource", "-r", "not-a-uri"), "GetResource")


def test_cdh_tool_unseal_secret(guest: Path, tmp_path: Path, signing: tuple[ec.EllipticCurvePrivateKey, bytes]) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(_seal(signing[0], "kbs:///default/sealed-key/pub", VAULT) + "\n")
    result = _tool(guest, "unseal-secret", "--secret-file", str(secret_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECRET.decode() + "\n"
    secret_file.write_text(_seal(signing[0], "no-such-kid", VAULT))
    _assert_one_error(_tool(guest, "unseal-secret", "--secret-file", str(secret_file)), "no-such-kid")
    _assert_one_error(_tool(guest, "unseal-secret", "--secret-file", str(tmp_path / "absent")), "absent")


def test_cdh_tool_unwrap_key(guest: Path) -> None:
    iv = os.urandom(12)
    packet = {
        "kid": "kbs:///default/key/kek",
        "wrapped_data": base64.b64encode(AESGCM(KEK).encrypt(iv, OPTIONS, None)).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": "A256GCM",
    }
    annotation = base64.b64encode(json.dumps(packet).encode()).decode()
    result = _tool(guest, "unwrap-key", "--annotation", annotation)
    assert result.returncode == 0, result.stderr
    assert bytes(json.loads(result.stdout)["keyunwrapresults"]["optsdata"]) == OPTIONS
    packet["kid"] = "kbs:///default/key/one"
    wrong = base64.b64encode(json.dumps(packet).encode()).decode()
    _assert_one_error(_tool(guest, "unwrap-key", "--annotation", wrong), "UnWrapKey")
    _assert_one_error(_tool(guest, "unwrap-key", "--annotation", "%%%"), "--annotation")


def test_cdh_tool_pull_image_refused_without_a_policy(guest: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    result = _tool(guest, "pull-image", "--image-url", "127.0.0.1:1/x:latest", "--bundle-path", str(bundle))
    _assert_one_error(result, "PullImage", "no signature policy configured")
    assert not bundle.exists()


def test_cdh_tool_secure_mount_invalid_request_is_one_error(guest: Path, tmp_path: Path) -> None:
    mount_point = tmp_path / "mnt"
    args = ("secure-mount", "--volume-type", "block-device", "--mount-point", str(mount_point))
    _assert_one_error(_tool(guest, *args), "SecureMount", "block-device")
    # Options and flags are sent; the CDH still refuses (no device options), nothing is mounted.
    _assert_one_error(_tool(guest, *args, "--option", "no-such-option=1", "--flag", "ro"), "SecureMount")
    assert not mount_point.exists()
    _assert_one_error(_tool(guest, *args, "--option", "missing-equals"), "--option", "missing-equals")


def test_cdh_tool_with_no_cdh_listening_is_one_error(tmp_path: Path) -> None:
    _assert_one_error(_tool(tmp_path / "none.sock", "get-resource", "-r", "kbs:///a/b/c"), "none.sock")


def test_secret_tool_keygen_seal_then_the_cdh_unseals(guest: Path, tmp_path: Path) -> None:
    """keygen + seal (the cocoguest secret tool) and the CDH's local key directory verify each other."""
    keys = tmp_path / "keys"
    result = run_cocoguest("secret", "keygen", "--kid", "tool-key", "--output-dir", str(keys))
    assert result.returncode == 0, result.stderr
    private = keys / "tool-key-private.json"
    assert private.stat().st_mode & 0o077 == 0
    key_dir = guest.parent / "sealed-keys"
    (key_dir / "tool-key").write_bytes((keys / "tool-key-public.json").read_bytes())
    sealed = run_cocoguest("secret", "seal", "--signing-kid", "tool-key", "--signing-jwk-path", str(private),
                           "vault", "--resource-uri", "kbs:///default/secret/plain")  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    secret_file = tmp_path / "sealed.txt"
    secret_file.write_text(sealed.stdout)
    result = _tool(guest, "unseal-secret", "--secret-file", str(secret_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECRET.decode() + "\n"
    # Signed by another key under the same kid: refused.
    other = run_cocoguest("secret", "keygen", "--kid", "tool-key", "--output-dir", str(tmp_path / "other"))
    assert other.returncode == 0, other.stderr
    forged = run_cocoguest("secret", "seal", "--signing-kid", "tool-key", "--signing-jwk-path",
                           str(tmp_path / "other" / "tool-key-private.json"), "vault", "--resource-uri",
                           "kbs:///default/secret/plain")  # fmt: skip
    secret_file.write_text(forged.stdout)
    _assert_one_error(_tool(guest, "unseal-secret", "--secret-file", str(secret_file)), "does not verify")


# --- PullImage from a real registry, policy and registries.conf from the KBS ------------------------------

POLICY_ID = "default/security-policy/test"
REGISTRIES_ID = "default/registry-configuration/conf"
ACCEPT = b'{"default":[{"type":"insecureAcceptAnything"}]}'
REJECT = b'{"default":[{"type":"reject"}]}'


@pytest.fixture(scope="module")
def registry_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain-HTTP docker-registry holding a two-layer image; yields its reference."""
    layout = tmp_path_factory.mktemp("layout") / "image"
    write_image_layout(layout, [base_layer(), top_layer()], config_extra={"Cmd": ["/bin/tool"]})
    with start_registry(tmp_path_factory.mktemp("registry")) as registry:
        push_layout(layout, f"{registry.host}/app:v1")
        yield f"{registry.host}/app:v1"


@pytest.fixture
def pull_guest(tmp_path: Path, kbs: TestKbs, registry_image: str) -> Iterator[tuple[Path, Path, RunningCdh]]:
    """An AA with its event log on and a CDH whose [image] takes the policy and registries.conf from the KBS;
    yields (CDH socket, AAEL path, CDH process)."""
    host = registry_image.split("/", maxsplit=1)[0]
    kbs.resources[REGISTRIES_ID] = f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'.encode()
    aa_sock, cdh_sock, aael = tmp_path / "aa.sock", tmp_path / "cdh.sock", tmp_path / "aa" / "eventlog"
    (tmp_path / "aa.toml").write_text(
        f'[token_configs.kbs]\nurl = "{kbs.url}"\n\n[eventlog_config]\nenable_eventlog = true\n'
    )
    (tmp_path / "cdh.toml").write_text(
        f'socket = "unix://{cdh_sock}"\n\n[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n\n'
        f'[aa]\naa_socket = "unix://{aa_sock}"\n\n[image]\nwork_dir = "{tmp_path / "work"}"\n'
        f'image_security_policy_uri = "kbs:///{POLICY_ID}"\n'
        f'registry_configuration_uri = "kbs:///{REGISTRIES_ID}"\n'
    )
    aa_args = ("-c", str(tmp_path / "aa.toml"), "--allow-sample-attester")
    with (
        running_aa(f"unix://{aa_sock}", *aa_args, env={"AAEL_PATH": str(aael)}),
        running_cdh(tmp_path / "cdh.toml", cdh_sock) as cdh,
    ):
        yield cdh_sock, aael, cdh


def _unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", str(path)], check=True, timeout=60)


def test_pull_image_from_a_registry_with_the_policy_from_the_kbs(
    pull_guest: tuple[Path, Path, RunningCdh],
    kbs: TestKbs,
    registry_image: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    sock, aael, _ = pull_guest
    kbs.resources[POLICY_ID] = ACCEPT
    bundle = tmp_path / "bundle"
    result = _tool(sock, "pull-image", "--image-url", registry_image, "--bundle-path", str(bundle))
    # The rootfs may be an overlay mount (root, overlay snapshotter): the container runtime's to unmount.
    request.addfinalizer(lambda: _unmount(bundle / "rootfs"))
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip()
    assert digest.startswith("sha256:")
    assert len(digest) == 71
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/bin/tool"]
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc" / "passwd").read_bytes().startswith(b"root:x:0:0")
    assert (rootfs / "data" / "new.txt").read_bytes() == b"new\n"
    assert (rootfs / "opaque" / "upper.txt").exists()
    assert not (rootfs / "data" / "old.txt").exists(), "the whiteout was applied"
    assert not (rootfs / "opaque" / "lower.txt").exists(), "the opaque directory was applied"
    # The CDH measured the pull through the AA after it succeeded: the AA's answer comes from its config
    # (event log enabled) and attester (the sample one has no register): NOT_SUPPORTED, not NOT_ENABLED. With a
    # TEE that has a register, the AA writes the event to its AAEL (tests/unit/test_attest_eventlog.py).
    status, err = pull_guest[2].stop()
    assert status == 0, err
    assert f"PullImage {registry_image} ({digest}): runtime measurement through the AA: NOT_SUPPORTED" in err
    assert not aael.exists()


def test_pull_image_with_a_reject_policy_is_refused_and_leaves_no_bundle(
    pull_guest: tuple[Path, Path, RunningCdh], kbs: TestKbs, registry_image: str, tmp_path: Path
) -> None:
    sock, _aael, _ = pull_guest
    kbs.resources[POLICY_ID] = REJECT
    bundle = tmp_path / "bundle"
    result = _tool(sock, "pull-image", "--image-url", registry_image, "--bundle-path", str(bundle))
    line = _assert_one_error(result, "PullImage", registry_image, "rejected")
    assert "polic" in line
    assert not bundle.exists()
    status, err = pull_guest[2].stop()
    assert status == 0, err
    assert "runtime measurement through the AA" not in err, "a refused pull is not measured"
