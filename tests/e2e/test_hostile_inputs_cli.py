"""Hostile inputs through ``cocoguest pull oci:...`` (issue 7, defects 5 and 9, error lines): every one ends
with status 1, exactly one typed ``error:`` line under 2,000 characters, no traceback, no bundle and nothing
new in the store."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cocoguest.crypto.keys import PublicKeyMaterial
from cocoguest.ocicrypt.keywrap.jwe import ANNOTATION_KEY as JWE_KEYS
from cocoguest.ocicrypt.keywrap.jwe import JweWrapper
from tests.e2e.conftest import run, store_layer_dirs
from tests.fixtures.layers import Member, TarBuilder
from tests.fixtures.oci_images import MEDIA_MANIFEST, WrittenImage, sha256_digest, write_image_layout

_CMD = {"Cmd": ["/a"]}
PUBOPTS = "org.opencontainers.image.enc.pubopts"


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _write_blob(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    _blob_path(layout, digest).write_bytes(data)
    return digest


def _manifest_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def _rewrite_manifest(layout: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the (only) manifest of ``layout`` and point index.json at the result."""
    manifest = json.loads(_blob_path(layout, _manifest_digest(layout)).read_text())
    change(manifest)
    data = json.dumps(manifest).encode()
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=_write_blob(layout, data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


def _pull(layout: Path, bundle: Path, work_dir: Path, *extra: str) -> int:
    return run("pull", "--insecure-policy", "-q", "--work-dir", str(work_dir), *extra, f"oci:{layout}", str(bundle))


def _assert_refused(code: int, capsys: pytest.CaptureFixture[str], bundle: Path, work_dir: Path, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(lines) == 1, err
    (line,) = lines
    assert len(line) < 2000
    assert "Traceback" not in err
    assert "internal error" not in line  # a typed error, not the last-resort handler
    for text in expected:
        assert text in line
    assert not bundle.exists()
    assert store_layer_dirs(work_dir) == []
    return line


def _layer_image(tmp_path: Path, layer: bytes) -> WrittenImage:
    return write_image_layout(tmp_path / "image", [layer], config_extra=_CMD)


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        pytest.param(
            TarBuilder().add(Member("f", xattrs={"user.a\0b": b"1"})).build(), "contains a NUL byte", id="nul-xattr"
        ),
        pytest.param(TarBuilder().file("f", b"x", mtime=2**90).build(), "mtime is outside", id="mtime-2^90"),
        pytest.param(TarBuilder().dir("d", mtime=-(2**90)).build(), "mtime is outside", id="dir-mtime--2^90"),
        pytest.param(TarBuilder().char("c", 2**31, 1).build(), "device number", id="device-2^31"),
        pytest.param(
            TarBuilder().add(Member("f", pax={"uid": b"9" * 4000})).build(), "PAX uid value", id="pax-uid-4000-digits"
        ),
    ],
)
def test_hostile_layer(
    tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str], layer: bytes, expected: str
) -> None:
    image = _layer_image(tmp_path, layer)
    bundle = tmp_path / "bundle"
    line = _assert_refused(_pull(image.path, bundle, work_dir), capsys, bundle, work_dir, expected)
    assert image.layer_digests[0] in line


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested deeper", id="nested"),
        pytest.param(b"9" * 10_000, "a number of 10000 digits", id="bigint"),
    ],
)
def test_hostile_config(
    tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str], value: bytes, expected: str
) -> None:
    image = _layer_image(tmp_path, TarBuilder().file("a").build())
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"x":' + value + b"}"

    def swap_config(manifest: dict[str, Any]) -> None:
        manifest["config"].update(digest=_write_blob(image.path, config), size=len(config))

    _rewrite_manifest(image.path, swap_config)
    bundle = tmp_path / "bundle"
    _assert_refused(_pull(image.path, bundle, work_dir), capsys, bundle, work_dir, "config", expected)


# -- encrypted layers ---------------------------------------------------------------------------------------------


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


def _encrypted(tmp_path: Path, layers: int = 1) -> tuple[Path, Path, Path]:
    """An encrypted copy of a small image: (layout, private key, public key)."""
    private, public = _keypair(tmp_path)
    plain = write_image_layout(
        tmp_path / "plain", [TarBuilder().file(f"f{i}", b"x").build() for i in range(layers)], config_extra=_CMD
    )
    enc = tmp_path / "enc"
    assert run("copy", "-q", "--encryption-key", f"jwe:{public}", f"oci:{plain.path}:latest", f"oci:{enc}:latest") == 0
    return enc, private, public


def _wrap_for(public: Path, payload: bytes) -> str:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: PLC0415

    key = load_pem_public_key(public.read_bytes())
    return base64.b64encode(JweWrapper([PublicKeyMaterial(key, str(public))]).wrap(payload)).decode()  # type: ignore[arg-type]


_DEEP = b"[" * 100_000 + b"]" * 100_000
_BIG = b"9" * 10_000


@pytest.mark.parametrize(
    ("annotation", "payload", "expected"),
    [
        pytest.param(
            PUBOPTS, b'{"cipher":"AES_256_CTR_HMAC_SHA256","x":' + _DEEP + b"}", "nested", id="pubopts-nested"
        ),
        pytest.param(PUBOPTS, b'{"cipher":"AES_256_CTR_HMAC_SHA256","x":' + _BIG + b"}", "digits", id="pubopts-bigint"),
        pytest.param(JWE_KEYS, b'{"symkey":' + _DEEP + b"}", "nested", id="private-options-nested"),
        pytest.param(JWE_KEYS, b'{"symkey":"","x":' + _BIG + b"}", "digits", id="private-options-bigint"),
    ],
)
def test_hostile_encryption_options(
    tmp_path: Path,
    work_dir: Path,
    capsys: pytest.CaptureFixture[str],
    annotation: str,
    payload: bytes,
    expected: str,
) -> None:
    enc, private, public = _encrypted(tmp_path)
    value = base64.b64encode(payload).decode() if annotation == PUBOPTS else _wrap_for(public, payload)

    def change(manifest: dict[str, Any]) -> None:
        manifest["layers"][0]["annotations"][annotation] = value

    _rewrite_manifest(enc, change)
    capsys.readouterr()
    bundle = tmp_path / "bundle"
    code = _pull(enc, bundle, work_dir, "--decryption-key", str(private))
    _assert_refused(code, capsys, bundle, work_dir, expected)


def test_many_jwe_entries_fail_fast_with_a_short_line(
    tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    enc, private, _ = _encrypted(tmp_path)
    (tmp_path / "other").mkdir()
    decoy = _wrap_for(_keypair(tmp_path / "other")[1], b"{}")  # for a key we do not hold

    def change(manifest: dict[str, Any]) -> None:
        annotations = manifest["layers"][0]["annotations"]
        annotations[JWE_KEYS] = ",".join([decoy] * 1500 + [annotations[JWE_KEYS]])

    _rewrite_manifest(enc, change)
    operations: list[object] = []
    from cocoguest.crypto import jwe  # noqa: PLC0415

    monkeypatch.setattr(jwe, "_decrypt_with", lambda *a: operations.append(a))
    capsys.readouterr()
    bundle = tmp_path / "bundle"
    code = _pull(enc, bundle, work_dir, "--decryption-key", str(private))
    _assert_refused(code, capsys, bundle, work_dir, "1501 wrapped-key entries", "max_wrapped_keys_per_layer")
    assert operations == []


@pytest.fixture
def budgets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every UnwrapBudget made during the test; each counts the attempts taken from it."""
    from cocoguest.ocicrypt import layer as ocicrypt_layer  # noqa: PLC0415

    instances: list[Any] = []

    class RecordingBudget(ocicrypt_layer.UnwrapBudget):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.taken = 0
            instances.append(self)

        def take(self, what: str) -> None:
            self.taken += 1
            super().take(what)

    monkeypatch.setattr(ocicrypt_layer, "UnwrapBudget", RecordingBudget)
    monkeypatch.setattr("cocoguest.image.pull.UnwrapBudget", RecordingBudget)
    return instances


def test_pull_shares_one_unwrap_budget_over_its_layers(tmp_path: Path, work_dir: Path, budgets: list[Any]) -> None:
    enc, private, _ = _encrypted(tmp_path, layers=3)
    budgets.clear()
    assert _pull(enc, tmp_path / "bundle", work_dir, "--decryption-key", str(private), "--snapshotter", "copy") == 0
    assert [b.taken for b in budgets] == [3]


def test_copy_shares_one_unwrap_budget_over_its_layers(tmp_path: Path, budgets: list[Any]) -> None:
    enc, private, _ = _encrypted(tmp_path, layers=3)
    budgets.clear()
    assert run("copy", "-q", "--decryption-key", str(private), f"oci:{enc}:latest", f"oci:{tmp_path / 'dec'}:x") == 0
    assert [b.taken for b in budgets] == [3]


# -- a huge index without the wanted platform ---------------------------------------------------------------------


def test_ten_thousand_platform_index_gives_a_short_line(
    tmp_path: Path, work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _layer_image(tmp_path, TarBuilder().file("a").build())
    manifest = _manifest_digest(image.path)
    size = _blob_path(image.path, manifest).stat().st_size
    entries = [
        {"mediaType": MEDIA_MANIFEST, "digest": manifest, "size": size,
         "platform": {"os": "linux", "architecture": f"arch{i:05d}"}}
        for i in range(10_000)
    ]  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    data = json.dumps(index).encode()
    top = {"schemaVersion": 2, "manifests": [
        {"mediaType": index["mediaType"], "digest": _write_blob(image.path, data), "size": len(data)}]}  # fmt: skip
    (image.path / "index.json").write_text(json.dumps(top))
    bundle = tmp_path / "bundle"
    line = _assert_refused(
        _pull(image.path, bundle, work_dir, "--platform", "linux/nothere"), capsys, bundle, work_dir, "linux/nothere"
    )
    assert "linux/arch00000" in line
    assert "and 9992 more" in line
