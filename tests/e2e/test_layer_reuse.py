"""The store's reuse rule end to end: a stored plaintext layer is never handed to an image that did not prove
it may have it (issue 7, defect 2), and the honest image still reuses it without fetching its blob.

The attacker's images name the diff_id of the victim's encrypted layer: (a) with a descriptor that says the
layer is unencrypted (the victim's blob, or the attacker's own), (b) encrypted, with a key wrapped to a key
the attacker holds (the attacker's blob, or the victim's blob with the attacker's key annotations).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import run, store_layer_dirs
from tests.fixtures.images import enc_annotations, layer_blobs, manifest, replace_layer
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import MEDIA_TYPES, compress, write_image_layout

_SECRET = b"the victim's secret\n"


def _keypair(directory: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return private, public


def _encrypted_image(tmp_path: Path, name: str, content: bytes, public: Path) -> Path:
    layer = TarBuilder().file("secret.txt", content).build()
    plain = write_image_layout(tmp_path / f"{name}-plain", [layer], config_extra={"Cmd": ["/secret.txt"]})
    encrypted = tmp_path / name
    assert run("copy", "-q", "--encryption-key", f"jwe:{public}", f"oci:{plain.path}:latest",
               f"oci:{encrypted}:latest") == 0  # fmt: skip
    return encrypted


def _pull(work_dir: Path, image: Path, bundle: Path, *key_args: str) -> int:
    return run("pull", "--insecure-policy", "--json", "--work-dir", str(work_dir), "--snapshotter", "copy",
               *key_args, f"oci:{image}:latest", str(bundle))  # fmt: skip


def _variant(victim: Path, tmp_path: Path, name: str) -> Path:
    """A copy of the victim's layout (same config, so the same diff_ids) for the attacker to edit."""
    return Path(shutil.copytree(victim, tmp_path / name))


@pytest.fixture
def pulled_victim(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The victim's encrypted image, pulled with its key: (work dir, layout, victim's private key)."""
    work_dir = tmp_path / "work"
    victim_private, victim_public = _keypair(tmp_path, "victim")
    victim = _encrypted_image(tmp_path, "victim", _SECRET, victim_public)
    assert _pull(work_dir, victim, tmp_path / "b-victim", "--decryption-key", str(victim_private)) == 0
    assert (tmp_path / "b-victim" / "rootfs" / "secret.txt").read_bytes() == _SECRET
    return work_dir, victim, victim_private


def _attack(variant: str, victim: Path, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """The attacker's image for ``variant`` (same config, so the same diff_id) and its pull's key options."""
    attacker_private, attacker_public = _keypair(tmp_path, "attacker")
    attacker_own = _encrypted_image(tmp_path, "attacker", b"attacker's own bytes\n", attacker_public)
    ((attacker_desc, attacker_blob),) = layer_blobs(attacker_own)
    image = Path(shutil.copytree(victim, tmp_path / variant))
    if variant == "a1-victim-blob-said-unencrypted":
        replace_layer(image, 0, media_type=MEDIA_TYPES["gzip"], annotations={})
        return image, ()
    if variant == "a2-attacker-blob-unencrypted":
        plain = compress(TarBuilder().file("x", b"x").build(), "gzip")
        replace_layer(image, 0, data=plain, media_type=MEDIA_TYPES["gzip"], annotations={})
        return image, ()
    if variant == "b1-attacker-blob-attacker-key":
        replace_layer(image, 0, data=attacker_blob, media_type=attacker_desc["mediaType"],
                      annotations=attacker_desc["annotations"])  # fmt: skip
    else:  # b2: the victim's blob, with a random key wrapped to the attacker's key
        ((victim_desc, _),) = layer_blobs(victim)
        replace_layer(image, 0, annotations=enc_annotations(attacker_desc))
        assert manifest(image)["layers"][0]["digest"] == victim_desc["digest"]
    return image, ("--decryption-key", str(attacker_private))


@pytest.mark.parametrize(
    "variant",
    [
        "a1-victim-blob-said-unencrypted",
        "a2-attacker-blob-unencrypted",
        "b1-attacker-blob-attacker-key",
        "b2-victim-blob-attacker-key",
    ],
)
def test_stored_plaintext_is_not_borrowed(
    variant: str, pulled_victim: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work_dir, victim, _ = pulled_victim
    stored = store_layer_dirs(work_dir)
    image, key_args = _attack(variant, victim, tmp_path)
    capsys.readouterr()
    bundle = tmp_path / "bundle-attacker"
    assert _pull(work_dir, image, bundle, *key_args) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("error: ")
    assert "layer" in err_lines[0]
    assert not bundle.exists()
    assert store_layer_dirs(work_dir) == stored


def test_the_honest_pull_still_reuses_the_stored_layer(
    pulled_victim: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work_dir, victim, victim_private = pulled_victim
    # An attacker's failed attempt first (it must not spoil the honest reuse).
    image, key_args = _attack("b2-victim-blob-attacker-key", victim, tmp_path)
    assert _pull(work_dir, image, tmp_path / "bundle-attacker", *key_args) == 1
    # The victim's blob leaves the layout: any attempt to fetch it would fail.
    ((victim_desc, _),) = layer_blobs(victim)
    (victim / "blobs" / "sha256" / str(victim_desc["digest"]).removeprefix("sha256:")).unlink()
    capsys.readouterr()
    assert _pull(work_dir, victim, tmp_path / "b-again", "--decryption-key", str(victim_private)) == 0
    result = json.loads(capsys.readouterr().out)
    assert [layer["downloaded"] for layer in result["layers"]] == [False]
    assert (tmp_path / "b-again" / "rootfs" / "secret.txt").read_bytes() == _SECRET
