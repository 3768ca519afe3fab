"""LocationReader (signature/policy/resources.py): kbs:// through a provider, file:// URIs and plain paths.

The provider is the real OfflineFsKbc loaded from image-rs's offline_fs_kbc vectors, or a small recording fake
implementing the ResourceProvider protocol.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError, ResourceNotFoundError, TransportError
from cocoguest.kbs.locations import LocationReader
from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.signature.policy.types import ResourceReader

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs" / "offline-fs-kbc"


class RecordingProvider:
    """A ResourceProvider serving fixed bytes and recording what it was asked for."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data
        self.asked: list[ResourceUri] = []

    def get_resource(self, uri: ResourceUri) -> bytes:
        self.asked.append(uri)
        try:
            return self.data[uri.path]
        except KeyError:
            msg = f"resource {uri} not found"
            raise ResourceNotFoundError(msg) from None


@pytest.fixture
def offline(tmp_path: Path) -> OfflineFsKbc:
    files = []
    for name in ("aa-offline_fs_kbc-keys.json", "aa-offline_fs_kbc-resources.json"):
        shutil.copyfile(VECTORS / name, tmp_path / name)
        files.append(tmp_path / name)
    return OfflineFsKbc.load(files)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    d = tmp_path / "etc" / "containers"
    d.mkdir(parents=True)
    (d / "policy.json").write_text('{"default": [{"type": "reject"}]}')
    (d / "keys").mkdir()
    (d / "keys" / "pub.gpg").write_bytes(b"\x99\x01\x0dkey")
    (d / "with space.pem").write_bytes(b"spaced")
    return d


# --- kbs:// ---------------------------------------------------------------------------------------------------------


def test_kbs_policy_from_offline_fs_parses_as_json(base: Path, offline: OfflineFsKbc) -> None:
    reader: ResourceReader = LocationReader(base, offline)
    policy = json.loads(reader.read("kbs:///default/security-policy/test"))
    assert "transports" in policy


def test_kbs_keys_referenced_by_the_vector_policy_resolve(base: Path, offline: OfflineFsKbc) -> None:
    reader = LocationReader(base, offline)
    policy = json.loads(reader.read("kbs:///default/security-policy/test"))
    locations = [r["keyPath"] for reqs in policy["transports"]["docker"].values() for r in reqs if "keyPath" in r]
    assert locations
    for location in locations:
        assert reader.read(location) == offline.get_resource(ResourceUri.parse(location))


def test_kbs_passes_the_parsed_uri_to_the_provider(base: Path) -> None:
    provider = RecordingProvider({"r/t/g": b"content"})
    reader = LocationReader(base, provider)
    assert reader.read("kbs://kbs.example:8080/r/t/g?v=1") == b"content"
    assert reader.read("kbs+resource:///r/t/g") == b"content"
    assert provider.asked == [ResourceUri.parse("kbs://kbs.example:8080/r/t/g?v=1"), ResourceUri.parse("kbs:///r/t/g")]


def test_kbs_without_provider_says_how_to_configure_one(base: Path) -> None:
    reader = LocationReader(base)
    with pytest.raises(ConfigError) as info:
        reader.read("kbs:///default/security-policy/test")
    message = str(info.value)
    assert "kbs:///default/security-policy/test" in message
    assert "needs a resource provider" in message
    assert "--offline-fs-resources FILE" in message
    assert "configure a KBS" in message


def test_kbs_malformed_uri_names_the_location(base: Path, offline: OfflineFsKbc) -> None:
    reader = LocationReader(base, offline)
    for bad in ("kbs:///default/key", "kbs:///../key/x", "kbs+pkcs11:///a/b/c", "KBS:///a//c"):
        with pytest.raises(ResourceUriError, match="invalid resource URI") as info:
            reader.read(bad)
        assert bad in str(info.value)


def test_kbs_malformed_uri_is_refused_even_without_provider(base: Path) -> None:
    with pytest.raises(ResourceUriError):
        LocationReader(base).read("kbs:///a/b")


def test_kbs_not_found_names_the_uri(base: Path, offline: OfflineFsKbc) -> None:
    with pytest.raises(ResourceNotFoundError, match=r"kbs:///default/security-policy/nope"):
        LocationReader(base, offline).read("kbs:///default/security-policy/nope")


def test_kbs_size_cap(base: Path) -> None:
    provider = RecordingProvider({"a/b/ok": b"x" * 10, "a/b/big": b"x" * 11})
    reader = LocationReader(base, provider, max_bytes=10)
    assert reader.read("kbs:///a/b/ok") == b"x" * 10
    with pytest.raises(ConfigError, match=r"kbs:///a/b/big is 11 bytes, more than the limit of 10"):
        reader.read("kbs:///a/b/big")


# --- file:// --------------------------------------------------------------------------------------------------------


def test_file_uri(base: Path) -> None:
    reader = LocationReader(base)
    assert reader.read(f"file://{base}/keys/pub.gpg") == b"\x99\x01\x0dkey"
    assert reader.read(f"file://localhost{base}/keys/pub.gpg") == b"\x99\x01\x0dkey"
    assert reader.read(f"FILE://{base}/policy.json").startswith(b"{")
    assert reader.read(f"file://{base}/with%20space.pem") == b"spaced"


@pytest.mark.parametrize(
    ("suffix", "why"),
    [
        ("file://remote-host/etc/x", "host must be empty or localhost"),
        ("file://keys/pub.gpg", "host must be empty or localhost"),
        ("file:keys/pub.gpg", "write file URIs as file:///absolute/path"),
        ("file:/etc/x", "write file URIs as file:///absolute/path"),
        ("file:///etc/x?y=1", "query or fragment"),
        ("file:///etc/x#frag", "query or fragment"),
        ("file:///etc/x%00y", "NUL"),
        ("file:///etc/%ff", "not UTF-8"),
    ],
)
def test_file_uri_errors(base: Path, suffix: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        LocationReader(base).read(suffix)
    assert why in str(info.value)
    assert suffix in str(info.value)


def test_file_uri_missing_file(base: Path) -> None:
    location = f"file://{base}/nope.json"
    with pytest.raises(ResourceNotFoundError) as info:
        LocationReader(base).read(location)
    assert location in str(info.value)


# --- plain paths ------------------------------------------------------------------------------------------------------


def test_absolute_path(base: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.pub"
    other.write_bytes(b"abs")
    assert LocationReader(base).read(str(other)) == b"abs"


def test_relative_path_is_relative_to_the_base_dir_not_the_cwd(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "cwd"
    (decoy / "keys").mkdir(parents=True)
    (decoy / "keys" / "pub.gpg").write_bytes(b"decoy")
    monkeypatch.chdir(decoy)
    reader = LocationReader(base)
    assert reader.read("keys/pub.gpg") == b"\x99\x01\x0dkey"
    assert reader.read("./policy.json").startswith(b"{")


def test_plain_path_that_looks_like_a_drive_letter_is_a_path(base: Path) -> None:
    (base / "c:").mkdir()
    (base / "c:" / "k").write_bytes(b"colon")
    assert LocationReader(base).read("c:/k") == b"colon"


def test_missing_plain_path_names_location_and_resolved_path(base: Path) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        LocationReader(base).read("keys/missing.gpg")
    assert "keys/missing.gpg" in str(info.value)
    assert str(base / "keys" / "missing.gpg") in str(info.value)


def test_path_through_a_file_is_not_found(base: Path) -> None:
    with pytest.raises(ResourceNotFoundError, match=r"policy\.json/x"):
        LocationReader(base).read("policy.json/x")


def test_file_size_cap(base: Path) -> None:
    (base / "ten").write_bytes(b"0123456789")
    (base / "eleven").write_bytes(b"0123456789A")
    reader = LocationReader(base, max_bytes=10)
    assert reader.read("ten") == b"0123456789"
    assert reader.read(f"file://{base}/ten") == b"0123456789"
    with pytest.raises(ConfigError, match=r"eleven .*larger than the limit of 10 bytes"):
        reader.read("eleven")
    with pytest.raises(ConfigError, match=r"larger than the limit of 10 bytes"):
        reader.read(f"file://{base}/eleven")


def test_default_cap_is_finite(base: Path) -> None:
    big = base / "big"
    with big.open("wb") as f:
        f.truncate(DEFAULT_LIMITS.max_policy_resource_bytes + 1)  # sparse
    with pytest.raises(ConfigError, match="larger than the limit"):
        LocationReader(base).read("big")


def test_directory_is_refused(base: Path) -> None:
    with pytest.raises(ConfigError, match=r"resource keys \(.*/keys\) is not a regular file"):
        LocationReader(base).read("keys")


def test_fifo_is_refused_without_hanging(base: Path) -> None:
    os.mkfifo(base / "fifo")
    with pytest.raises(ConfigError, match="not a regular file"):
        LocationReader(base).read("fifo")


def test_symlink_to_a_file_is_followed(base: Path) -> None:
    (base / "link.json").symlink_to(base / "policy.json")
    assert LocationReader(base).read("link.json").startswith(b"{")


def test_eloop_is_a_transport_error(base: Path) -> None:
    (base / "loop").symlink_to(base / "loop")
    with pytest.raises(TransportError, match="cannot open resource loop"):
        LocationReader(base).read("loop")


# --- other forms ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("https://example.com/policy.json", "scheme 'https' is not supported"),
        ("http://example.com/policy.json", "scheme 'http' is not supported"),
        ("oci://x/y", "scheme 'oci' is not supported"),
        ("", "empty resource location"),
        ("a\x00b", "NUL byte"),
    ],
)
def test_unsupported_locations(base: Path, location: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        LocationReader(base).read(location)


def test_base_dir_must_be_absolute_and_cap_positive(base: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        LocationReader(Path("relative"))
    with pytest.raises(ValueError, match="positive"):
        LocationReader(base, max_bytes=0)
