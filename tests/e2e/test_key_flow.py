"""The Confidential Containers key flow end to end (issue 10): host encrypts, guest attests and pulls.

Real peers on loopback: the dev KBS (tests/fixtures/devkbs.py, admin auth on), the ``coco-keyprovider`` binary,
Debian's docker-registry, and ``cocoguest copy`` / ``cocoguest pull`` as subprocesses. The image is built from
files in the repo (tests/fixtures/rootfs) by image/build.py. This machine has no TEE: the guest uses the sample
attester, explicitly allowed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoguest.image.build import build_layout
from tests.fixtures.cli import run_cocoguest
from tests.fixtures.coco_keyprovider import RunningKeyProvider, coco_keyprovider
from tests.fixtures.devkbs import DevKbs, dev_kbs
from tests.fixtures.images import tree_hash
from tests.fixtures.registry import Registry, start_registry

pytestmark = pytest.mark.interop

ROOTFS = Path(__file__).resolve().parents[1] / "fixtures" / "rootfs"
KEK_ID = "default/image-kek/k1"
POLICY_ID = "default/security-policy/test"
ACCEPT = b'{"default":[{"type":"insecureAcceptAnything"}]}'
REJECT = b'{"default":[{"type":"reject"}]}'
AA_ANNOTATION = "org.opencontainers.image.enc.keys.provider.attestation-agent"


@dataclass
class World:
    kbs: DevKbs
    provider: RunningKeyProvider
    registry: Registry
    plain: Path
    keyprovider_config: Path
    tmp: Path

    def set_resource(self, path: str, data: bytes) -> None:
        self.kbs.set_resource(path, data)

    def encrypt_and_push(self, ref: str, params: str) -> subprocess.CompletedProcess[str]:
        env = {"OCICRYPT_KEYPROVIDER_CONFIG": str(self.keyprovider_config), "PATH": "/usr/bin:/bin"}
        import os  # noqa: PLC0415

        env = {**os.environ, **env}
        return run_cocoguest("copy", "-q", "--dest-tls-verify=false", "--encryption-key",
                             f"provider:attestation-agent:{params}", f"oci:{self.plain}:latest",
                             f"docker://{self.registry.host}/{ref}", env=env)  # fmt: skip

    def guest_pull(self, ref: str, bundle: Path) -> subprocess.CompletedProcess[str]:
        return run_cocoguest("pull", "-q", "--snapshotter", "copy", "--work-dir", str(bundle.parent / "work"),
                             "--tls-verify=false", "--aa-kbc-params", f"cc_kbc::{self.kbs.url}",
                             "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}",
                             f"docker://{self.registry.host}/{ref}", str(bundle))  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    plain = tmp_path / "plain"
    build_layout(plain, [ROOTFS / "base", ROOTFS / "app"])
    with (
        dev_kbs(tmp_path) as kbs,
        coco_keyprovider("--kbs", kbs.url, "-a", str(kbs.admin_key_file)) as provider,
        start_registry(tmp_path / "registry") as registry,
    ):
        config = provider.write_ocicrypt_config(tmp_path / "ocicrypt.conf")
        w = World(kbs, provider, registry, plain, config, tmp_path)
        w.set_resource(POLICY_ID, ACCEPT)
        yield w


def plain_rootfs_hash(world: World) -> str | None:
    reference = world.tmp / "ref" / "bundle"
    reference.parent.mkdir()
    result = run_cocoguest("pull", "-q", "--snapshotter", "copy", "--work-dir", str(reference.parent / "work"),
                           "--insecure-policy", f"oci:{world.plain}:latest", str(reference))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tree_hash(reference / "rootfs")


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def encrypted_layers(world: World, ref: str) -> list[dict[str, object]]:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{world.registry.host}/{ref}"],
                         capture_output=True, check=True).stdout  # fmt: skip
    layers: list[dict[str, object]] = json.loads(raw)["layers"]
    return layers


@pytest.mark.parametrize("algorithm", ["A256GCM", "A256CTR"])
def test_guest_pulls_the_image_encrypted_through_coco_keyprovider(world: World, algorithm: str) -> None:
    pushed = world.encrypt_and_push("enc/app:v1", f"keyid=kbs:///{KEK_ID}::algorithm={algorithm}")
    assert pushed.returncode == 0, pushed.stderr
    layers = encrypted_layers(world, "enc/app:v1")
    assert len(layers) == 2
    assert all(str(layer["mediaType"]).endswith("+encrypted") for layer in layers)
    assert all(AA_ANNOTATION in layer["annotations"] for layer in layers)  # type: ignore[operator]
    bundle = world.tmp / "guest" / "bundle"
    bundle.parent.mkdir()
    result = world.guest_pull("enc/app:v1", bundle)
    assert result.returncode == 0, result.stderr
    assert tree_hash(bundle / "rootfs") == plain_rootfs_hash(world) is not None


def test_a_reject_policy_from_the_kbs_stops_the_pull_naming_it(world: World) -> None:
    assert world.encrypt_and_push("enc/app:v1", f"keyid=kbs:///{KEK_ID}").returncode == 0
    world.set_resource(POLICY_ID, REJECT)
    bundle = world.tmp / "guest" / "bundle"
    bundle.parent.mkdir()
    line = error_line(world.guest_pull("enc/app:v1", bundle))
    assert f"rejected by the signature policy kbs:///{POLICY_ID}: default[0] (reject)" in line
    assert not bundle.exists()


def test_a_deny_all_resource_policy_stops_the_pull_naming_the_denial(world: World) -> None:
    assert world.encrypt_and_push("enc/app:v1", f"keyid=kbs:///{KEK_ID}").returncode == 0
    world.kbs.set_policy("deny_all.rego")
    bundle = world.tmp / "guest" / "bundle"
    bundle.parent.mkdir()
    line = error_line(world.guest_pull("enc/app:v1", bundle))
    assert "PolicyDeny" in line
    assert not bundle.exists()


def test_a_kek_deleted_from_the_kbs_stops_the_pull_naming_the_key_id(world: World) -> None:
    assert world.encrypt_and_push("enc/app:v1", f"keyid=kbs:///{KEK_ID}").returncode == 0
    answer = world.kbs.admin("DELETE", f"/kbs/v0/resource/{KEK_ID}")
    assert answer.status_code == 200, answer.text
    bundle = world.tmp / "guest" / "bundle"
    bundle.parent.mkdir()
    line = error_line(world.guest_pull("enc/app:v1", bundle))
    assert KEK_ID in line
    assert not bundle.exists()


def test_encryption_fails_cleanly_when_the_kbs_refuses_the_kek(world: World) -> None:
    with coco_keyprovider("--kbs", world.kbs.url) as unauthenticated:  # no admin key: the KBS says 401
        unauthenticated.write_ocicrypt_config(world.keyprovider_config)
        line = error_line(world.encrypt_and_push("enc/app:v2", f"keyid=kbs:///{KEK_ID}"))
    assert "HTTP 401" in line
    assert KEK_ID in line
