"""`cocoguest copy` with the docker:// transport, both ways, against Debian's docker-registry and skopeo.

Push (oci -> docker) read back by skopeo and `cocoguest pull`; encryption inside a registry (docker -> docker)
decrypted by skopeo; decryption out of a registry (docker -> oci); Docker schema2 sources; HTTPS with a test
CA and htpasswd (--dest-creds, --dest-cert-dir); failures (manifest PUT answered 500, corrupted source blob)
leave no tag behind.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.image.platform import PlatformSpec
from tests.e2e.conftest import base_layer, run, top_layer
from tests.fixtures.cli import skopeo, skopeo_copy
from tests.fixtures.faulty_proxy import Fault, FaultyProxy
from tests.fixtures.images import blob, layer_blobs, manifest
from tests.fixtures.oci_images import WrittenImage, sha256_digest, write_image_layout
from tests.fixtures.registry import Registry, push_layout, start_registry

pytestmark = pytest.mark.interop

USER, PASSWORD = "pusher", "pa:ss-word"  # a ':' in the password: only the first one separates
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> WrittenImage:
    return write_image_layout(
        tmp_path_factory.mktemp("img") / "layout",
        [base_layer(), top_layer()],
        config_extra={"Entrypoint": ["/bin/tool"]},
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private key, public key) PEM files of an RSA key."""
    directory = tmp_path_factory.mktemp("keys")
    private, public = directory / "priv.pem", directory / "pub.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-out", str(public)], check=True,
                   capture_output=True)  # fmt: skip
    return private, public


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, image: WrittenImage) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("plain")) as registry:
        push_layout(image.path, f"{registry.host}/src/app:v1")
        yield registry


@pytest.fixture(autouse=True)
def _private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Staging of transformed blobs goes under TMPDIR; nothing of it may remain after a copy."""
    staging = tmp_path / "tmpdir"
    staging.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    yield staging
    assert list(staging.iterdir()) == []


def _raw_manifest(ref: str, *args: str) -> tuple[bytes, dict[str, object]]:
    result = subprocess.run(["skopeo", "inspect", "--raw", *args, f"docker://{ref}"], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout, json.loads(result.stdout)


def _tag_exists(ref: str) -> bool:
    return skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").returncode == 0


def _original_layers(image: WrittenImage) -> list[bytes]:
    return [blob(image.path, digest) for digest in image.layer_digests]


def test_push_oci_to_registry_keeps_the_manifest_and_pulls_back(
    plain: Registry, image: WrittenImage, tmp_path: Path
) -> None:
    ref = f"{plain.host}/push/app:v1"
    assert run("copy", "-q", "--dest-tls-verify=false", f"oci:{image.path}:latest", f"docker://{ref}") == 0
    raw, _ = _raw_manifest(ref, "--tls-verify=false")
    assert sha256_digest(raw) == image.manifest_digest  # nothing changed: the manifest bytes are kept
    skopeo_copy(f"docker://{ref}", f"oci:{tmp_path / 'back'}:x", "--src-tls-verify=false")
    assert [data for _, data in layer_blobs(tmp_path / "back", "x")] == _original_layers(image)
    assert run("pull", "--insecure-policy", "-q", "--tls-verify=false", "--work-dir", str(tmp_path / "work"),
               "--snapshotter", "copy", f"docker://{ref}", str(tmp_path / "bundle")) == 0  # fmt: skip
    assert (tmp_path / "bundle" / "rootfs" / "data" / "new.txt").read_text() == "new\n"


def test_encrypt_inside_the_registry_skopeo_decrypts(
    plain: Registry, image: WrittenImage, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    src, dst = f"{plain.host}/src/app:v1", f"{plain.host}/enc/app:v1"
    assert run("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", "--encryption-key",
               f"jwe:{public}", f"docker://{src}", f"docker://{dst}") == 0  # fmt: skip
    _, pushed = _raw_manifest(dst, "--tls-verify=false")
    layers = pushed["layers"]
    assert isinstance(layers, list)
    assert [layer["mediaType"] for layer in layers] == [OCI_LAYER_GZIP + "+encrypted"] * 2
    assert not {layer["digest"] for layer in layers} & set(image.layer_digests)
    skopeo_copy(f"docker://{dst}", f"oci:{tmp_path / 'dec'}:x", "--src-tls-verify=false", "--decryption-key",
                str(private))  # fmt: skip
    assert [data for _, data in layer_blobs(tmp_path / "dec", "x")] == _original_layers(image)
    # and back out of the registry with cocoguest: docker -> oci, decrypting
    assert run("copy", "-q", "--src-tls-verify=false", "--decryption-key", str(private), f"docker://{dst}",
               f"oci:{tmp_path / 'mine'}:y") == 0  # fmt: skip
    assert [data for _, data in layer_blobs(tmp_path / "mine", "y")] == _original_layers(image)
    assert manifest(tmp_path / "mine", "y")["config"]["digest"] == image.config_digest


def test_decrypt_out_of_a_registry_needs_the_right_key(
    plain: Registry, image: WrittenImage, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = keys
    enc = f"{plain.host}/enc2/app:v1"
    assert run("copy", "-q", "--dest-tls-verify=false", "--encryption-key", f"jwe:{public}",
               f"oci:{image.path}:latest", f"docker://{enc}") == 0  # fmt: skip
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True, capture_output=True)
    capsys.readouterr()
    assert run("copy", "-q", "--src-tls-verify=false", "--decryption-key", str(other), f"docker://{enc}",
               f"oci:{tmp_path / 'dec'}") == 1  # fmt: skip
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "dec").exists()


def test_docker_schema2_source_kept_unchanged_or_converted_when_encrypting(
    plain: Registry, image: WrittenImage, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    v2s2 = f"{plain.host}/src/docker:v1"
    skopeo_copy(f"oci:{image.path}:latest", f"docker://{v2s2}", "--dest-tls-verify=false", "--format", "v2s2")
    source_raw, source = _raw_manifest(v2s2, "--tls-verify=false")
    assert source["mediaType"] == DOCKER_MANIFEST
    same = f"{plain.host}/copy/docker:v1"
    assert run("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{v2s2}",
               f"docker://{same}") == 0  # fmt: skip
    assert _raw_manifest(same, "--tls-verify=false")[0] == source_raw
    enc = f"{plain.host}/copy/docker-enc:v1"
    assert run("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", "--encryption-key",
               f"jwe:{public}", "--encrypt-layer", "-1", f"docker://{v2s2}", f"docker://{enc}") == 0  # fmt: skip
    _, encrypted = _raw_manifest(enc, "--tls-verify=false")
    assert encrypted["mediaType"] == OCI_MANIFEST
    layers = encrypted["layers"]
    assert isinstance(layers, list)
    assert [layer["mediaType"] for layer in layers] == [OCI_LAYER_GZIP, OCI_LAYER_GZIP + "+encrypted"]
    skopeo_copy(f"docker://{enc}", f"oci:{tmp_path / 'dec'}:x", "--src-tls-verify=false", "--decryption-key",
                str(private))  # fmt: skip
    assert [data for _, data in layer_blobs(tmp_path / "dec", "x")] == _original_layers(image)


def test_https_htpasswd_destination_with_creds_and_cert_dir(
    image: WrittenImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with start_registry(tmp_path / "reg", tls=True, htpasswd_user=(USER, PASSWORD)) as registry:
        assert registry.ca_cert is not None
        cert_dir = tmp_path / "certs"
        cert_dir.mkdir()
        shutil.copy(registry.ca_cert, cert_dir / "ca.crt")
        ref = f"{registry.host}/secure/app:v1"
        src = f"oci:{image.path}:latest"
        # without credentials: refused; without the CA: certificate verification fails; nothing is tagged
        assert run("copy", "-q", "--dest-cert-dir", str(cert_dir), src, f"docker://{ref}") == 1
        assert "authentication" in capsys.readouterr().err
        assert run("copy", "-q", "--dest-creds", f"{USER}:{PASSWORD}", src, f"docker://{ref}") == 1
        assert registry.host in capsys.readouterr().err
        assert run("copy", "-q", "--dest-creds", f"{USER}:wrong", "--dest-cert-dir", str(cert_dir), src,
                   f"docker://{ref}") == 1  # fmt: skip
        assert USER in capsys.readouterr().err
        assert run("copy", "-q", "--dest-creds", f"{USER}:{PASSWORD}", "--dest-cert-dir", str(cert_dir), src,
                   f"docker://{ref}") == 0  # fmt: skip
        raw, _ = _raw_manifest(ref, "--cert-dir", str(cert_dir), "--creds", f"{USER}:{PASSWORD}")
        assert sha256_digest(raw) == image.manifest_digest
        # credentials from an auth file work the same
        auth = tmp_path / "auth.json"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        auth.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        assert run("copy", "-q", "--authfile", str(auth), "--dest-cert-dir", str(cert_dir), src,
                   f"docker://{registry.host}/secure/other:v2") == 0  # fmt: skip
        # and read back through HTTPS with --src-creds / --src-cert-dir
        assert run("copy", "-q", "--src-creds", f"{USER}:{PASSWORD}", "--src-cert-dir", str(cert_dir),
                   f"docker://{ref}", f"oci:{tmp_path / 'back'}:x") == 0  # fmt: skip
    assert [data for _, data in layer_blobs(tmp_path / "back", "x")] == _original_layers(image)


def test_failed_manifest_put_leaves_no_tag(
    plain: Registry, image: WrittenImage, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = keys
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("status", path="/manifests/", method="PUT", status=500, times=None,
                                  retry_after="0"))  # fmt: skip
        ref = f"{proxy.host}/fail/app:v1"
        assert run("copy", "-q", "--dest-tls-verify=false", "--encryption-key", f"jwe:{public}",
                   f"oci:{image.path}:latest", f"docker://{ref}") == 1  # fmt: skip
        err = capsys.readouterr().err
        assert "500" in err
        assert "fail/app" in err
        assert proxy.requests_to("/blobs/uploads/", method="POST")  # the blobs went up before the manifest
    assert not _tag_exists(f"{plain.host}/fail/app:v1")


def test_failed_push_keeps_the_old_tag(
    plain: Registry, image: WrittenImage, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = keys
    ref = f"{plain.host}/keep/app:v1"
    assert run("copy", "-q", "--dest-tls-verify=false", f"oci:{image.path}:latest", f"docker://{ref}") == 0
    before, _ = _raw_manifest(ref, "--tls-verify=false")
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("status", path="/manifests/", method="PUT", status=500, times=None,
                                  retry_after="0"))  # fmt: skip
        assert run("copy", "-q", "--dest-tls-verify=false", "--encryption-key", f"jwe:{public}",
                   f"oci:{image.path}:latest", f"docker://{proxy.host}/keep/app:v1") == 1  # fmt: skip
    assert capsys.readouterr().err.startswith("error: ")
    assert _raw_manifest(ref, "--tls-verify=false")[0] == before


def test_corrupted_source_blob_is_never_pushed(
    plain: Registry, image: WrittenImage, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("corrupt", path=f"/blobs/{image.layer_digests[1]}", times=None))
        ref = f"{plain.host}/corrupt/app:v1"
        assert run("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
                   f"docker://{proxy.host}/src/app:v1", f"docker://{ref}") == 1  # fmt: skip
    err = capsys.readouterr().err
    assert image.layer_digests[1] in err
    assert "content has digest" in err  # our verifying reader stopped it, not the registry's digest check
    assert not _tag_exists(ref)


def test_destination_by_digest(plain: Registry, image: WrittenImage, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "sha256:" + "1" * 64
    src = f"oci:{image.path}:latest"
    assert run("copy", "-q", "--dest-tls-verify=false", src, f"docker://{plain.host}/pinned/app@{wrong}") == 1
    err = capsys.readouterr().err
    assert wrong in err
    assert image.manifest_digest in err
    assert run("copy", "-q", "--dest-tls-verify=false", src,
               f"docker://{plain.host}/pinned/app@{image.manifest_digest}") == 0  # fmt: skip
    raw, _ = _raw_manifest(f"{plain.host}/pinned/app@{image.manifest_digest}", "--tls-verify=false")
    assert sha256_digest(raw) == image.manifest_digest


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("oci:{layout}:latest", "dir:/tmp/x", "transport 'dir' is not supported"),
        ("containers-storage:x", "oci:{out}", "transport 'containers-storage' is not supported"),
        ("oci:{layout}:latest", "docker://localhost:5000/a/b:t@sha256:" + "0" * 64, "a tag and a digest"),
        ("oci:{layout}:latest", "docker://Bad Name", "image reference"),
    ],
)
def test_bad_references(
    image: WrittenImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, destination: str,
    message: str,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    args = [arg.format(layout=image.path, out=out) for arg in (source, destination)]
    assert run("copy", "-q", *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not out.exists()


def test_malformed_creds_flag(image: WrittenImage, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("copy", "-q", "--dest-creds", "nocolon", f"oci:{image.path}:latest", "docker://localhost:1/a:b") == 1
    assert "--dest-creds: expected USERNAME:PASSWORD" in capsys.readouterr().err


def test_multi_platform_source_copies_the_running_platform(plain: Registry, tmp_path: Path) -> None:
    running = PlatformSpec.running().architecture
    layout = tmp_path / "multi"
    mine = write_image_layout(layout, [base_layer()], ref="mine", architecture=running)
    other = write_image_layout(
        layout, [top_layer()], ref="other", architecture="s390x" if running != "s390x" else "riscv64"
    )
    index_file = json.loads((layout / "index.json").read_text())
    entries = [{k: v for k, v in m.items() if k != "annotations"} for m in index_file["manifests"]]
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()  # fmt: skip
    (layout / "blobs" / "sha256" / sha256_digest(index).removeprefix("sha256:")).write_bytes(index)
    index_file["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                                    "digest": sha256_digest(index), "size": len(index),
                                    "annotations": {"org.opencontainers.image.ref.name": "multi"}})  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index_file))
    ref = f"{plain.host}/multi/app:v1"
    assert run("copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{ref}") == 0
    raw, _ = _raw_manifest(ref, "--tls-verify=false")
    assert sha256_digest(raw) == mine.manifest_digest != other.manifest_digest
