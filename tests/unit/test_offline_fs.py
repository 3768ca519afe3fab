"""The offline_fs_kbc provider (kbs/offline_fs.py) against image-rs's offline_fs_kbc files (guest-components.md §5.6).

Vectors: tests/vectors/image-rs/offline-fs-kbc/ (keys, resources, resources-for-icr), copied into tmp_path.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError, ResourceNotFoundError
from cocoguest.kbs.offline_fs import DEFAULT_PATHS, OfflineFsKbc
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import Limits

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs" / "offline-fs-kbc"
KEYS = "aa-offline_fs_kbc-keys.json"
RESOURCES = "aa-offline_fs_kbc-resources.json"
ICR = "aa-offline_fs_kbc-resources-for-icr.json"


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    """The three vector files, copied to a private directory."""
    out = tmp_path / "vectors"
    out.mkdir()
    for name in (KEYS, RESOURCES, ICR):
        shutil.copyfile(VECTORS / name, out / name)
    return out


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the image-rs vectors -----------------------------------------------------------------------------------------


def test_vectors_load_and_every_entry_decodes(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS, vectors / RESOURCES])
    expected: dict[str, bytes] = {}
    for name in (KEYS, RESOURCES):
        for key, value in json.loads((vectors / name).read_text()).items():
            expected[key] = base64.b64decode(value)
    assert kbc.paths() == frozenset(expected)
    assert len(kbc) == len(expected) == 17
    for key, value in expected.items():
        assert kbc.get_resource(ResourceUri.parse(f"kbs:///{key}")) == value


def test_keys_are_32_bytes(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS])
    names = sorted(kbc.paths())
    assert "default/key/key_id1" in names
    assert "default/key/ssh-demo" in names
    for name in names:
        assert len(kbc.get_resource(ResourceUri.parse(f"kbs:///{name}"))) == 32


def test_security_policy_is_a_policy_json(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS, vectors / RESOURCES])
    policy = json.loads(kbc.get_resource(ResourceUri.parse("kbs:///default/security-policy/test")))
    assert "default" in policy
    docker = policy["transports"]["docker"]
    # The upstream test policy points its keys back at the same provider (guest-components.md §9.9).
    key_paths = [req.get("keyPath") for reqs in docker.values() for req in reqs if "keyPath" in req]
    assert "kbs:///default/gpg-public-key/test" in key_paths
    for key_path in key_paths:
        assert kbc.get_resource(ResourceUri.parse(key_path))


def test_other_resources_have_their_formats(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / RESOURCES])

    def get(path: str) -> bytes:
        return kbc.get_resource(ResourceUri.parse(f"kbs:///{path}"))

    assert b"BEGIN PUBLIC KEY" in get("default/cosign-public-key/test")
    assert "auths" in json.loads(get("default/credential/test"))
    assert get("default/gpg-public-key/test")[:1] in (b"\x99", b"\xc6", b"-")  # binary or armored key
    assert b"docker" in get("default/sigstore-config/test")


def test_icr_vector_loads_and_its_empty_resource_is_empty(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / ICR])
    assert kbc.get_resource(ResourceUri.parse("kbs:///default/sigstore-config/test")) == b""
    json.loads(kbc.get_resource(ResourceUri.parse("kbs:///default/security-policy/test")))


def test_host_port_and_query_are_ignored(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS])
    plain = kbc.get_resource(ResourceUri.parse("kbs:///default/key/key_id1"))
    assert kbc.get_resource(ResourceUri.parse("kbs://kbs.example:8080/default/key/key_id1?v=2")) == plain
    assert ResourceUri.parse("kbs://other/default/key/key_id1") in kbc


def test_is_a_resource_provider(vectors: Path) -> None:
    provider: ResourceProvider = OfflineFsKbc.load([vectors / KEYS])
    assert provider.get_resource(ResourceUri.parse("kbs:///default/key/2"))


# --- lookups ------------------------------------------------------------------------------------------------------


def test_unknown_resource_names_the_uri(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS])
    with pytest.raises(ResourceNotFoundError, match=r"kbs:///default/key/nope"):
        kbc.get_resource(ResourceUri.parse("kbs:///default/key/nope"))
    assert ResourceUri.parse("kbs:///default/key/nope") not in kbc
    assert "default/key/nope" not in kbc  # only ResourceUri values are members


def test_repr_does_not_leak_values(vectors: Path) -> None:
    kbc = OfflineFsKbc.load([vectors / KEYS])
    key = kbc.get_resource(ResourceUri.parse("kbs:///default/key/key_id1"))
    text = repr(kbc)
    assert "11 resources" in text
    assert _b64(key) not in text
    assert "key_id1" not in text


# --- merging ------------------------------------------------------------------------------------------------------


def test_missing_file_warns_and_is_skipped(vectors: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nope.json"
    with caplog.at_level(logging.WARNING, logger="cocoguest.kbs.offline_fs"):
        kbc = OfflineFsKbc.load([missing, vectors / KEYS])
    assert len(kbc) == 11
    assert str(missing) in caplog.text


def test_no_files_gives_an_empty_provider(tmp_path: Path) -> None:
    kbc = OfflineFsKbc.load([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(kbc) == 0
    with pytest.raises(ResourceNotFoundError):
        kbc.get_resource(ResourceUri.parse("kbs:///a/b/c"))


def test_later_file_wins_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _write(tmp_path / "first.json", {"r/t/dup": _b64(b"one"), "r/t/only1": _b64(b"1")})
    second = _write(tmp_path / "second.json", {"r/t/dup": _b64(b"two"), "r/t/only2": _b64(b"2")})
    with caplog.at_level(logging.WARNING, logger="cocoguest.kbs.offline_fs"):
        kbc = OfflineFsKbc.load([first, second])
    assert kbc.get_resource(ResourceUri.parse("kbs:///r/t/dup")) == b"two"
    assert kbc.source_of(ResourceUri.parse("kbs:///r/t/dup")) == second
    assert kbc.source_of(ResourceUri.parse("kbs:///r/t/only1")) == first
    assert kbc.paths() == {"r/t/dup", "r/t/only1", "r/t/only2"}
    dup_warnings = [r for r in caplog.records if "r/t/dup" in r.getMessage()]
    assert len(dup_warnings) == 1
    assert str(first) in dup_warnings[0].getMessage()
    assert str(second) in dup_warnings[0].getMessage()
    # and in the other order, the other file wins
    assert OfflineFsKbc.load([second, first]).get_resource(ResourceUri.parse("kbs:///r/t/dup")) == b"one"


def test_default_paths_are_upstreams() -> None:
    assert [str(p) for p in DEFAULT_PATHS] == [
        "/etc/aa-offline_fs_kbc-keys.json",
        "/etc/aa-offline_fs_kbc-resources.json",
    ]


# --- malformed files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a/b/c": "YQ=="', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'["a/b/c"]', "must hold a JSON object, not list"),
        (b'"x"', "must hold a JSON object, not str"),
        (b'{"a/b/c": 1}', "value of 'a/b/c' must be a base64 string"),
        (b'{"a/b/c": null}', "value of 'a/b/c' must be a base64 string"),
        (b'{"a/b/c": "not base64!"}', "value of 'a/b/c' is not standard base64"),
        (b'{"a/b/c": "YQ"}', "value of 'a/b/c' is not standard base64"),  # missing padding
        (b'{"a/b/c": "YQ==\\n"}', "value of 'a/b/c' is not standard base64"),  # whitespace
        (b'{"a/b/c": "-_8="}', "value of 'a/b/c' is not standard base64"),  # URL-safe alphabet
        (b'{"a/b/c": "\\u00e9A=="}', "value of 'a/b/c' is not standard base64"),  # non-ASCII
        (b'{"a/b/c": "YR=="}', "value of 'a/b/c' is not canonical base64"),  # non-zero trailing bits
        (b'{"key_id1": "YQ=="}', "resource name 'key_id1' is not <repo>/<type>/<tag>"),
        (b'{"a/b/c/d": "YQ=="}', "resource name 'a/b/c/d' is not <repo>/<type>/<tag>"),
        (b'{"a/../c": "YQ=="}', "resource name 'a/../c' is not <repo>/<type>/<tag>"),
        (b'{"a//c": "YQ=="}', "resource name 'a//c' is not <repo>/<type>/<tag>"),
        (b'{"a/b/c": "YQ==", "a/b/c": "Yg=="}', "resource 'a/b/c' is defined twice"),
    ],
)
def test_malformed_file_names_file_and_entry(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        OfflineFsKbc.load([path])
    message = str(info.value)
    assert why in message
    assert str(path) in message
    assert "\n" not in message


def test_bad_value_message_does_not_contain_the_value(tmp_path: Path) -> None:
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY3ODkw!"
    path = _write(tmp_path / "bad.json", {"default/key/k": secret})
    with pytest.raises(ConfigError) as info:
        OfflineFsKbc.load([path])
    assert secret not in info.value.diagnostics()
    assert secret[:16] not in info.value.diagnostics()


def test_a_malformed_file_fails_the_whole_load(vectors: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        OfflineFsKbc.load([vectors / KEYS, bad])


def test_too_large_file(tmp_path: Path) -> None:
    limits = Limits(max_offline_fs_file_bytes=64)
    ok = _write(tmp_path / "ok.json", {"a/b/c": _b64(b"x" * 20)})
    assert len(ok.read_bytes()) <= 64
    assert OfflineFsKbc.load([ok], limits=limits).get_resource(ResourceUri.parse("kbs:///a/b/c")) == b"x" * 20
    big = _write(tmp_path / "big.json", {"a/b/c": _b64(b"x" * 60)})
    with pytest.raises(ConfigError, match=r"big\.json is larger than 64 bytes"):
        OfflineFsKbc.load([big], limits=limits)


def test_directory_is_not_a_resource_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        OfflineFsKbc.load([tmp_path])


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        OfflineFsKbc.load([fifo])


def test_unreadable_file_is_an_error_not_a_skip(tmp_path: Path) -> None:
    # A path through a regular file fails with ENOTDIR: an OSError other than "does not exist" (works as root).
    blocker = tmp_path / "file"
    blocker.write_text("{}")
    with pytest.raises(ConfigError, match="cannot open offline_fs resource file"):
        OfflineFsKbc.load([blocker / "x.json"])


def test_constructor_validates_names() -> None:
    assert len(OfflineFsKbc({"a/b/c": b"1"})) == 1
    with pytest.raises(ConfigError, match="'a/b' is not <repo>/<type>/<tag>"):
        OfflineFsKbc({"a/b": b"1"})
