"""SecureMount request validation and key resolution (pure; the cryptsetup path is tests/storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoguest.cdh.storage.keys import RANDOM_KEY_BYTES, resolve_key
from cocoguest.cdh.storage.request import SecureMountRequest, SourceType, TargetType, parse_block_device
from cocoguest.errors import SecureMountError, SecureMountOptionError, UnsupportedError
from cocoguest.limits import Limits


def _request(
    options: dict[str, str], flags: list[str] | None = None, mount_point: str = "/mnt/disk"
) -> SecureMountRequest:
    return SecureMountRequest("block-device", options, flags or [], mount_point)


def test_a_full_filesystem_request() -> None:
    spec = parse_block_device(
        _request(
            {
                "deviceId": "7:3",
                "sourceType": "empty",
                "key": "sealed.a.b.c",
                "encryptionType": "luks2",
                "dataIntegrity": "true",
                "mapperName": "data-1",
                "targetType": "fileSystem",
                "filesystemType": "ext4",
                "mkfsOpts": "-O ^has_journal -m 0",
            },
            ["noatime", "nodev"],
        )
    )
    assert spec.device_id == (7, 3)
    assert spec.device_path is None
    assert (spec.source, spec.target, spec.integrity) == (SourceType.EMPTY, TargetType.FILESYSTEM, True)
    assert spec.mkfs_options == ("-O", "^has_journal", "-m", "0")
    assert spec.mount_flags == ("noatime", "nodev")


def test_defaults() -> None:
    spec = parse_block_device(_request({"devicePath": "/dev/vdb", "sourceType": "encrypted"}))
    assert (spec.target, spec.integrity, spec.filesystem, spec.key, spec.mapper_name) == (
        TargetType.DEVICE,
        False,
        "ext4",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("request_", "option"),
    [
        (SecureMountRequest("alibaba-cloud-oss", {}, [], "/m"), "volume_type"),
        (_request({"sourceType": "empty"}), "devicePath"),
        (_request({"devicePath": "/dev/a", "deviceId": "1:2", "sourceType": "empty"}), "devicePath"),
        (_request({"devicePath": "/etc/passwd", "sourceType": "empty"}), "devicePath"),
        (_request({"devicePath": "/dev/../etc/x", "sourceType": "empty"}), "devicePath"),
        (_request({"devicePath": "/dev/-rf", "sourceType": "empty"}), "devicePath"),
        (_request({"deviceId": "7", "sourceType": "empty"}), "deviceId"),
        (_request({"deviceId": "07:1", "sourceType": "empty"}), "deviceId"),
        (_request({"devicePath": "/dev/vdb"}), "sourceType"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "plain"}), "sourceType"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "key": "http://x"}), "key"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "dataIntegrity": "yes"}), "dataIntegrity"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "mapperName": "../x"}), "mapperName"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "mapperName": "-x"}), "mapperName"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "targetType": "dir"}), "targetType"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "filesystemType": "ext4"}), "filesystemType"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty"}, ["ro"]), "flags"),
        (
            _request(
                {"devicePath": "/dev/vdb", "sourceType": "empty", "targetType": "fileSystem", "filesystemType": "vfat"}
            ),
            "filesystemType",
        ),
        (
            _request({"devicePath": "/dev/vdb", "sourceType": "empty", "targetType": "fileSystem", "mkfsOpts": "a;b"}),
            "mkfsOpts",
        ),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "targetType": "fileSystem"}, ["-o"]), "flags"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "pool": "p"}), "pool"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty", "cipher": "null"}), "cipher"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty"}, mount_point="relative"), "mount_point"),
        (_request({"devicePath": "/dev/vdb", "sourceType": "empty"}, mount_point="/a/../b"), "mount_point"),
    ],
)
def test_refusals_name_the_option(request_: SecureMountRequest, option: str) -> None:
    with pytest.raises(SecureMountOptionError, match=f"secure mount option '{option}'"):
        parse_block_device(request_)


@pytest.mark.parametrize("mkfs_opts", ["/dev/vda", "-d /etc", "-L $(id)", "a;b"])
def test_mkfs_options_cannot_name_another_device_or_directory(mkfs_opts: str) -> None:
    request = _request(
        {"devicePath": "/dev/vdb", "sourceType": "empty", "targetType": "fileSystem", "mkfsOpts": mkfs_opts}
    )
    with pytest.raises(SecureMountOptionError, match="'mkfsOpts'"):
        parse_block_device(request)


def test_zfs_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="zfs"):
        parse_block_device(_request({"devicePath": "/dev/vdb", "sourceType": "empty", "encryptionType": "zfs"}))


def _no_fetch(uri: str) -> bytes:
    raise AssertionError(uri)


def test_keys(tmp_path: Path) -> None:
    first = resolve_key(None, _no_fetch)
    assert len(first) == RANDOM_KEY_BYTES
    assert resolve_key(None, _no_fetch) != first
    assert resolve_key("kbs:///a/b/c", lambda uri: uri.encode()) == b"kbs:///a/b/c"
    (tmp_path / "k").write_bytes(b"secret")
    assert resolve_key(f"file://{tmp_path}/k", _no_fetch) == b"secret"
    with pytest.raises(SecureMountError, match="over 4 bytes"):
        resolve_key(f"file://{tmp_path}/k", _no_fetch, limits=Limits(secure_mount_max_key_bytes=4))
    with pytest.raises(SecureMountError, match="the sealed secret is empty"):
        resolve_key("sealed.x", lambda _: b"")
    with pytest.raises(SecureMountError, match="not a regular file"):
        resolve_key(f"file://{tmp_path}", _no_fetch)
    with pytest.raises(SecureMountOptionError, match="file:///absolute/path"):
        resolve_key("file://host/k", _no_fetch)
