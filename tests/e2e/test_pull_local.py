"""`cocoguest pull oci:...`: bundle contents, config.json, cache hits, store commands, encryption, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cocoguest.image.bundle.rootfs import unmount
from tests.e2e.conftest import read_config, run, store_layer_dirs
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout


def _pull(image: WrittenImage, bundle: Path, work_dir: Path, *extra: str) -> int:
    return run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), *extra, f"oci:{image.path}:latest",
               str(bundle))  # fmt: skip


def test_pull_copy_snapshotter_applies_the_changeset(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    assert _pull(image, bundle, work_dir, "--snapshotter", "copy") == 0
    rootfs = bundle / "rootfs"
    assert (rootfs / "data" / "keep.txt").read_text() == "keep\n"
    assert not (rootfs / "data" / "old.txt").exists()  # whiteout
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["upper.txt"]  # opaque dir
    assert os.stat(rootfs / "data" / "new.txt").st_ino == os.stat(rootfs / "data" / "new-link.txt").st_ino
    assert os.readlink(rootfs / "bin" / "sh-link") == "tool"
    assert os.stat(rootfs / "bin" / "tool").st_mode & 0o7777 == 0o4755
    config = read_config(bundle)
    process = config["process"]
    assert isinstance(process, dict)
    assert process["args"] == ["/bin/tool", "--help"]
    assert process["cwd"] == "/data"
    assert process["user"]["uid"] == 1000
    assert process["user"]["gid"] == 1000
    assert 2000 in process["user"]["additionalGids"]
    assert config["root"] == {"path": "rootfs", "readonly": False}


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")
def test_pull_overlay_snapshotter(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    status = _pull(image, bundle, work_dir, "--snapshotter", "overlay")
    if status != 0:
        pytest.skip("overlay mounts are not permitted here")
    try:
        rootfs = bundle / "rootfs"
        assert os.path.ismount(rootfs)
        assert not (rootfs / "data" / "old.txt").exists()
        assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["upper.txt"]
        (rootfs / "scratch").write_text("written by the container")  # goes to the upper dir, not the store
        assert not any((d / "diff" / "scratch").exists() for d in store_layer_dirs(work_dir))
    finally:
        unmount(bundle / "rootfs")


def test_second_pull_uses_the_store_and_store_commands(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pull(image, tmp_path / "b1", work_dir, "--snapshotter", "copy") == 0
    layers_before = store_layer_dirs(work_dir)
    assert len(layers_before) == 2
    capsys.readouterr()
    assert run("pull", "--insecure-policy", "--json", "--work-dir", str(work_dir), "--snapshotter", "copy",
               f"oci:{image.path}:latest", str(tmp_path / "b2")) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert [layer["downloaded"] for layer in result["layers"]] == [False, False]
    assert result["manifest_digest"] == image.manifest_digest
    assert result["config_digest"] == image.config_digest
    assert store_layer_dirs(work_dir) == layers_before
    assert run("images", "--json", "--work-dir", str(work_dir)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["manifest_digest"] for i in listed] == [image.manifest_digest]
    assert run("rmi", "--work-dir", str(work_dir), listed[0]["references"][0]) == 0
    assert run("prune", "--work-dir", str(work_dir)) == 0
    assert store_layer_dirs(work_dir) == []


def test_existing_bundle_is_refused(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "precious").write_text("mine")
    assert _pull(image, bundle, work_dir) == 1
    assert [p.name for p in bundle.iterdir()] == ["precious"]


def test_policy_is_required(
    image: WrittenImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cocoguest.cli.pull._DEFAULT_POLICY", tmp_path / "no-policy.json")
    assert run("pull", "--work-dir", str(tmp_path / "w"), f"oci:{image.path}", str(tmp_path / "b")) == 1
    assert "--insecure-policy" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "w").exists()


def _keypair(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


def test_encrypted_image(
    image: WrittenImage, tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _keypair(tmp_path)
    enc = tmp_path / "enc"
    assert run("copy", "-q", "--encryption-key", f"jwe:{public}", f"oci:{image.path}:latest", f"oci:{enc}:latest") == 0
    # without the key: a clear error and nothing new in the store
    assert run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), f"oci:{enc}", str(tmp_path / "b0")) == 1
    assert "missing private key" in capsys.readouterr().err
    assert store_layer_dirs(work_dir) == []
    key_args = ["--decryption-key", str(private), "--snapshotter", "copy"]
    assert run("pull", "--insecure-policy", "-q", "--require-encryption", "--work-dir", str(work_dir), *key_args,
               f"oci:{enc}", str(tmp_path / "b1")) == 0  # fmt: skip
    assert (tmp_path / "b1" / "rootfs" / "data" / "new.txt").read_text() == "new\n"
    # the plain image's layers are shared with the encrypted one (same diff_ids), but a cache hit still
    # needs the key for the encrypted image
    assert run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), f"oci:{enc}", str(tmp_path / "b2")) == 1
    # and an unencrypted image is refused when encryption is required
    assert run("pull", "--insecure-policy", "-q", "--require-encryption", "--work-dir", str(work_dir),
               f"oci:{image.path}", str(tmp_path / "b3")) == 1  # fmt: skip
    assert "encryption is required" in capsys.readouterr().err


def _with_wrong_diff_id(tmp_path: Path) -> WrittenImage:
    good = TarBuilder().file("a.txt", b"a").build()
    other = TarBuilder().file("b.txt", b"b").build()
    written = write_image_layout(tmp_path / "bad", [good])
    # Swap the blob for another valid gzip tar and fix the manifest, so only the diff_id can catch it.
    from tests.fixtures.oci_images import compress, sha256_digest  # noqa: PLC0415

    blob = compress(other, "gzip")
    (tmp_path / "bad" / "blobs" / "sha256" / sha256_digest(blob).split(":")[1]).write_bytes(blob)
    manifest_path = tmp_path / "bad" / "blobs" / "sha256" / written.manifest_digest.split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0].update(digest=sha256_digest(blob), size=len(blob))
    data = json.dumps(manifest).encode()
    new_path = tmp_path / "bad" / "blobs" / "sha256" / sha256_digest(data).split(":")[1]
    new_path.write_bytes(data)
    index = json.loads((tmp_path / "bad" / "index.json").read_text())
    index["manifests"][0].update(digest=sha256_digest(data), size=len(data))
    (tmp_path / "bad" / "index.json").write_text(json.dumps(index))
    return written


def test_diff_id_mismatch_commits_nothing(tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _with_wrong_diff_id(tmp_path)
    assert _pull(bad, tmp_path / "bundle", work_dir) == 1
    assert "diff_id" in capsys.readouterr().err
    assert store_layer_dirs(work_dir) == []
    assert not (tmp_path / "bundle").exists()


def test_hostile_layer_is_refused(tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    hostile = TarBuilder().symlink("escape", str(tmp_path)).file("escape/canary", b"overwritten").build()
    image = write_image_layout(tmp_path / "hostile", [hostile])
    assert _pull(image, tmp_path / "bundle", work_dir) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "escape" in err
    assert canary.read_text() == "untouched"
    assert store_layer_dirs(work_dir) == []
