"""``cocoguest kbs``, ``cocoguest evidence`` and ``cocoguest pull --aa-kbc-params`` as a user runs them.

Every command runs as a subprocess (tests/fixtures/cli.py) against the test KBS on loopback
(tests/fixtures/test_kbs.py, independent of the client code). The encrypted image's layer keys are
AnnotationPackets built here with pyca's AES-GCM (guest-components.md §7.2), not with cocoguest's packet code.

This machine has no TEE: the sample attester is used only with ``--allow-sample-attester``; the tests that need
the "no TEE" refusal skip where a TEE is present.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.attestation.detect import Probes, detect_tee
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt.layer import encrypt_layer
from tests.e2e.conftest import base_layer, top_layer
from tests.fixtures.cli import run_cocoguest
from tests.fixtures.images import layer_blobs, replace_layer, tree_hash
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.test_kbs import TestKbs

RESOURCE = b"\x00secret resource \xff bytes\n"
KEK_ID = "default/image-kek/k1"
POLICY_ID = "default/security-policy/test"
ACCEPT = b'{"default":[{"type":"insecureAcceptAnything"}]}'
REJECT = b'{"default":[{"type":"reject"}]}'
AA_ANNOTATION = "org.opencontainers.image.enc.keys.provider.attestation-agent"

no_tee_here = pytest.mark.skipif(detect_tee(Probes()).tee is not None, reason="this machine has a TEE")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AA_KBC_PARAMS", "ENABLE_SAMPLE_DEVICE", "OCCLUM")}
    return {**env, **extra}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cocoguest(*args, env=_env(**env))


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_failed(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, nothing on stdout, exactly one ``error:`` line that contains every fragment; returns that line."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[TestKbs]:
    resources = {"default/test/res": RESOURCE, KEK_ID: secrets.token_bytes(32), POLICY_ID: ACCEPT}
    with TestKbs(resources=resources).running() as server:
        yield server


def kbs_cli(kbs: TestKbs, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("kbs", "--url", kbs.url, "--allow-sample-attester", *args)


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


# ------------------------------------------------------------------------------------------- cocoguest kbs


def test_attest_prints_the_token(kbs: TestKbs) -> None:
    result = kbs_cli(kbs, "attest")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = _jwt_claims(token)
    assert claims["iss"] == "CoCo-Attestation-Service"
    assert (kbs.auths, kbs.attestations, kbs.resource_gets) == (1, 1, 0)
    assert "sample attester in use" in result.stderr  # SECURITY: the sample attester warns on every use


@pytest.mark.parametrize("algorithm", ["ec256", "ec521", "rsa", "RSA1_5"])
def test_get_resource_prints_base64_of_the_plaintext(kbs: TestKbs, algorithm: str) -> None:
    result = kbs_cli(kbs, "--tee-key-algorithm", algorithm, "get-resource", "--path", "default/test/res")
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip(), validate=True) == RESOURCE
    assert kbs.attestations == 1


def test_get_resource_takes_a_kbs_uri(kbs: TestKbs) -> None:
    result = kbs_cli(kbs, "get-resource", "--path", "kbs:///default/test/res")
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout) == RESOURCE


RES = "resource kbs:///default/test/res"
OVERSIZED = 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("fault", "value", "fragments"),
    [
        ("encrypt_to_other_key", True, [RES, "not encrypted to this guest's TEE key"]),
        ("tamper_tag", True, [RES, "AES-GCM tag check failed"]),
        ("non_json_step", "resource", ["KBS resource", RES, "not valid JSON"]),
        ("oversized_bytes", OVERSIZED, ["KBS resource", f"answer of {OVERSIZED} bytes is larger than the limit"]),
        ("deny_status", 401, ["KBS resource", RES, "HTTP 401", "PolicyDeny", "Access denied by policy"]),
        ("deny_status", 403, ["KBS resource", RES, "HTTP 403", "PolicyDeny"]),
        ("non_json_step", "attest", ["KBS attest", "token answer", "not valid JSON"]),
        ("non_json_step", "auth", ["KBS auth", "challenge", "not valid JSON"]),
    ],
)
def test_each_kbs_fault_is_one_error_line_and_no_output(
    kbs: TestKbs, fault: str, value: object, fragments: list[str]
) -> None:
    setattr(kbs, fault, value)
    line = assert_failed(kbs_cli(kbs, "get-resource", "--path", "default/test/res"), *fragments)
    assert "internal error" not in line


def test_an_oversized_answer_is_refused_without_reading_it_all(kbs: TestKbs) -> None:
    kbs.oversized_bytes, kbs.oversized_declared = OVERSIZED, False  # no Content-Length: cut off while streaming
    assert_failed(kbs_cli(kbs, "get-resource", "--path", "default/test/res"), "larger than the limit of")
    assert kbs.oversized_bytes_sent < OVERSIZED


def test_a_missing_resource_names_it(kbs: TestKbs) -> None:
    assert_failed(kbs_cli(kbs, "get-resource", "--path", "default/test/absent"), "default/test/absent", "HTTP 401")


def test_a_bad_resource_path_is_refused_before_attesting(kbs: TestKbs) -> None:
    assert_failed(kbs_cli(kbs, "get-resource", "--path", "default/../x"), "default/../x")
    assert kbs.auths == 0


def test_kbs_needs_a_url() -> None:
    assert_failed(cli("kbs", "--allow-sample-attester", "attest"), "--url")


def test_an_unreachable_kbs_names_the_step_and_url() -> None:
    assert_failed(cli("kbs", "--url", "http://127.0.0.1:9", "--allow-sample-attester", "attest"), "auth", "127.0.0.1:9")


@no_tee_here
def test_without_allow_sample_attester_no_tee_is_an_error_naming_the_probes(kbs: TestKbs) -> None:
    line = assert_failed(cli("kbs", "--url", kbs.url, "attest"), "no TEE found", "--allow-sample-attester")
    for probe in ("tdx", "/dev/tdx_guest", "snp", "sev-guest", "tpm"):
        assert probe in line
    assert kbs.auths == 0


# ------------------------------------------------------------------------------------------- cocoguest evidence


def test_evidence_prints_sample_evidence_for_the_runtime_data() -> None:
    data = b"report data!"
    result = cli("evidence", "--allow-sample-attester", "--runtime-data", base64.b64encode(data).decode())
    assert result.returncode == 0, result.stderr
    tee, _, evidence = result.stdout.strip().partition(":")
    assert tee == "sample"
    document = json.loads(evidence)
    assert document == {"svn": "1", "report_data": base64.b64encode(data.ljust(64, b"\0")).decode()}


def test_evidence_lists_additional_devices() -> None:
    result = cli("evidence", "--allow-sample-attester", ENABLE_SAMPLE_DEVICE="1")
    assert result.returncode == 0, result.stderr
    assert [line.partition(":")[0] for line in result.stdout.splitlines()] == ["sample", "sampledevice"]


@pytest.mark.parametrize(
    ("runtime_data", "fragment"),
    [("not base64!", "not standard base64"), (base64.b64encode(bytes(65)).decode(), "65 bytes")],
)
def test_evidence_refuses_bad_runtime_data(runtime_data: str, fragment: str) -> None:
    assert_failed(cli("evidence", "--allow-sample-attester", "--runtime-data", runtime_data), fragment)


@no_tee_here
def test_evidence_without_a_tee_names_the_probes() -> None:
    assert_failed(cli("evidence"), "no TEE found (probed:", "/dev/tdx_guest")


# ------------------------------------------------------------------------------------------- pull through the KBS


class PacketWrapper:
    """The attestation-agent key provider's wrap, done by the test: AnnotationPacket v1, A256GCM with the KEK."""

    def __init__(self, kek: bytes, kid: str) -> None:
        self._kek = kek
        self._kid = kid

    @property
    def annotation_key(self) -> str:
        return AA_ANNOTATION

    def wrap(self, private_options: bytes) -> bytes:
        iv = secrets.token_bytes(12)
        sealed = AESGCM(self._kek).encrypt(iv, private_options, None)
        packet = {
            "kid": self._kid,
            "wrapped_data": base64.b64encode(sealed).decode(),
            "iv": base64.b64encode(iv).decode(),
            "wrap_type": "A256GCM",
        }
        return json.dumps(packet).encode()


def encrypt_image(plain: Path, encrypted: Path, kek: bytes, kid: str) -> None:
    """Copy the layout at ``plain`` to ``encrypted`` and encrypt every layer to an AnnotationPacket under ``kek``."""
    shutil.copytree(plain, encrypted)
    for index, (descriptor, data) in enumerate(layer_blobs(encrypted)):
        out = io.BytesIO()
        new = encrypt_layer(io.BytesIO(data), out, Descriptor.from_json(descriptor), [PacketWrapper(kek, kid)])
        replace_layer(encrypted, index, data=out.getvalue(), media_type=new.media_type, annotations=new.annotations)
    assert all(AA_ANNOTATION in d["annotations"] for d, _ in layer_blobs(encrypted))


@pytest.fixture
def plain_image(tmp_path: Path) -> WrittenImage:
    return write_image_layout(tmp_path / "plain", [base_layer(), top_layer()], config_extra={"Cmd": ["/bin/tool"]})


def pull(image: Path, bundle: Path, work_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("pull", "-q", "--snapshotter", "copy", "--work-dir", str(work_dir), *args, f"oci:{image}:latest",
               str(bundle), **env)  # fmt: skip


def test_pull_decrypts_attestation_agent_layers_through_the_kbs_with_one_attestation(
    kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, kbs.resources[KEK_ID], f"kbs:///{KEK_ID}")
    bundle = tmp_path / "bundle"
    result = pull(encrypted, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # One attestation for the policy fetch and both layer keys (the token cache), three resource releases.
    assert (kbs.attestations, kbs.resource_gets) == (1, 3)

    reference = tmp_path / "plain-bundle"
    plain = pull(plain_image.path, reference, tmp_path / "work-plain", "--insecure-policy")
    assert plain.returncode == 0, plain.stderr
    assert tree_hash(bundle / "rootfs") == tree_hash(reference / "rootfs") is not None


def test_pull_takes_aa_kbc_params_from_the_environment(kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, kbs.resources[KEK_ID], f"kbs:///{KEK_ID}")
    result = pull(encrypted, tmp_path / "bundle", tmp_path / "work", "--allow-sample-attester", "--policy",
                  f"kbs:///{POLICY_ID}", AA_KBC_PARAMS=f"cc_kbc::{kbs.url}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert kbs.attestations == 1


def test_pull_with_a_kek_missing_from_the_kbs_names_the_key_id(
    kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, secrets.token_bytes(32), "kbs:///default/image-kek/gone")
    bundle = tmp_path / "bundle"
    result = pull(encrypted, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert_failed(result, "kbs:///default/image-kek/gone")
    assert not bundle.exists()


def test_pull_with_a_wrong_kek_in_the_kbs_is_refused(kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, secrets.token_bytes(32), f"kbs:///{KEK_ID}")
    bundle = tmp_path / "bundle"
    result = pull(encrypted, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert_failed(result, KEK_ID, "provider.attestation-agent")
    assert not bundle.exists()


def test_pull_with_a_reject_policy_from_the_kbs_stops_before_any_layer(
    kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path
) -> None:
    kbs.resources[POLICY_ID] = REJECT
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, kbs.resources[KEK_ID], f"kbs:///{KEK_ID}")
    bundle = tmp_path / "bundle"
    result = pull(encrypted, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert_failed(result, "rejected")
    assert kbs.resource_gets == 1  # the policy only: no layer key was asked for
    assert not bundle.exists()


def test_pull_with_a_policy_denial_names_the_denial(kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path) -> None:
    kbs.deny_status = 401
    bundle = tmp_path / "bundle"
    result = pull(plain_image.path, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert_failed(result, "PolicyDeny", POLICY_ID)
    assert not bundle.exists()


@no_tee_here
def test_pull_with_cc_kbc_and_no_tee_is_refused_before_anything(
    kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    result = pull(plain_image.path, bundle, tmp_path / "work", "--aa-kbc-params", f"cc_kbc::{kbs.url}",
                  "--policy", f"kbs:///{POLICY_ID}")  # fmt: skip
    assert_failed(result, "no TEE found (probed:")
    assert kbs.auths == 0
    assert not bundle.exists()


def test_pull_without_a_kbc_names_the_missing_provider(kbs: TestKbs, plain_image: WrittenImage, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted"
    encrypt_image(plain_image.path, encrypted, kbs.resources[KEK_ID], f"kbs:///{KEK_ID}")
    result = pull(encrypted, tmp_path / "bundle", tmp_path / "work", "--insecure-policy")
    assert_failed(result, "provider.attestation-agent")
