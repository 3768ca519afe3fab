"""PullImage driven by the Go containerd/ttrpc peer (kata-agent's role) on the ``confidential-data-hub`` socket.

Issue 11's acceptance for the image pull service, with real processes only: the ``attestation-agent`` binary
(sample attester explicitly allowed: no TEE here), the ``confidential-data-hub`` binary, the dev KBS
(``cocoguest.devkbs``, admin API on), the ``coco-keyprovider`` binary registering its KEKs in that KBS,
Debian's docker-registry (plain HTTP, and HTTPS with a test CA), and ``umoci unpack`` as the reference unpacker.

What is proven:
    * A plain image pulled through the CDH (policy and registries.conf fetched from the KBS) has a rootfs equal
      to umoci's unpack of the same image: every path, type, mode, uid/gid, size, symlink target, ``user.*``
      xattr, file byte and hardlink set (tests/fixtures/umoci.py). The CDH runs as root with the overlay
      snapshotter, so the compared rootfs is the mounted overlay view; it is unmounted afterwards.
    * A ``reject`` policy from the KBS refuses the pull, naming the policy; no bundle is left.
    * An image whose layers were encrypted through coco-keyprovider (KEK registered in the KBS by the admin API)
      pulls to the same rootfs: the CDH gets the KEK from the KBS with the AA's token.
    * With the KEK deleted from the KBS, a pull fails naming the key id and leaves no bundle, even though the
      same layers are already in the CDH's store from an earlier pull.
    * ``[image] extra_root_certificates`` reaches the registry client: a registry serving HTTPS with a test CA
      pulls with the CA in the config and fails naming the certificate problem without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.cdh_guest import (
    ACCEPT,
    INTERNAL,
    POLICY_ID,
    REGISTRIES_ID,
    go_pull,
    insecure_registries,
    running_guest,
)
from tests.fixtures.cli import run_cocoguest
from tests.fixtures.coco_keyprovider import RunningKeyProvider, coco_keyprovider
from tests.fixtures.devkbs import DevKbs, dev_kbs
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.registry import Registry, push_layout, start_registry
from tests.fixtures.umoci import assert_same_rootfs, skip_without_umoci, umoci_layers, umoci_unpack

pytestmark = [pytest.mark.interop, skip_without_umoci]

KEK_ID = "default/image-kek/k1"
REJECT = b'{"default":[{"type":"reject"}]}'
AA_ANNOTATION = "org.opencontainers.image.enc.keys.provider.attestation-agent"


@dataclass
class World:
    """The host side, once per module: KBS, key provider, registries, the plain image and umoci's rootfs of it."""

    kbs: DevKbs
    provider: RunningKeyProvider
    registry: Registry
    tls_registry: Registry
    plain: WrittenImage
    reference_rootfs: Path
    keyprovider_config: Path

    def encrypt_and_push(self, ref: str, key_id: str) -> str:
        """``cocoguest copy`` of the plain image to ``ref`` with every layer encrypted through coco-keyprovider."""
        env = {**os.environ, "OCICRYPT_KEYPROVIDER_CONFIG": str(self.keyprovider_config)}
        image = f"{self.registry.host}/{ref}"
        result = run_cocoguest("copy", "-q", "--dest-tls-verify=false", "--encryption-key",
                               f"provider:attestation-agent:keyid=kbs:///{key_id}::algorithm=A256GCM",
                               f"oci:{self.plain.path}:latest", f"docker://{image}", env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
                             capture_output=True, check=True, timeout=60).stdout  # fmt: skip
        layers = json.loads(raw)["layers"]
        assert len(layers) == len(self.plain.layer_digests)
        assert all(layer["mediaType"].endswith("+encrypted") for layer in layers)
        assert all(AA_ANNOTATION in layer["annotations"] for layer in layers)
        return image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("cdh-pull-world")
    plain = write_image_layout(base / "plain", umoci_layers(), config_extra={"Cmd": ["/bin/sh"]})
    reference = umoci_unpack(plain.path, base / "umoci-bundle")
    (base / "kbs").mkdir()
    with (
        dev_kbs(base / "kbs") as kbs,
        coco_keyprovider("--kbs", kbs.url, "-a", str(kbs.admin_key_file)) as provider,
        start_registry(base / "registry") as registry,
        start_registry(base / "tls-registry", tls=True) as tls_registry,
    ):
        push_layout(plain.path, f"{registry.host}/plain/app:v1")
        push_layout(plain.path, f"{tls_registry.host}/plain/app:v1")
        w = World(kbs, provider, registry, tls_registry, plain, reference,
                  provider.write_ocicrypt_config(base / "ocicrypt.conf"))  # fmt: skip
        w.kbs.set_resource(POLICY_ID, ACCEPT)
        # Plain HTTP for the first registry only: the TLS one is verified against the system roots (+ extra).
        w.kbs.set_resource(REGISTRIES_ID, insecure_registries(registry.host))
        yield w


@pytest.fixture
def guest(tmp_path: Path, world: World) -> Iterator[Path]:
    with running_guest(tmp_path, world.kbs.url) as sock:
        yield sock


def test_go_peer_pulls_a_plain_image_whose_rootfs_equals_umocis(
    world: World, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bundle = tmp_path / "bundle"
    image = f"{world.registry.host}/plain/app:v1"
    code, message, digest = go_pull(go_peer, guest, image, bundle, request)
    assert code == 0, message
    assert digest == world.plain.manifest_digest
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["/bin/sh"]
    assert_same_rootfs(bundle / "rootfs", world.reference_rootfs)


def test_go_peer_pull_with_a_reject_policy_from_the_kbs_is_refused_naming_it(
    world: World, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    world.kbs.set_resource(POLICY_ID, REJECT)
    request.addfinalizer(lambda: world.kbs.set_resource(POLICY_ID, ACCEPT))
    bundle = tmp_path / "bundle"
    image = f"{world.registry.host}/plain/app:v1"
    code, message, _ = go_pull(go_peer, guest, image, bundle, request)
    assert code == INTERNAL
    assert message.startswith("[CDH] [ERROR]: PullImage")
    assert f"rejected by the signature policy kbs:///{POLICY_ID}: default[0] (reject)" in message
    assert image in message
    assert not bundle.exists()


def test_go_peer_pulls_an_image_encrypted_through_coco_keyprovider(
    world: World, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    image = world.encrypt_and_push("enc/app:v1", KEK_ID)
    bundle = tmp_path / "bundle"
    code, message, digest = go_pull(go_peer, guest, image, bundle, request)
    assert code == 0, message
    assert digest.startswith("sha256:")
    assert digest != world.plain.manifest_digest
    # The plain image's rootfs, as umoci unpacks it ...
    assert_same_rootfs(bundle / "rootfs", world.reference_rootfs)
    # ... and as the CDH pulls the plain image (pulled second: the encrypted pull above could not reuse its layers).
    plain = tmp_path / "plain"
    code, message, _ = go_pull(go_peer, guest, f"{world.registry.host}/plain/app:v1", plain, request)
    assert code == 0, message
    assert_same_rootfs(bundle / "rootfs", plain / "rootfs")


def test_go_peer_pull_fails_naming_the_key_id_once_the_kek_is_deleted_from_the_kbs(
    world: World, guest: Path, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    revoked = "default/image-kek/revoked"
    image = world.encrypt_and_push("enc/revoked:v1", revoked)
    first = tmp_path / "first"
    code, message, _ = go_pull(go_peer, guest, image, first, request)
    assert code == 0, message  # the layers are now in the CDH's store
    world.kbs.delete_resource(revoked)
    bundle = tmp_path / "bundle"
    code, message, _ = go_pull(go_peer, guest, image, bundle, request)
    assert code == INTERNAL
    assert message.startswith("[CDH] [ERROR]: PullImage")
    assert revoked in message
    assert not bundle.exists()


def test_extra_root_certificates_let_the_cdh_pull_from_a_tls_registry(
    world: World, go_peer: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert world.tls_registry.ca_cert is not None
    image = f"{world.tls_registry.host}/plain/app:v1"
    bundle = tmp_path / "bundle"
    with running_guest(tmp_path / "without", world.kbs.url) as sock:
        code, message, _ = go_pull(go_peer, sock, image, bundle, request)
    assert code == INTERNAL
    assert image in message
    assert f"TLS certificate of registry {world.tls_registry.host} not trusted" in message
    assert "extra_root_certificates" in message
    assert not bundle.exists()

    with running_guest(tmp_path / "with", world.kbs.url, [world.tls_registry.ca_cert.read_text()]) as sock:
        code, message, digest = go_pull(go_peer, sock, image, bundle, request)
    assert code == 0, message
    assert digest == world.plain.manifest_digest
    assert_same_rootfs(bundle / "rootfs", world.reference_rootfs)
