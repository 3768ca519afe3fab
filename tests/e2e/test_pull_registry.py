"""`cocoguest pull docker://...` against Debian's docker-registry on loopback: plain HTTP, HTTPS + htpasswd,
token auth, multi-arch index, Docker schema2, faults (cut connection, wrong bytes), error statuses."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import base_layer, run, store_layer_dirs, top_layer
from tests.fixtures.faulty_proxy import Fault, FaultyProxy
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.registry import Registry, TokenServer, push_layout, start_registry

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> WrittenImage:
    return write_image_layout(
        tmp_path_factory.mktemp("img") / "layout",
        [base_layer(), top_layer()],
        config_extra={"Entrypoint": ["/bin/tool"]},
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, image: WrittenImage) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("plain")) as registry:
        push_layout(image.path, f"{registry.host}/test/app:v1")
        yield registry


def _pull(image_ref: str, tmp_path: Path, *extra: str) -> int:
    return run("pull", "--insecure-policy", "-q", "--work-dir", str(tmp_path / "work"), "--snapshotter", "copy",
               *extra, image_ref, str(tmp_path / "bundle"))  # fmt: skip


def _assert_bundle(tmp_path: Path) -> None:
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "data" / "new.txt").read_text() == "new\n"
    assert not (rootfs / "data" / "old.txt").exists()


def test_plain_http_by_tag_and_by_digest(plain: Registry, image: WrittenImage, tmp_path: Path) -> None:
    assert _pull(f"docker://{plain.host}/test/app:v1", tmp_path / "a", "--tls-verify=false") == 0
    _assert_bundle(tmp_path / "a")
    assert _pull(f"{plain.host}/test/app@{image.manifest_digest}", tmp_path / "b", "--tls-verify=false") == 0
    _assert_bundle(tmp_path / "b")


def test_plain_http_needs_tls_verify_false(plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _pull(f"docker://{plain.host}/test/app:v1", tmp_path) == 1
    assert plain.host in capsys.readouterr().err


def test_wrong_pinned_digest_is_refused(plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "sha256:" + "0" * 64
    assert _pull(f"{plain.host}/test/app@{wrong}", tmp_path, "--tls-verify=false") == 1
    assert "error: " in capsys.readouterr().err
    assert store_layer_dirs(tmp_path / "work") == []


def test_unknown_tag_is_a_clear_error(plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _pull(f"{plain.host}/test/app:nope", tmp_path, "--tls-verify=false") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "test/app:nope" in err


def test_docker_schema2_image(plain: Registry, image: WrittenImage, tmp_path: Path) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", "--format", "v2s2",
                    f"oci:{image.path}:latest", f"docker://{plain.host}/test/docker:v2"], check=True)  # fmt: skip
    inspect = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{plain.host}/test/docker:v2"],
                             check=True, capture_output=True).stdout  # fmt: skip
    assert json.loads(inspect)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert _pull(f"{plain.host}/test/docker:v2", tmp_path, "--tls-verify=false") == 0
    _assert_bundle(tmp_path)


def _multi_arch_layout(path: Path) -> None:
    cmd = {"Cmd": ["/bin/sh"]}
    amd = write_image_layout(path, [base_layer()], ref="amd", architecture="amd64", config_extra=cmd)
    arm = write_image_layout(path, [top_layer()], ref="arm", architecture="arm64", config_extra=cmd)
    index_file = json.loads((path / "index.json").read_text())
    entries = [{**m, "annotations": {}} for m in index_file["manifests"]]
    for entry in entries:
        del entry["annotations"]
    assert {e["digest"] for e in entries} == {amd.manifest_digest, arm.manifest_digest}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    data = json.dumps(index).encode()
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256(data).hexdigest()
    (path / "blobs" / "sha256" / digest).write_bytes(data)
    index_file["manifests"] = [{"mediaType": index["mediaType"], "digest": f"sha256:{digest}", "size": len(data),
                                "annotations": {"org.opencontainers.image.ref.name": "multi"}}]  # fmt: skip
    (path / "index.json").write_text(json.dumps(index_file))


def test_multi_arch_index_selects_the_platform(plain: Registry, tmp_path: Path) -> None:
    _multi_arch_layout(tmp_path / "multi")
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--all", "--dest-tls-verify=false",
                    f"oci:{tmp_path / 'multi'}:multi", f"docker://{plain.host}/test/multi:1"], check=True)  # fmt: skip
    ref = f"{plain.host}/test/multi:1"
    assert _pull(ref, tmp_path / "arm", "--tls-verify=false", "--platform", "linux/arm64") == 0
    assert (tmp_path / "arm" / "bundle" / "rootfs" / "data" / "new.txt").exists()
    assert not (tmp_path / "arm" / "bundle" / "rootfs" / "etc").exists()
    assert _pull(ref, tmp_path / "amd", "--tls-verify=false", "--platform", "linux/amd64") == 0
    assert (tmp_path / "amd" / "bundle" / "rootfs" / "etc" / "passwd").exists()
    assert _pull(ref, tmp_path / "s390", "--tls-verify=false", "--platform", "linux/s390x") == 1


def test_connection_cut_mid_blob_resumes(plain: Registry, image: WrittenImage, tmp_path: Path) -> None:
    with FaultyProxy(plain.host).running() as proxy:
        for digest in image.layer_digests:
            proxy.faults.append(Fault("cut", path=f"/blobs/{digest}", cut_after=100))
        assert _pull(f"{proxy.host}/test/app:v1", tmp_path, "--tls-verify=false") == 0
        assert any("Range" in r.headers for r in proxy.log)
    _assert_bundle(tmp_path)


def test_wrong_bytes_commit_nothing(
    plain: Registry, image: WrittenImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("corrupt", path=f"/blobs/{image.layer_digests[1]}", times=None))
        assert _pull(f"{proxy.host}/test/app:v1", tmp_path, "--tls-verify=false") == 1
    err = capsys.readouterr().err
    assert image.layer_digests[1] in err
    assert "digest" in err
    assert not (tmp_path / "bundle").exists()
    # the good layer may be committed (it verified); the corrupted one never is
    assert len(store_layer_dirs(tmp_path / "work")) <= 1


@pytest.mark.parametrize(("status", "word"), [(500, "500"), (404, "unknown"), (401, "auth")])
def test_error_statuses_are_clear(
    plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, word: str
) -> None:
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("status", path="/manifests/", status=status, times=None))
        assert _pull(f"{proxy.host}/test/app:v1", tmp_path, "--tls-verify=false") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert word in err.lower()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, image: WrittenImage) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("secured"), tls=True, htpasswd_user=(USER, PASSWORD)) as registry:
        push_layout(image.path, f"{registry.host}/private/app:v1", creds=(USER, PASSWORD))
        yield registry


def _auth_file(path: Path, key: str) -> Path:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": token}}}))
    return path


def _cert_dir(registry: Registry, path: Path) -> Path:
    path.mkdir()
    assert registry.ca_cert is not None
    (path / "ca.crt").write_bytes(registry.ca_cert.read_bytes())
    return path


def test_https_with_ca_and_htpasswd(secured: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = _auth_file(tmp_path / "auth.json", f"{secured.host}/private")
    certs = _cert_dir(secured, tmp_path / "certs")
    assert _pull(f"{secured.host}/private/app:v1", tmp_path / "ok", "--auth-file", str(auth), "--cert-dir",
                 str(certs)) == 0  # fmt: skip
    _assert_bundle(tmp_path / "ok")
    # without credentials, and without the CA: clear errors
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    capsys.readouterr()
    assert _pull(f"{secured.host}/private/app:v1", tmp_path / "nocreds", "--auth-file", str(empty), "--cert-dir",
                 str(certs)) == 1  # fmt: skip
    assert "authentication" in capsys.readouterr().err
    assert _pull(f"{secured.host}/private/app:v1", tmp_path / "noca", "--auth-file", str(auth)) == 1
    assert "--cert-dir" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tokened(tmp_path_factory: pytest.TempPathFactory, image: WrittenImage) -> Iterator[Registry]:
    base = tmp_path_factory.mktemp("tokened")
    server = TokenServer(base / "token", users={USER: PASSWORD})
    with server.running(), start_registry(base / "registry", token_server=server) as registry:
        push_layout(image.path, f"{registry.host}/public/app:v1", creds=(USER, PASSWORD))
        push_layout(image.path, f"{registry.host}/team/app:v1", creds=(USER, PASSWORD))
        yield registry


def test_token_auth_anonymous_and_with_credentials(tokened: Registry, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert _pull(f"{tokened.host}/public/app:v1", tmp_path / "anon", "--tls-verify=false", "--auth-file",
                 str(empty)) == 0  # fmt: skip
    assert _pull(f"{tokened.host}/team/app:v1", tmp_path / "denied", "--tls-verify=false", "--auth-file",
                 str(empty)) == 1  # fmt: skip
    auth = _auth_file(tmp_path / "auth.json", tokened.host)
    assert _pull(f"{tokened.host}/team/app:v1", tmp_path / "ok", "--tls-verify=false", "--auth-file", str(auth)) == 0
    _assert_bundle(tmp_path / "ok")


def test_short_name_is_judged_under_the_registry_it_came_from(
    plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short name resolves in the search registries in order; the policy must judge the registry that served it."""
    with start_registry(tmp_path / "empty") as empty:
        conf = tmp_path / "registries.conf"
        conf.write_text(f'unqualified-search-registries = ["{empty.host}", "{plain.host}"]\n')
        policy = tmp_path / "policy.json"
        accept = [{"type": "insecureAcceptAnything"}]
        policy.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {empty.host: accept}}}))
        args = ["--registries-conf", str(conf), "--tls-verify=false", "--policy", str(policy), "--snapshotter", "copy"]
        assert run("pull", "-q", "--work-dir", str(tmp_path / "w"), *args, "test/app:v1", str(tmp_path / "b")) == 1
        err = capsys.readouterr().err
        assert plain.host in err
        assert "rejected" in err
        # the same image accepted when its real registry is trusted
        policy.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {plain.host: accept}}}))
        assert run("pull", "-q", "--work-dir", str(tmp_path / "w"), *args, "test/app:v1", str(tmp_path / "b2")) == 0


def test_64k_config_pulls_every_time_through_small_network_chunks(plain: Registry, tmp_path: Path) -> None:
    """Issue 7 defect 1: the config was read with one read(); a config in many network chunks failed."""
    big = write_image_layout(
        tmp_path / "big-config",
        [base_layer()],
        config_extra={"Entrypoint": ["/bin/tool"], "Labels": {"pad": "p" * (64 * 1024)}},
    )
    push_layout(big.path, f"{plain.host}/test/bigconfig:v1")
    with FaultyProxy(plain.host).running() as proxy:
        proxy.faults.append(Fault("trickle", path=f"/blobs/{big.config_digest}", times=None, cut_after=1024))
        for attempt in range(20):
            status = run("pull", "--insecure-policy", "-q", "--work-dir", str(tmp_path / "work"), "--snapshotter",
                         "copy", "--tls-verify=false", f"{proxy.host}/test/bigconfig:v1",
                         str(tmp_path / f"bundle-{attempt}"))  # fmt: skip
            assert status == 0, f"pull {attempt + 1} of 20 failed"
        assert len(proxy.requests_to(f"/blobs/{big.config_digest}")) == 20
