"""`cocoguest pull --policy`: GPG simple signing end to end, with skopeo's verdict as the reference.

Images are pushed to a loopback registry and signed by Debian's skopeo (`--sign-by`, gpg) into a file://
lookaside configured in a registries.d directory. For every case cocoguest and skopeo get the same policy.json
and registries.d; their verdicts must agree, and agree with what the case expects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import base_layer, run, store_layer_dirs, top_layer
from tests.fixtures.gnupg import GnuPG, make_gnupg
from tests.fixtures.oci_images import WrittenImage, write_image_layout
from tests.fixtures.registry import Registry, start_registry

pytestmark = pytest.mark.interop


@dataclass(frozen=True)
class World:
    registry: Registry
    gnupg: GnuPG
    registries_d: Path
    lookaside: Path
    digests: dict[str, str]


def _skopeo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], capture_output=True, env=env, check=False, timeout=120)


def _push(layout: WrittenImage, ref: str, registries_d: Path, gnupg: GnuPG, signer: str | None, *extra: str) -> None:
    sign = ["--sign-by", gnupg.fingerprints[signer]] if signer else []
    result = _skopeo("--insecure-policy", "--registries.d", str(registries_d), "copy", "--quiet",
                     "--dest-tls-verify=false", *sign, *extra, f"oci:{layout.path}:latest", f"docker://{ref}",
                     env=gnupg.env())  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def _digest(ref: str) -> str:
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _signature_dir(world: World, repo: str, digest: str) -> Path:
    return world.lookaside / f"{repo}@{digest.replace(':', '=')}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("signatures")
    gnupg = make_gnupg(base / "gnupg", {"rsa": "rsa2048", "ed25519": "ed25519", "other": "rsa2048"})
    lookaside = base / "lookaside"
    registries_d = base / "registries.d"
    registries_d.mkdir()
    (registries_d / "default.yaml").write_text(f"default-docker:\n  lookaside: file://{lookaside}\n")
    image = write_image_layout(base / "image", [base_layer(), top_layer()], config_extra={"Cmd": ["/bin/sh"]})
    other_image = write_image_layout(base / "image2", [top_layer()], config_extra={"Cmd": ["/bin/sh"]})
    with start_registry(base / "registry") as registry:
        host = registry.host
        _push(image, f"{host}/signed/app:v1", registries_d, gnupg, "rsa")
        _push(image, f"{host}/signed/ed:v1", registries_d, gnupg, "ed25519")
        _push(image, f"{host}/signed/other:v1", registries_d, gnupg, "other")
        _push(image, f"{host}/unsigned/app:v1", registries_d, gnupg, None)
        _push(image, f"{host}/open/app:v1", registries_d, gnupg, None)
        _push(other_image, f"{host}/signed/moved:v1", registries_d, gnupg, None)
        _push(image, f"{host}/signed/two:v1", registries_d, gnupg, "rsa")
        world = World(registry, gnupg, registries_d, lookaside, {})
        digest = _digest(f"{host}/signed/app:v1")
        # two signatures: the first by an untrusted key, the second good
        two = _signature_dir(world, "signed/two", digest)
        (two / "signature-1").rename(two / "signature-2")
        shutil.copy(_signature_dir(world, "signed/other", digest) / "signature-1", two / "signature-1")
        # a good signature moved to another image's digest
        moved_digest = _digest(f"{host}/signed/moved:v1")
        moved = _signature_dir(world, "signed/moved", moved_digest)
        moved.mkdir(parents=True)
        shutil.copy(_signature_dir(world, "signed/app", digest) / "signature-1", moved / "signature-1")
        # a mirror of signed/app: same digest, signature made for the original name (for remapIdentity)
        _push(image, f"{host}/mirror/app:v1", registries_d, gnupg, None)
        mirror = _signature_dir(world, "mirror/app", digest)
        mirror.mkdir(parents=True, exist_ok=True)
        shutil.copy(_signature_dir(world, "signed/app", digest) / "signature-1", mirror / "signature-1")
        yield World(registry, gnupg, registries_d, lookaside, {"app": digest})
    gnupg.close()


def _policy(world: World, path: Path, scopes: dict[str, list[dict[str, object]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = {"default": [{"type": "reject"}], "transports": {"docker": scopes}}
    path.write_text(json.dumps(policy))
    return path


def _signed_by(world: World, key: str, **extra: object) -> dict[str, object]:
    return {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(world.gnupg.public_keys[key]), **extra}


def _verdicts(world: World, policy: Path, repo: str, tmp_path: Path) -> tuple[bool, bool, str]:
    ref = f"{world.registry.host}/{repo}:v1"
    skopeo = _skopeo("--policy", str(policy), "--registries.d", str(world.registries_d), "copy", "--quiet",
                     "--remove-signatures", "--src-tls-verify=false", f"docker://{ref}",
                     f"oci:{tmp_path / 'skopeo'}:x")  # fmt: skip
    status = run("pull", "--policy", str(policy), "--registries-d", str(world.registries_d), "--tls-verify=false",
                 "-q", "--snapshotter", "copy", "--work-dir", str(tmp_path / "work"), ref,
                 str(tmp_path / "bundle"))  # fmt: skip
    return skopeo.returncode == 0, status == 0, skopeo.stderr.decode()


def _check(world: World, tmp_path: Path, scopes: dict[str, list[dict[str, object]]], repo: str, expected: bool,
           capsys: pytest.CaptureFixture[str]) -> str:  # fmt: skip
    policy = _policy(world, tmp_path / "policy.json", scopes)
    capsys.readouterr()
    skopeo_ok, cocoguest_ok, skopeo_err = _verdicts(world, policy, repo, tmp_path)
    err = capsys.readouterr().err
    assert skopeo_ok == expected, skopeo_err
    assert cocoguest_ok == expected, err
    if not expected:
        # a rejection leaves nothing new in the store, and no bundle
        assert store_layer_dirs(tmp_path / "work") == []
        assert not (tmp_path / "bundle").exists()
        assert err.startswith("error: ")
    return err


@pytest.mark.parametrize(
    ("repo", "key", "expected"),
    [("signed/app", "rsa", True), ("signed/ed", "ed25519", True), ("unsigned/app", "rsa", False),
     ("signed/other", "rsa", False), ("signed/app", "other", False), ("signed/two", "rsa", True),
     ("signed/moved", "rsa", False)],
)  # fmt: skip
def test_signed_by_matches_skopeo(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], repo: str, key: str, expected: bool
) -> None:
    host = world.registry.host
    _check(world, tmp_path, {f"{host}/signed": [_signed_by(world, key)], f"{host}/unsigned": [_signed_by(world, key)]},
           repo, expected, capsys)  # fmt: skip


@pytest.mark.parametrize(
    ("identity", "expected"),
    [({"type": "matchRepository"}, True),
     ({"type": "exactReference", "dockerReference": "example.com/not/it:v1"}, False),
     ({"type": "exactRepository", "dockerRepository": "example.com/not/it"}, False)],
)  # fmt: skip
def test_signed_identity_matches_skopeo(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], identity: dict[str, str], expected: bool
) -> None:
    host = world.registry.host
    err = _check(world, tmp_path, {f"{host}/signed": [_signed_by(world, "rsa", signedIdentity=identity)]},
                 "signed/app", expected, capsys)  # fmt: skip
    if not expected:
        assert "identity" in err


def test_remap_identity_matches_skopeo(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = world.registry.host
    remap = {"type": "remapIdentity", "prefix": f"{host}/mirror", "signedPrefix": f"{host}/signed"}
    _check(world, tmp_path, {f"{host}/mirror": [_signed_by(world, "rsa", signedIdentity=remap)]}, "mirror/app",
           True, capsys)  # fmt: skip
    _check(world, tmp_path / "plain", {f"{host}/mirror": [_signed_by(world, "rsa")]}, "mirror/app", False, capsys)


def test_the_four_scenarios(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = world.registry.host
    scopes = {
        f"{host}/open": [{"type": "insecureAcceptAnything"}],
        f"{host}/unsigned": [_signed_by(world, "rsa")],
        f"{host}/signed": [_signed_by(world, "rsa")],
    }
    # 1. an unsigned image from an unprotected repository is accepted
    _check(world, tmp_path / "1", scopes, "open/app", True, capsys)
    # 2. an unsigned image from a protected one is rejected with a message
    err = _check(world, tmp_path / "2", scopes, "unsigned/app", False, capsys)
    assert "signedBy" in err
    assert "no signature" in err
    # 3. a signed one is accepted
    _check(world, tmp_path / "3", scopes, "signed/app", True, capsys)
    # 4. one signed with another key is rejected with a message
    err = _check(world, tmp_path / "4", scopes, "signed/other", False, capsys)
    assert "(signedBy): no signature accepted" in err
    other_key = world.gnupg.fingerprints["other"][-16:].upper()
    assert f"signed by key {other_key}, which is not a valid trusted signing key" in err


def test_reject_scope_and_default(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = world.registry.host
    _check(world, tmp_path / "a", {f"{host}/signed/app": [{"type": "reject"}]}, "signed/app", False, capsys)
    _check(world, tmp_path / "b", {}, "signed/app", False, capsys)  # default: reject


def test_multi_arch_signed_with_all(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.e2e.test_pull_registry import _multi_arch_layout  # noqa: PLC0415

    _multi_arch_layout(tmp_path / "multi")
    host = world.registry.host
    result = _skopeo("--insecure-policy", "--registries.d", str(world.registries_d), "copy", "--quiet", "--all",
                     "--dest-tls-verify=false", "--sign-by", world.gnupg.fingerprints["rsa"],
                     f"oci:{tmp_path / 'multi'}:multi", f"docker://{host}/signed/multi:v1",
                     env=world.gnupg.env())  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    _check(world, tmp_path / "ok", {f"{host}/signed": [_signed_by(world, "rsa")]}, "signed/multi", True, capsys)
    _check(world, tmp_path / "no", {f"{host}/signed": [_signed_by(world, "other")]}, "signed/multi", False, capsys)


def test_policy_and_key_from_offline_fs_resources(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64  # noqa: PLC0415

    host = world.registry.host
    requirement = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "kbs:///default/gpg-public-key/test"}
    policy = {"default": [{"type": "reject"}], "transports": {"docker": {f"{host}/signed": [requirement]}}}
    resources = {
        "default/security-policy/test": base64.b64encode(json.dumps(policy).encode()).decode(),
        "default/gpg-public-key/test": base64.b64encode(world.gnupg.public_keys["rsa"].read_bytes()).decode(),
    }
    resource_file = tmp_path / "resources.json"
    resource_file.write_text(json.dumps(resources))
    common = ["--policy", "kbs:///default/security-policy/test", "--offline-fs-resources", str(resource_file),
              "--registries-d", str(world.registries_d), "--tls-verify=false", "-q",
              "--snapshotter", "copy"]  # fmt: skip
    assert run("pull", *common, "--work-dir", str(tmp_path / "w1"), f"{host}/signed/app:v1", str(tmp_path / "b1")) == 0
    assert (
        run("pull", *common, "--work-dir", str(tmp_path / "w2"), f"{host}/signed/other:v1", str(tmp_path / "b2")) == 1
    )
    assert "rejected" in capsys.readouterr().err


def test_cocoguest_signs_gpg_and_skopeo_verifies(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = world.registry.host
    image = write_image_layout(tmp_path / "img", [base_layer()], config_extra={"Cmd": ["/bin/sh"]})
    monkeypatch.setenv("GNUPGHOME", str(world.gnupg.home))
    assert run("copy", "-q", "--dest-tls-verify=false", "--registries-d", str(world.registries_d),
               "--sign-by", world.gnupg.fingerprints["rsa"], f"oci:{image.path}:latest",
               f"docker://{host}/signed/bycocoguest:v1") == 0  # fmt: skip
    _check(world, tmp_path / "ok", {f"{host}/signed": [_signed_by(world, "rsa")]}, "signed/bycocoguest", True, capsys)
    _check(world, tmp_path / "no", {f"{host}/signed": [_signed_by(world, "other")]}, "signed/bycocoguest", False,
           capsys)  # fmt: skip


def test_cocoguest_signs_sigstore_and_pull_verifies(world: World, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    host = world.registry.host
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "cosign.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public = tmp_path / "cosign.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    other = tmp_path / "other.pub"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    image = write_image_layout(tmp_path / "img", [top_layer()], config_extra={"Cmd": ["/bin/sh"]})
    ref = f"{host}/cosigned/app:v1"
    assert run("copy", "-q", "--dest-tls-verify=false", "--sign-by-sigstore-private-key", str(private),
               f"oci:{image.path}:latest", f"docker://{ref}") == 0  # fmt: skip
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "sigstore.yaml").write_text(f"docker:\n  {host}/cosigned:\n    use-sigstore-attachments: true\n")
    for key_file, expected in ((public, 0), (other, 1)):
        policy = tmp_path / f"policy-{key_file.stem}.json"
        requirement = {"type": "sigstoreSigned", "keyPath": str(key_file)}
        policy.write_text(json.dumps({"default": [{"type": "reject"}],
                                      "transports": {"docker": {f"{host}/cosigned": [requirement]}}}))  # fmt: skip
        status = run("pull", "--policy", str(policy), "--registries-d", str(registries_d), "--tls-verify=false",
                     "-q", "--snapshotter", "copy", "--work-dir", str(tmp_path / f"w-{key_file.stem}"), ref,
                     str(tmp_path / f"b-{key_file.stem}"))  # fmt: skip
        assert status == expected
