"""Cosign signature attachments against Debian's docker-registry and skopeo 1.9.3.

* Attachments made independently of cocoguest (payload signed with ``openssl``, the attachment manifest
  hand-built as an OCI layout and pushed by ``skopeo copy`` to ``sha256-<hex>.sig``) are fetched and verified
  by cocoguest; the wrong key is rejected.
* Signatures cocoguest signs and pushes are fetched back and verified by cocoguest, and skopeo (with a
  ``sigstoreSigned`` policy and ``use-sigstore-attachments: true``) accepts or rejects the image as we do.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.crypto.sigstore_crypto import encrypt_sigstore_private_key, generate_sigstore_key
from cocoguest.digest import Digest
from cocoguest.errors import SignatureError
from cocoguest.oci.reference import ImageReference
from cocoguest.registry import sigstore_attachments as sa
from cocoguest.registry.docker import DockerSource
from cocoguest.registry.types import RegistryEndpoint, SigstoreSignature
from cocoguest.signature.policy.identity import MatchRepoDigestOrExact
from cocoguest.signature.policy.model import SigstoreKeys, SigstoreSigned
from cocoguest.signature.sigstore import CosignVerifier, sign_sigstore
from tests.fixtures.images import build_layout
from tests.fixtures.registry import Registry, push_layout, start_registry

pytestmark = pytest.mark.interop

REQUIREMENT = SigstoreSigned(MatchRepoDigestOrExact())
SCRYPT_N = 1024


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def _openssl(*args: str) -> None:
    result = _run("openssl", *args)
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)}: {result.stderr.strip()}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_layout(tmp_path_factory.mktemp("image") / "layout", filler_bytes=0)


def _endpoint(registry: Registry) -> RegistryEndpoint:
    return RegistryEndpoint(registry.host, insecure=True)


def _push_image(registry: Registry, layout: Path, repository: str) -> tuple[ImageReference, Digest]:
    """Push the test image to ``repository:v1``; return its reference and the manifest digest the registry has."""
    reference = ImageReference.parse(f"{registry.host}/{repository}:v1")
    push_layout(layout, str(reference))
    with DockerSource(reference, _endpoint(registry), None) as source:
        manifest, _ = source.get_manifest()
    return reference, Digest.of_bytes(manifest)


# --- independently made attachments ------------------------------------------------------------------------


def _openssl_key(directory: Path, kind: str) -> tuple[Path, bytes]:
    """An openssl private key file and its PEM public key."""
    key = directory / f"{kind}.pem"
    algorithm = {
        "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ed25519": ["-algorithm", "ED25519"],
    }[kind]
    _openssl("genpkey", *algorithm, "-out", str(key))
    public = directory / f"{kind}.pub"
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(public))
    return key, public.read_bytes()


def _openssl_sign(key: Path, kind: str, payload: Path, out: Path) -> bytes:
    if kind == "ed25519":
        _openssl("pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-in", str(payload), "-out", str(out))
    else:  # ECDSA (DER) and RSA PKCS#1 v1.5, both over SHA-256: what cosign produces
        _openssl("dgst", "-sha256", "-sign", str(key), "-out", str(out), str(payload))
    return out.read_bytes()


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = Digest.of_bytes(data)
    path = layout / "blobs" / "sha256" / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": str(digest), "size": len(data)}


def _attachment_layout(directory: Path, payload: bytes, signature_b64: str) -> Path:
    """An OCI layout holding a cosign-style signature manifest (ref ``sig``), written by hand."""
    layout = directory / "sig-layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    payload_desc = _write_blob(layout, payload)
    # What go-containerregistry's empty image + one appended layer gives cosign.
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_desc["digest"]]},
        "config": {},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_write_blob(layout, json.dumps(config).encode()),
        },
        "layers": [
            {
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                **payload_desc,
                "annotations": {"dev.cosignproject.cosign/signature": signature_b64},
            }
        ],
    }
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_write_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "sig"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return layout


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_independent_attachment_verifies(registry: Registry, layout: Path, tmp_path: Path, kind: str) -> None:
    reference, digest = _push_image(registry, layout, f"independent/{kind}")
    key, public_pem = _openssl_key(tmp_path, kind)
    (tmp_path / "other").mkdir()
    _, other_public_pem = _openssl_key(tmp_path / "other", kind)
    # cosign's own payload form: repository without tag, "optional": null.
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference.name},
                "image": {"docker-manifest-digest": str(digest)},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    payload_file = tmp_path / "payload.json"
    payload_file.write_bytes(payload)
    signature = _openssl_sign(key, kind, payload_file, tmp_path / "signature.bin")
    attachment = _attachment_layout(tmp_path, payload, base64.b64encode(signature).decode())
    push_layout(attachment, f"{reference.name}:{sa.signature_tag(digest)}", layout_ref="sig")

    signatures = sa.fetch_sigstore_signatures(reference, digest, _endpoint(registry), None)
    assert signatures == [SigstoreSignature(payload, base64.b64encode(signature).decode())]
    result = CosignVerifier().verify(signatures[0], REQUIREMENT, SigstoreKeys(public_keys=(public_pem,)))
    assert result.manifest_digest == digest
    assert result.docker_reference == reference.name
    with pytest.raises(SignatureError, match="does not verify"):
        CosignVerifier().verify(signatures[0], REQUIREMENT, SigstoreKeys(public_keys=(other_public_pem,)))


def test_unsigned_image_has_no_signatures(registry: Registry, layout: Path) -> None:
    reference, digest = _push_image(registry, layout, "unsigned/app")
    assert sa.fetch_sigstore_signatures(reference, digest, _endpoint(registry), None) == []


# --- cocoguest signs and pushes ------------------------------------------------------------------------------


def test_sign_push_fetch_round_trip(registry: Registry, layout: Path, tmp_path: Path) -> None:
    reference, digest = _push_image(registry, layout, "roundtrip/app")
    key = generate_sigstore_key("ecdsa-p256")
    other = generate_sigstore_key("ecdsa-p256")
    encrypted = encrypt_sigstore_private_key(key, b"passphrase", scrypt_n=SCRYPT_N)
    payload, signature_b64 = sign_sigstore(digest, str(reference), encrypted, b"passphrase")
    first = SigstoreSignature(payload, signature_b64)
    sa.push_sigstore_attachment(reference, digest, first, _endpoint(registry), None)
    second = SigstoreSignature(*sign_sigstore(digest, str(reference), encrypt_sigstore_private_key(
        other, b"", scrypt_n=SCRYPT_N), None, timestamp=7))  # fmt: skip
    sa.push_sigstore_attachment(reference, digest, second, _endpoint(registry), None)
    sa.push_sigstore_attachment(reference, digest, first, _endpoint(registry), None)  # no duplicate

    signatures = sa.fetch_sigstore_signatures(reference, digest, _endpoint(registry), None)
    assert signatures == [first, second]
    verifier = CosignVerifier()
    keys = SigstoreKeys(public_keys=(key.public_key.pem,))
    assert verifier.verify(signatures[0], REQUIREMENT, keys).docker_reference == str(reference)
    with pytest.raises(SignatureError):
        verifier.verify(signatures[1], REQUIREMENT, keys)

    # containers/image (skopeo) reads our attachment manifest and copies it whole.
    # (Debian's skopeo 1.9.3 is built with sigstore verification disabled ("Debian-local change: sigstore
    # disabled"), so its policy verdict cannot be compared here.)
    attachment = f"docker://{reference.name}:{sa.signature_tag(digest)}"
    raw = _run("skopeo", "inspect", "--raw", "--tls-verify=false", attachment)
    assert raw.returncode == 0, raw.stderr
    layers = json.loads(raw.stdout)["layers"]
    assert [layer["mediaType"] for layer in layers] == [sa.SIMPLESIGNING_MEDIA_TYPE] * 2
    assert [layer["annotations"][sa.SIGNATURE_ANNOTATION] for layer in layers] == [first.signature_b64,
                                                                                   second.signature_b64]  # fmt: skip
    out = tmp_path / "copied"
    copied = _run(
        "skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", attachment, f"oci:{out}:sig"
    )
    assert copied.returncode == 0, copied.stderr
