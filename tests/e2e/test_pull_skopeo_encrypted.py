"""`cocoguest pull` of layers that Debian's skopeo encrypted (JWE and PGP), decrypted in the pull pipeline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import base_layer, run, store_layer_dirs, top_layer
from tests.fixtures.gnupg import make_gnupg
from tests.fixtures.oci_images import write_image_layout

pytestmark = pytest.mark.interop


def _skopeo_encrypt(src: Path, dst: Path, *keys: str, env: dict[str, str] | None = None) -> None:
    args = ["skopeo", "--insecure-policy", "copy", "--quiet"]
    for key in keys:
        args += ["--encryption-key", key]
    result = subprocess.run([*args, f"oci:{src}:latest", f"oci:{dst}:latest"], capture_output=True, env=env,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def test_pull_skopeo_jwe_encrypted_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_image_layout(tmp_path / "plain", [base_layer(), top_layer()], config_extra={"Cmd": ["/bin/sh"]})
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    _skopeo_encrypt(image.path, tmp_path / "enc", f"jwe:{pub}")
    common = ["pull", "--insecure-policy", "-q", "--snapshotter", "copy", "--require-encryption"]
    assert run(*common, "--work-dir", str(tmp_path / "w0"), f"oci:{tmp_path / 'enc'}", str(tmp_path / "b0")) == 1
    assert "missing private key" in capsys.readouterr().err
    assert store_layer_dirs(tmp_path / "w0") == []
    assert run(*common, "--work-dir", str(tmp_path / "w"), "--decryption-key", str(key), f"oci:{tmp_path / 'enc'}",
               str(tmp_path / "b")) == 0  # fmt: skip
    rootfs = tmp_path / "b" / "rootfs"
    assert (rootfs / "data" / "new.txt").read_text() == "new\n"
    assert not (rootfs / "data" / "old.txt").exists()


def test_pull_skopeo_pgp_encrypted_image(tmp_path: Path) -> None:
    gnupg = make_gnupg(tmp_path / "gnupg", {})
    env = gnupg.env()
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "Enc <enc@example.com>", "rsa2048", "cert", "never"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys", "enc@example.com"], env=env,
                             check=True, capture_output=True).stdout.decode()  # fmt: skip
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    subprocess.run([*gpg, "--quick-add-key", fingerprint, "rsa2048", "encr", "never"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    secret = tmp_path / "secret.gpg"
    secret.write_bytes(subprocess.run([*gpg, "--export-secret-keys"], env=env, check=True,
                                      capture_output=True).stdout)  # fmt: skip
    image = write_image_layout(tmp_path / "plain", [top_layer()], config_extra={"Cmd": ["/bin/sh"]})
    _skopeo_encrypt(image.path, tmp_path / "enc", "pgp:enc@example.com", env=env)
    gnupg.close()
    assert run("pull", "--insecure-policy", "-q", "--snapshotter", "copy", "--work-dir", str(tmp_path / "w"),
               "--decryption-key", str(secret), f"oci:{tmp_path / 'enc'}", str(tmp_path / "b")) == 0  # fmt: skip
    assert (tmp_path / "b" / "rootfs" / "opaque" / "upper.txt").read_text() == "upper\n"
