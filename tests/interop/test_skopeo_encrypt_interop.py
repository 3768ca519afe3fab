"""``cocoguest copy`` against Debian's skopeo 1.9.3 (ocicrypt 1.0.3), in both directions.

skopeo encrypts -> cocoguest decrypts, and cocoguest encrypts -> skopeo decrypts, for each recipient kind
skopeo 1.9.3 has (JWE RSA 2048/4096 and EC P-256, PKCS7, PGP), five recipients at once, and partial
encryption. Decrypted layers must be byte-identical to the source layers (ocicrypt.md §2, §6, §10).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.fixtures.cli import cocoguest_copy, skopeo_copy
from tests.fixtures.images import (
    KEYS_PREFIX,
    NOTE,
    PUBOPTS,
    config_blob,
    enc_annotations,
    is_encrypted,
    layer_blobs,
    manifest,
    oci_ref,
    sha256_digest,
)
from tests.fixtures.keys import KEY_NAMES, KeySet

pytestmark = pytest.mark.interop

LAYER_COUNT = 3


def encrypt_args(keyset: KeySet, names: Iterable[str]) -> list[str]:
    """``--encryption-key`` for each named key."""
    return [arg for name in names for arg in keyset[name].encrypt_args()]


def assert_same_image(expected: Path, actual: Path) -> None:
    """``actual`` has the layers (descriptors and bytes) and the config of ``expected``."""
    want, got = manifest(expected), manifest(actual)
    assert got["config"] == want["config"]
    assert config_blob(actual) == config_blob(expected)
    assert got["layers"] == want["layers"]  # digest, size, media type, annotations: no enc.* left
    for (descriptor, data), (_, original) in zip(layer_blobs(actual), layer_blobs(expected), strict=True):
        assert data == original, f"layer {descriptor['digest']} differs from the source"


def assert_encrypted_as(source: Path, encrypted: Path, layers: set[int]) -> None:
    """``encrypted`` is ``source`` with exactly ``layers`` encrypted in ocicrypt's format (ocicrypt.md §2)."""
    src, enc = manifest(source), manifest(encrypted)
    assert enc["config"] == src["config"]
    assert config_blob(encrypted) == config_blob(source)
    assert len(enc["layers"]) == len(src["layers"])
    pairs = zip(layer_blobs(source), layer_blobs(encrypted), strict=True)
    for i, ((plain, plain_data), (desc, data)) in enumerate(pairs):
        if i not in layers:
            assert desc == plain, f"layer {i} should not be encrypted"
            assert data == plain_data
            continue
        assert desc["mediaType"] == plain["mediaType"] + "+encrypted"
        assert desc["size"] == plain["size"] == len(data)
        assert desc["digest"] == sha256_digest(data)
        assert data != plain_data
        annotations = desc["annotations"]
        assert annotations[NOTE] == plain["annotations"][NOTE]
        assert any(k.startswith(KEYS_PREFIX) for k in annotations), annotations
        pubopts = json.loads(base64.b64decode(annotations[PUBOPTS], validate=True))
        assert pubopts["cipher"] == "AES_256_CTR_HMAC_SHA256"
        assert len(base64.b64decode(pubopts["hmac"], validate=True)) == 32
        assert pubopts["cipheroptions"] == {}


def encrypted_layers(layout: Path) -> set[int]:
    """Indexes of the ``+encrypted`` layers of ``layout``."""
    return {i for i, (desc, _) in enumerate(layer_blobs(layout)) if is_encrypted(desc)}


# --- skopeo encrypts, cocoguest decrypts -------------------------------------------------------------


@pytest.fixture(scope="module")
def skopeo_five(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet, source_image: Path) -> Path:
    """``source_image`` encrypted by skopeo to all five recipients at once."""
    enc = tmp_path_factory.mktemp("skopeo-five") / "enc"
    skopeo_copy(oci_ref(source_image), oci_ref(enc), *encrypt_args(keyset, KEY_NAMES), env=keyset.env())
    return enc


@pytest.mark.parametrize("name", KEY_NAMES)
def test_skopeo_encrypts_cocoguest_decrypts(name: str, keyset: KeySet, source_image: Path, tmp_path: Path) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    skopeo_copy(oci_ref(source_image), oci_ref(enc), *keyset[name].encrypt_args(), env=keyset.env())
    assert encrypted_layers(enc) == set(range(LAYER_COUNT))

    cocoguest_copy(oci_ref(enc), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())

    assert_same_image(source_image, dec)


@pytest.mark.parametrize("name", KEY_NAMES)
def test_skopeo_five_recipients_each_key_decrypts_with_cocoguest(
    name: str, keyset: KeySet, skopeo_five: Path, source_image: Path, tmp_path: Path
) -> None:
    for desc, _ in layer_blobs(skopeo_five):
        assert {k.removeprefix(KEYS_PREFIX) for k in enc_annotations(desc) if k != PUBOPTS} == {
            "jwe",
            "pkcs7",
            "pgp",
        }
    dec = tmp_path / "dec"

    cocoguest_copy(oci_ref(skopeo_five), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())

    assert_same_image(source_image, dec)


@pytest.mark.parametrize("layer", [-1, 0])
def test_skopeo_partial_encryption_cocoguest_decrypts(
    layer: int, keyset: KeySet, source_image: Path, tmp_path: Path
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    key = keyset["rsa2048"]
    skopeo_copy(
        oci_ref(source_image),
        oci_ref(enc),
        *key.encrypt_args(),
        "--encrypt-layer",
        str(layer),
        env=keyset.env(),
    )
    assert encrypted_layers(enc) == {layer % LAYER_COUNT}

    cocoguest_copy(oci_ref(enc), oci_ref(dec), *key.decrypt_args(), env=keyset.env())

    assert_same_image(source_image, dec)


def test_skopeo_roundtrip_sanity(keyset: KeySet, source_image: Path, tmp_path: Path) -> None:
    """The peer itself: skopeo encrypts to five recipients and decrypts with each key (no cocoguest)."""
    enc = tmp_path / "enc"
    skopeo_copy(oci_ref(source_image), oci_ref(enc), *encrypt_args(keyset, KEY_NAMES), env=keyset.env())
    assert_encrypted_as(source_image, enc, set(range(LAYER_COUNT)))
    for name in KEY_NAMES:
        dec = tmp_path / f"dec-{name}"
        skopeo_copy(oci_ref(enc), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())
        assert_same_image(source_image, dec)


# --- cocoguest encrypts, skopeo decrypts -------------------------------------------------------------


@pytest.mark.parametrize("name", KEY_NAMES)
def test_cocoguest_encrypts_skopeo_decrypts(name: str, keyset: KeySet, source_image: Path, tmp_path: Path) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"

    cocoguest_copy(oci_ref(source_image), oci_ref(enc), *keyset[name].encrypt_args(), env=keyset.env())

    assert_encrypted_as(source_image, enc, set(range(LAYER_COUNT)))
    skopeo_copy(oci_ref(enc), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())
    assert_same_image(source_image, dec)


@pytest.fixture(scope="module")
def cocoguest_five(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet, source_image: Path) -> Path:
    """``source_image`` encrypted by cocoguest to all five recipients at once."""
    enc = tmp_path_factory.mktemp("cocoguest-five") / "enc"
    cocoguest_copy(oci_ref(source_image), oci_ref(enc), *encrypt_args(keyset, KEY_NAMES), env=keyset.env())
    return enc


@pytest.mark.parametrize("name", KEY_NAMES)
def test_cocoguest_five_recipients_each_key_decrypts_with_skopeo(
    name: str, keyset: KeySet, cocoguest_five: Path, source_image: Path, tmp_path: Path
) -> None:
    assert_encrypted_as(source_image, cocoguest_five, set(range(LAYER_COUNT)))
    for desc, _ in layer_blobs(cocoguest_five):
        annotations = enc_annotations(desc)
        # One wrapper call per scheme: one entry each, however many recipients (ocicrypt.md §3).
        assert {k: v.count(",") for k, v in annotations.items() if k != PUBOPTS} == {
            KEYS_PREFIX + "jwe": 0,
            KEYS_PREFIX + "pkcs7": 0,
            KEYS_PREFIX + "pgp": 0,
        }
    dec = tmp_path / "dec"

    skopeo_copy(oci_ref(cocoguest_five), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())

    assert_same_image(source_image, dec)


@pytest.mark.parametrize("layer", [-1, 0])
def test_cocoguest_partial_encryption_skopeo_decrypts(
    layer: int, keyset: KeySet, source_image: Path, tmp_path: Path
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    key = keyset["rsa2048"]

    cocoguest_copy(
        oci_ref(source_image),
        oci_ref(enc),
        *key.encrypt_args(),
        "--encrypt-layer",
        str(layer),
        env=keyset.env(),
    )

    assert_encrypted_as(source_image, enc, {layer % LAYER_COUNT})
    skopeo_copy(oci_ref(enc), oci_ref(dec), *key.decrypt_args(), env=keyset.env())
    assert_same_image(source_image, dec)


@pytest.mark.parametrize("name", ["rsa2048", "pkcs7", "pgp"])
def test_cocoguest_encrypts_cocoguest_decrypts_drops_enc_annotations(
    name: str, keyset: KeySet, source_image: Path, tmp_path: Path
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    cocoguest_copy(oci_ref(source_image), oci_ref(enc), *keyset[name].encrypt_args(), env=keyset.env())

    cocoguest_copy(oci_ref(enc), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())

    for desc, _ in layer_blobs(dec):
        assert enc_annotations(desc) == {}
    assert_same_image(source_image, dec)


# --- cocoguest-only: add recipients to an already-encrypted layer (ocicrypt.md §3) -------------------


@pytest.mark.parametrize("added", ["ec-p256", "rsa4096", "pkcs7", "pgp"])
def test_cocoguest_rewrap_adds_recipients(added: str, keyset: KeySet, source_image: Path, tmp_path: Path) -> None:
    enc, rewrapped = tmp_path / "enc", tmp_path / "rewrapped"
    cocoguest_copy(oci_ref(source_image), oci_ref(enc), *keyset["rsa2048"].encrypt_args(), env=keyset.env())

    cocoguest_copy(
        oci_ref(enc),
        oci_ref(rewrapped),
        *keyset[added].encrypt_args(),
        *keyset["rsa2048"].decrypt_args(),
        env=keyset.env(),
    )

    scheme = keyset[added].encryption_key.split(":", 1)[0]
    jwe = KEYS_PREFIX + "jwe"
    for (old, old_data), (new, new_data) in zip(layer_blobs(enc), layer_blobs(rewrapped), strict=True):
        # The layer data, its digest and pubopts stay; only wrapped keys are added.
        assert (new["digest"], new["size"], new["mediaType"]) == (
            old["digest"],
            old["size"],
            old["mediaType"],
        )
        assert new_data == old_data
        assert new["annotations"][PUBOPTS] == old["annotations"][PUBOPTS]
        assert new["annotations"][NOTE] == old["annotations"][NOTE]
        if scheme == "jwe":
            assert new["annotations"][jwe].startswith(old["annotations"][jwe] + ",")
        else:
            assert new["annotations"][jwe] == old["annotations"][jwe]
            assert KEYS_PREFIX + scheme in new["annotations"]
    for name in ("rsa2048", added):
        dec = tmp_path / f"dec-{name}"
        skopeo_copy(oci_ref(rewrapped), oci_ref(dec), *keyset[name].decrypt_args(), env=keyset.env())
        assert_same_image(source_image, dec)
