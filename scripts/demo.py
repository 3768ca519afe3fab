"""The cocoguest demo: encrypt a small image for a JWE and a PGP recipient, decrypt it back, and pull the
encrypted image into an OCI runtime bundle.

Run by `make demo`. Everything happens under ./demo-out (recreated each run). gpg only makes the demo's
PGP key; cocoguest reads the exported key files and never runs gpg itself here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cocoguest.image.build import build_layout

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"


def cocoguest(*args: str) -> None:
    """Run the cocoguest CLI, echoing the command."""
    shown = " ".join(str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in args)
    print(f"$ cocoguest {shown.replace(str(ROOT) + '/', '')}")
    subprocess.run([sys.executable, "-m", "cocoguest", *args], check=True)


def layers(layout: Path) -> list[dict[str, object]]:
    """The layer descriptors of the only image in a layout."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return list(manifest["layers"])


def show(title: str, layout: Path) -> list[dict[str, object]]:
    """Print media type, digest and key schemes of each layer."""
    print(f"\n{title} ({layout.relative_to(ROOT)}):")
    found = layers(layout)
    for i, layer in enumerate(found):
        annotations = layer.get("annotations") or {}
        schemes = sorted(k.rsplit(".", 1)[-1] for k in annotations if ".enc.keys." in k)
        suffix = f"  keys: {', '.join(schemes)}" if schemes else ""
        print(f"  layer {i}: {str(layer['mediaType']).rsplit('.', 1)[-1]:<22} {layer['digest']}{suffix}")
    return found


def make_rsa_key(keys: Path) -> None:
    """An RSA key pair for the JWE recipient."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (keys / "jwe.pem").write_bytes(private)
    (keys / "jwe.pub.pem").write_bytes(public)


def make_gpg_key(keys: Path) -> None:
    """A gpg 2.2 RSA key in a scratch GnuPG home, exported to files."""
    home = keys / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--quiet", "--passphrase", ""]
    uid = "Demo Owner <owner@example.com>"
    subprocess.run([*gpg, "--quick-gen-key", uid, "rsa2048", "cert,sign", "never"], check=True, env=env)
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys", uid], check=True, env=env, capture_output=True)
    fingerprint = next(line.split(":")[9] for line in listing.stdout.decode().splitlines() if line.startswith("fpr"))
    subprocess.run([*gpg, "--quick-add-key", fingerprint, "rsa2048", "encr", "never"], check=True, env=env)
    for flag, name in (("--export", "owner.pgp.pub"), ("--export-secret-keys", "owner.pgp.sec")):
        exported = subprocess.run([*gpg, flag], check=True, env=env, capture_output=True).stdout
        (keys / name).write_bytes(exported)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, env=env)


def main() -> int:
    """Build, encrypt, decrypt, compare."""
    shutil.rmtree(OUT, ignore_errors=True)
    keys = OUT / "keys"
    keys.mkdir(parents=True)
    print("building a 2-layer OCI image from demo/layers/ ...")
    build_layout(OUT / "plain", sorted((ROOT / "demo" / "layers").iterdir()))
    print("making an RSA key (JWE recipient) and a gpg key (PGP recipient) ...")
    make_rsa_key(keys)
    make_gpg_key(keys)

    plain, encrypted = f"oci:{OUT / 'plain'}:latest", f"oci:{OUT / 'encrypted'}:latest"
    print("\nencrypting every layer for both recipients:")
    cocoguest("copy", "--quiet", "--encryption-key", f"jwe:{keys / 'jwe.pub.pem'}",
              "--encryption-key", f"pgp:{keys / 'owner.pgp.pub'}", plain, encrypted)  # fmt: skip
    print("\ndecrypting with the JWE private key, then with the PGP secret key:")
    for key, name in (("jwe.pem", "decrypted-jwe"), ("owner.pgp.sec", "decrypted-pgp")):
        cocoguest("copy", "--quiet", "--decryption-key", str(keys / key), encrypted, f"oci:{OUT / name}:latest")

    before = show("original", OUT / "plain")
    show("encrypted", OUT / "encrypted")
    ok = True
    for name in ("decrypted-jwe", "decrypted-pgp"):
        after = show(name, OUT / name)
        same = [(a["mediaType"], a["digest"]) for a in after] == [(b["mediaType"], b["digest"]) for b in before]
        ok = ok and same
        print(f"  -> {'identical to the original' if same else 'DIFFERENT from the original'}")
    print("\npulling the encrypted image into an OCI runtime bundle (decrypting in the guest):")
    store, bundle = str(OUT / "store"), str(OUT / "bundle")
    cocoguest("pull", "--insecure-policy", "--snapshotter", "copy", "--work-dir", store,
              "--decryption-key", str(keys / "jwe.pem"), "--require-encryption", encrypted, bundle)  # fmt: skip
    config = json.loads((OUT / "bundle" / "config.json").read_text())
    rootfs = OUT / "bundle" / "rootfs"
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())
    print(f"  config.json process.args: {config['process']['args']}")
    print(f"  rootfs files: {', '.join(files)}")
    ok = ok and (rootfs / "etc" / "motd").read_text().startswith("Welcome")
    print("\ndemo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
