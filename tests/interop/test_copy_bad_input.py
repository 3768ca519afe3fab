"""``cocoguest copy`` refuses bad encrypted images and bad keys, cleanly.

The encrypted images come from Debian's skopeo 1.9.3 (JWE, RSA 2048) and are then tampered with; the
missing-nonce layer is crafted with cocoguest's own layer cipher and jwcrypto (ocicrypt.md §4.2), with a
control that differs only in having the nonce.

Every rejection must: exit with status 1; print exactly one stderr line starting ``error: `` that names the
layer digest or the key file at fault; create no destination, or leave an existing one byte-for-byte
unchanged (compared with a tree hash).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from jwcrypto import jwe, jwk

from cocoguest.crypto import layer_cipher
from tests.fixtures.cli import cocoguest_copy, run_cocoguest, skopeo_copy
from tests.fixtures.images import (
    KEYS_PREFIX,
    PUBOPTS,
    Json,
    blob,
    build_layout,
    enc_annotations,
    layer_blobs,
    manifest,
    oci_ref,
    replace_layer,
    tree_hash,
)
from tests.fixtures.keys import KeySet

pytestmark = pytest.mark.interop

TAMPERED = 2  # the last (largest, ~96 KiB) layer
JWE = KEYS_PREFIX + "jwe"


# --- helpers -----------------------------------------------------------------------------------------


def flip(data: bytes, position: int) -> bytes:
    """``data`` with the lowest bit of byte ``position`` flipped."""
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Destination:
    """The ``oci:`` destination of a failing copy, and the state it must keep."""

    path: Path
    before: str | None
    siblings: tuple[str, ...]

    def assert_untouched(self) -> None:
        assert tree_hash(self.path) == self.before, f"destination {self.path} was created or changed"
        assert tuple(sorted(p.name for p in self.path.parent.iterdir())) == self.siblings, "debris left"


def assert_rejected(result: subprocess.CompletedProcess[str], dst: Destination, *names: str) -> None:
    """Exit 1, one ``error: `` line naming one of ``names``, destination untouched."""
    assert result.returncode == 1, f"exit {result.returncode}; stderr: {result.stderr!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert any(name in lines[0] for name in names), f"{lines[0]!r} names none of {names}"
    dst.assert_untouched()


def decrypt(src: Path, dst: Destination, keyset: KeySet, key: str = "rsa2048") -> subprocess.CompletedProcess[str]:
    return run_cocoguest("copy", oci_ref(src), oci_ref(dst.path), *keyset[key].decrypt_args(), env=keyset.env())


def layer(layout: Path, index: int = TAMPERED) -> tuple[Json, bytes]:
    return layer_blobs(layout)[index]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skopeo_jwe(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet, source_image: Path) -> Path:
    """``source_image`` with every layer encrypted by skopeo to the RSA 2048 JWE key. Read-only."""
    enc = tmp_path_factory.mktemp("skopeo-jwe") / "enc"
    skopeo_copy(oci_ref(source_image), oci_ref(enc), *keyset["rsa2048"].encrypt_args(), env=keyset.env())
    return enc


@pytest.fixture
def encrypted(skopeo_jwe: Path, tmp_path: Path) -> Path:
    """A private copy of ``skopeo_jwe`` to tamper with."""
    return Path(shutil.copytree(skopeo_jwe, tmp_path / "enc"))


@pytest.fixture(params=["absent", "existing"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    """Where the failing copy writes: nothing yet, or an existing layout with the same ref."""
    path = tmp_path / "out" / "dst"
    path.parent.mkdir()
    if request.param == "existing":
        build_layout(path, layer_dirs=("base",), filler_bytes=0)
    return Destination(path, tree_hash(path), tuple(sorted(p.name for p in path.parent.iterdir())))


# --- keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["rsa4096", "ec-p256", "pkcs7", "pgp"])
def test_wrong_key(wrong: str, encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    digests = [str(d["digest"]) for d, _ in layer_blobs(encrypted)]

    result = decrypt(encrypted, destination, keyset, key=wrong)

    assert_rejected(result, destination, *digests)


@pytest.mark.parametrize("copier", ["skopeo", "cocoguest"])
def test_without_decryption_key_copies_encrypted_layers_unchanged(
    copier: str, skopeo_jwe: Path, keyset: KeySet, tmp_path: Path
) -> None:
    """skopeo's behaviour (ocicrypt.md §6), which cocoguest keeps: no key, encrypted layers copied as they are."""
    copy = tmp_path / "copy"
    if copier == "skopeo":
        skopeo_copy(oci_ref(skopeo_jwe), oci_ref(copy), env=keyset.env())
    else:
        cocoguest_copy(oci_ref(skopeo_jwe), oci_ref(copy), env=keyset.env())
    assert layer_blobs(copy) == layer_blobs(skopeo_jwe)


@pytest.mark.parametrize("kind", ["garbage", "truncated-pem", "pem-body-cut", "empty"])
def test_malformed_key_file(
    kind: str, encrypted: Path, destination: Destination, keyset: KeySet, tmp_path: Path
) -> None:
    pem = Path(keyset["rsa2048"].decryption_keys[0]).read_text().splitlines(keepends=True)
    content = {
        "garbage": "this is not a key\n\x00\x01\x02",
        "truncated-pem": "".join(pem[: len(pem) // 2]),
        "pem-body-cut": "".join(pem[: len(pem) // 2] + pem[-1:]),
        "empty": "",
    }[kind]
    bad_key = tmp_path / f"bad-{kind}.pem"
    bad_key.write_text(content)

    result = run_cocoguest(
        "copy",
        oci_ref(encrypted),
        oci_ref(destination.path),
        "--decryption-key",
        str(bad_key),
        env=keyset.env(),
    )

    assert_rejected(result, destination, str(bad_key))


# --- the encrypted blob ------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", ["all-but-one", "half"])
def test_truncated_layer_blob(keep: str, encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    _, data = layer(encrypted)
    data = data[:-1] if keep == "all-but-one" else data[: len(data) // 2]
    # The descriptor follows the truncated blob, so only the HMAC can catch it.
    digest = replace_layer(encrypted, TAMPERED, data=data)["digest"]

    result = decrypt(encrypted, destination, keyset)

    assert_rejected(result, destination, digest)


def test_truncated_blob_behind_its_descriptor(encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    desc, data = layer(encrypted)
    digest = str(desc["digest"])
    (encrypted / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data[:-1])

    result = decrypt(encrypted, destination, keyset)

    assert_rejected(result, destination, digest)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_ciphertext_bit(where: str, encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    _, data = layer(encrypted)
    position = {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[where]
    digest = replace_layer(encrypted, TAMPERED, data=flip(data, position))["digest"]

    result = decrypt(encrypted, destination, keyset)

    assert_rejected(result, destination, digest)


# --- the annotations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["hmac-bit", "unknown-cipher"])
def test_tampered_pubopts(change: str, encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    desc, _ = layer(encrypted)
    annotations = dict(desc["annotations"])
    pubopts = json.loads(base64.b64decode(annotations[PUBOPTS]))
    if change == "hmac-bit":
        pubopts["hmac"] = b64(flip(base64.b64decode(pubopts["hmac"]), 7))
    else:
        pubopts["cipher"] = "AES_256_CTR_HMAC_SHA512"
    annotations[PUBOPTS] = b64(json.dumps(pubopts).encode())
    replace_layer(encrypted, TAMPERED, annotations=annotations)

    result = decrypt(encrypted, destination, keyset)

    assert_rejected(result, destination, str(desc["digest"]))


@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag", "raw"])
def test_tampered_jwe_key_annotation(member: str, encrypted: Path, destination: Destination, keyset: KeySet) -> None:
    desc, _ = layer(encrypted)
    annotations = dict(desc["annotations"])
    raw = base64.b64decode(annotations[JWE])
    if member == "raw":
        tampered = flip(raw, len(raw) // 2)
    else:
        token = json.loads(raw)
        value = b64url_decode(token[member])
        token[member] = b64url(flip(value, len(value) // 2))
        tampered = json.dumps(token).encode()
    annotations[JWE] = b64(tampered)
    replace_layer(encrypted, TAMPERED, annotations=annotations)

    result = decrypt(encrypted, destination, keyset)

    assert_rejected(result, destination, str(desc["digest"]))


# --- a crafted layer whose private options have no nonce (ocicrypt.md §4.2) ----------------------------


def craft_encrypted_layer(layout: Path, keyset: KeySet, *, with_nonce: bool, index: int = TAMPERED) -> str:
    """Encrypt plain layer ``index`` of ``layout`` in place, JWE-wrapped to the RSA 2048 key.

    Returns:
        The digest of the new encrypted layer.
    """
    desc, plaintext = layer(layout, index)
    key, nonce = layer_cipher.new_key(), layer_cipher.new_nonce()
    encryptor = layer_cipher.CtrHmacEncryptor(key, nonce)
    ciphertext = encryptor.update(plaintext)
    mac = encryptor.finalize()
    cipher_options = {"nonce": b64(nonce)} if with_nonce else {}
    privopts = {"symkey": b64(key), "digest": desc["digest"], "cipheroptions": cipher_options}
    pubopts = {"cipher": layer_cipher.CIPHER_NAME, "hmac": b64(mac), "cipheroptions": {}}
    public_key = Path(keyset["rsa2048"].encryption_key.removeprefix("jwe:")).read_bytes()
    token = jwe.JWE(
        json.dumps(privopts, separators=(",", ":")).encode(),
        protected=json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM"}),
    )
    token.add_recipient(jwk.JWK.from_pem(public_key))
    annotations = {
        **desc["annotations"],
        JWE: b64(token.serialize().encode()),
        PUBOPTS: b64(json.dumps(pubopts, separators=(",", ":")).encode()),
    }
    media_type = f"{desc['mediaType']}+encrypted"
    return str(replace_layer(layout, index, data=ciphertext, media_type=media_type, annotations=annotations)["digest"])


def test_missing_nonce(source_image: Path, destination: Destination, keyset: KeySet, tmp_path: Path) -> None:
    crafted = Path(shutil.copytree(source_image, tmp_path / "crafted"))
    digest = craft_encrypted_layer(crafted, keyset, with_nonce=False)

    result = decrypt(crafted, destination, keyset)

    assert_rejected(result, destination, digest)


@pytest.mark.parametrize("decrypter", ["skopeo", "cocoguest"])
def test_crafted_layer_with_nonce_decrypts(decrypter: str, source_image: Path, keyset: KeySet, tmp_path: Path) -> None:
    """Control for :func:`test_missing_nonce`: the same crafting with the nonce is a valid layer."""
    crafted = Path(shutil.copytree(source_image, tmp_path / "crafted"))
    craft_encrypted_layer(crafted, keyset, with_nonce=True)
    assert set(enc_annotations(layer(crafted)[0])) == {JWE, PUBOPTS}
    dec = tmp_path / "dec"

    if decrypter == "skopeo":
        skopeo_copy(oci_ref(crafted), oci_ref(dec), *keyset["rsa2048"].decrypt_args(), env=keyset.env())
    else:
        result = run_cocoguest(
            "copy", oci_ref(crafted), oci_ref(dec), *keyset["rsa2048"].decrypt_args(), env=keyset.env()
        )
        assert result.returncode == 0, result.stderr

    assert manifest(dec)["layers"] == manifest(source_image)["layers"]
    assert [data for _, data in layer_blobs(dec)] == [data for _, data in layer_blobs(source_image)]
    assert blob(dec, manifest(dec)["config"]["digest"]) == blob(
        source_image, manifest(source_image)["config"]["digest"]
    )
