"""`cocoguest copy` in process: round trips, partial encryption, re-wrapping, atomic destination, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cocoguest.cli.main import main
from cocoguest.image.build import build_layout
from cocoguest.image.copy import selected_layers

DEMO_LAYERS = sorted((Path(__file__).parents[2] / "demo" / "layers").iterdir())


def _write_keypair(directory: Path, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(private), str(public)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("keys")
    return {
        "rsa": _write_keypair(directory, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ec": _write_keypair(directory, "ec", ec.generate_private_key(ec.SECP256R1())),
    }


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    layout = tmp_path / "plain"
    build_layout(layout, DEMO_LAYERS)
    return layout


def _manifest(layout: Path) -> dict[str, object]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_text())  # type: ignore[no-any-return]


def _layers(layout: Path) -> list[dict[str, object]]:
    return list(_manifest(layout)["layers"])  # type: ignore[call-overload]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _copy(*args: str) -> int:
    return main(["copy", "--quiet", *args])


def test_encrypt_then_decrypt_round_trip(plain: Path, tmp_path: Path, keys: dict[str, tuple[str, str]]) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert _copy("--encryption-key", f"jwe:{keys['rsa'][1]}", f"oci:{plain}:latest", f"oci:{enc}:latest") == 0
    encrypted = _layers(enc)
    assert all(str(layer["mediaType"]).endswith("+encrypted") for layer in encrypted)
    assert _manifest(enc)["config"] == _manifest(plain)["config"]
    assert _copy("--decryption-key", keys["rsa"][0], f"oci:{enc}:latest", f"oci:{dec}:latest") == 0
    assert _layers(dec) == _layers(plain)
    for layer in _layers(dec):
        digest = str(layer["digest"]).split(":")[1]
        assert (dec / "blobs" / "sha256" / digest).read_bytes() == (plain / "blobs" / "sha256" / digest).read_bytes()


@pytest.mark.parametrize(
    ("requested", "expected"), [((-1,), {1}), ((0,), {0}), ((), {0, 1}), ((2,), {0}), ((-3,), set())]
)
def test_encrypt_layer_index_rule(
    plain: Path,
    tmp_path: Path,
    keys: dict[str, tuple[str, str]],
    requested: tuple[int, ...],
    expected: set[int],
) -> None:
    assert selected_layers(2, requested) == expected
    enc = tmp_path / "enc"
    flags = [f"--encrypt-layer={i}" for i in requested]
    assert _copy("--encryption-key", f"jwe:{keys['ec'][1]}", *flags, f"oci:{plain}", f"oci:{enc}") == 0
    assert {i for i, layer in enumerate(_layers(enc)) if str(layer["mediaType"]).endswith("+encrypted")} == expected


def test_add_recipients_to_encrypted_image(plain: Path, tmp_path: Path, keys: dict[str, tuple[str, str]]) -> None:
    enc, enc2, dec = tmp_path / "enc", tmp_path / "enc2", tmp_path / "dec"
    assert _copy("--encryption-key", f"jwe:{keys['rsa'][1]}", f"oci:{plain}", f"oci:{enc}") == 0
    assert (
        _copy(
            "--encryption-key",
            f"jwe:{keys['ec'][1]}",
            "--decryption-key",
            keys["rsa"][0],
            f"oci:{enc}",
            f"oci:{enc2}",
        )
        == 0
    )
    assert [layer["digest"] for layer in _layers(enc2)] == [layer["digest"] for layer in _layers(enc)]
    assert _copy("--decryption-key", keys["ec"][0], f"oci:{enc2}", f"oci:{dec}") == 0
    assert _layers(dec) == _layers(plain)


def test_already_encrypted_without_key_is_an_error(
    plain: Path, tmp_path: Path, keys: dict[str, tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    assert _copy("--encryption-key", f"jwe:{keys['rsa'][1]}", f"oci:{plain}", f"oci:{enc}") == 0
    assert _copy("--encryption-key", f"jwe:{keys['ec'][1]}", f"oci:{enc}", f"oci:{tmp_path / 'x'}") == 1
    assert "already encrypted" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_failed_copy_leaves_no_destination(
    plain: Path, tmp_path: Path, keys: dict[str, tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert _copy("--encryption-key", f"jwe:{keys['rsa'][1]}", f"oci:{plain}", f"oci:{enc}") == 0
    capsys.readouterr()
    assert _copy("--decryption-key", keys["ec"][0], f"oci:{enc}", f"oci:{dec}") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: layer sha256:")
    assert err.count("\n") == 1
    assert not dec.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_copy_leaves_existing_destination_unchanged(
    plain: Path, tmp_path: Path, keys: dict[str, tuple[str, str]]
) -> None:
    enc, existing = tmp_path / "enc", tmp_path / "existing"
    build_layout(existing, DEMO_LAYERS[:1], ref="old")
    before = _tree_hash(existing)
    assert _copy("--encryption-key", f"jwe:{keys['rsa'][1]}", f"oci:{plain}", f"oci:{enc}") == 0
    blob = next(iter(sorted((enc / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)[-1:]))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    assert _copy("--decryption-key", keys["rsa"][0], f"oci:{enc}", f"oci:{existing}:new") == 1
    assert _tree_hash(existing) == before


def test_copy_into_existing_layout_adds_an_image(plain: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    build_layout(existing, DEMO_LAYERS[:1], ref="old")
    assert _copy(f"oci:{plain}:latest", f"oci:{existing}:new") == 0
    names = [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((existing / "index.json").read_text())["manifests"]
    ]
    assert names == ["old", "new"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encryption-key", "rot13:/x"], "unknown protocol 'rot13'"),
        (["--encryption-key", "jwe:/nonexistent.pem"], "/nonexistent.pem"),
        (["--decryption-key", "/nonexistent.pem"], "/nonexistent.pem: no such file"),
        (["--encrypt-layer", "1"], "--encrypt-layer needs --encryption-key"),
        (["--encrypt-layer", "x", "--encryption-key", "jwe:/x"], "not an integer"),
    ],
)
def test_bad_arguments(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _copy(*args, f"oci:{plain}", f"oci:{tmp_path / 'out'}") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_garbage_key_file(plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"this is not a key\n")
    assert _copy("--decryption-key", str(bad), f"oci:{plain}", f"oci:{tmp_path / 'out'}") == 1
    assert f"key file {bad}: not a private key" in capsys.readouterr().err


def test_password_protected_key(plain: Path, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "k.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s:cret"),
        )
    )
    public = tmp_path / "k.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    password_file = tmp_path / "pw"
    password_file.write_bytes(b"s:cret")
    enc = tmp_path / "enc"
    assert _copy("--encryption-key", f"jwe:{public}", f"oci:{plain}", f"oci:{enc}") == 0
    assert _copy("--decryption-key", f"{private}:pass=s:cret", f"oci:{enc}", f"oci:{tmp_path / 'd1'}") == 0
    assert _copy("--decryption-key", f"{private}:file={password_file}", f"oci:{enc}", f"oci:{tmp_path / 'd2'}") == 0
    assert _copy("--decryption-key", f"{private}:wrong", f"oci:{enc}", f"oci:{tmp_path / 'd3'}") == 1
    assert _copy("--decryption-key", str(private), f"oci:{enc}", f"oci:{tmp_path / 'd4'}") == 1
    assert not (tmp_path / "d3").exists()
