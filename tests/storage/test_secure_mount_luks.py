"""SecureMount ``block-device`` against the real cryptsetup on a real loop device.

Everything up to ``cryptsetup open`` runs for real here: luksFormat (LUKS2, aes-xts-plain64, 4096-byte
sectors), the header checks on what cryptsetup wrote, key handling (file://, fetched kbs:// and sealed keys,
random keys), and the refusals (wrong key, a volume with another cipher, not LUKS, integrity mismatch). The
open/mkfs/mount path needs device-mapper; where ``/dev/mapper/control`` is missing the test of that path is
skipped with that reason, and the error the CDH returns there is checked to name the missing feature.
Requires root (losetup) and cryptsetup (scripts/install-peers.sh installs cryptsetup-bin).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cocoguest.cdh.storage.block_device import check_header, prepare, secure_mount
from cocoguest.cdh.storage.cryptsetup import Cryptsetup, Pbkdf
from cocoguest.cdh.storage.devmapper import device_mapper_missing
from cocoguest.cdh.storage.request import SecureMountRequest
from cocoguest.cli.main import main as cocoguest_main
from cocoguest.errors import SecureMountError

pytestmark = pytest.mark.interop

FAST = Cryptsetup(pbkdf=Pbkdf("pbkdf2", 1000))  # high-entropy test keys: the minimum PBKDF cost is fine
KBS_KEY = b"k" * 64


def _fetch(uri: str) -> bytes:
    if uri == "kbs:///default/disk/key":
        return KBS_KEY
    raise SecureMountError(f"no such key {uri}")


def _request(device: str, **options: str) -> SecureMountRequest:
    return SecureMountRequest("block-device", {"devicePath": device, **options}, [], "/run/test-secure-mount/disk")


def test_empty_source_formats_luks2_with_the_fetched_key(loop_device: str) -> None:
    _, device, key = prepare(
        _request(loop_device, sourceType="empty", key="kbs:///default/disk/key"), _fetch, cryptsetup=FAST
    )
    assert (device, key) == (loop_device, KBS_KEY)
    header = FAST.header(device)
    assert (header.cipher, header.sector_size, header.integrity, header.keyslots) == ("aes-xts-plain64", 4096, None, 1)
    assert FAST.test_key(device, KBS_KEY)
    assert not FAST.test_key(device, b"x" * 64)
    # Reopening the same volume as "encrypted" with the same key passes every check...
    prepare(_request(loop_device, sourceType="encrypted", key="kbs:///default/disk/key"), _fetch, cryptsetup=FAST)
    # ...and with another key, or with integrity requested, it is refused.
    with pytest.raises(SecureMountError, match="the key does not open"):
        check_header(FAST, device, b"other key", integrity=False)
    with pytest.raises(SecureMountError, match="integrity none, the request asks for hmac-sha256"):
        check_header(FAST, device, KBS_KEY, integrity=True)


def test_file_key_and_the_deviceid_form(loop_device: str, tmp_path: Path) -> None:
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(b"file key bytes")
    rdev = os.stat(loop_device).st_rdev
    request = SecureMountRequest(
        "block-device",
        {"deviceId": f"{os.major(rdev)}:{os.minor(rdev)}", "sourceType": "empty", "key": f"file://{key_file}"},
        [],
        "/run/test-secure-mount/disk",
    )
    _, device, key = prepare(request, _fetch, cryptsetup=FAST)
    assert (device, key) == (loop_device, b"file key bytes")
    assert FAST.test_key(loop_device, b"file key bytes")


def test_random_key_when_none_is_given(loop_device: str) -> None:
    _, _, key = prepare(_request(loop_device, sourceType="empty"), _fetch, cryptsetup=FAST)
    assert len(key) == 4096
    assert FAST.test_key(loop_device, key)


def test_encrypted_source_that_is_not_luks_is_refused(loop_device: str) -> None:
    with pytest.raises(SecureMountError, match="does not hold a LUKS2 volume"):
        prepare(_request(loop_device, sourceType="encrypted", key="kbs:///default/disk/key"), _fetch, cryptsetup=FAST)


def test_a_volume_with_another_cipher_is_refused(loop_device: str) -> None:
    # SECURITY: a host-supplied LUKS2 volume with a weak cipher is not accepted as "encrypted".
    subprocess.run(
        [
            "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--cipher", "aes-cbc-essiv:sha256",
            "--key-size", "256", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-",
            loop_device,
        ],
        input=KBS_KEY,
        check=True,
        capture_output=True,
    )  # fmt: skip
    with pytest.raises(SecureMountError, match="encrypted with 'aes-cbc-essiv:sha256', expected aes-xts-plain64"):
        prepare(_request(loop_device, sourceType="encrypted", key="kbs:///default/disk/key"), _fetch, cryptsetup=FAST)


def test_fetch_errors_and_bad_file_keys_are_named(loop_device: str, tmp_path: Path) -> None:
    with pytest.raises(SecureMountError, match="no such key kbs:///default/disk/other"):
        prepare(_request(loop_device, sourceType="empty", key="kbs:///default/disk/other"), _fetch, cryptsetup=FAST)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SecureMountError, match="is empty"):
        prepare(_request(loop_device, sourceType="empty", key=f"file://{tmp_path}/empty"), _fetch, cryptsetup=FAST)
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(SecureMountError, match="cannot open"):
        prepare(_request(loop_device, sourceType="empty", key=f"file://{tmp_path}/link"), _fetch, cryptsetup=FAST)
    assert not FAST.is_luks2(loop_device), "nothing was formatted before the key was had"


def test_a_regular_file_is_not_a_block_device(tmp_path: Path) -> None:
    with pytest.raises(SecureMountError, match="is not a block device"):
        prepare(_request("/dev/null", sourceType="empty"), _fetch, cryptsetup=FAST)


def test_integrity_format_needs_device_mapper(loop_device: str) -> None:
    request = _request(loop_device, sourceType="empty", dataIntegrity="true")
    if device_mapper_missing() is None:
        _, device, _ = prepare(request, _fetch, cryptsetup=FAST)
        assert FAST.header(device).integrity == "hmac(sha256)"
    else:
        with pytest.raises(SecureMountError, match=r"luksFormat .*(device-mapper|dm_mod)"):
            prepare(request, _fetch, cryptsetup=FAST)


def test_without_device_mapper_the_error_names_it(loop_device: str, tmp_path: Path) -> None:
    request = _request(loop_device, sourceType="empty", key="kbs:///default/disk/key")
    with pytest.raises(SecureMountError, match=r"no .*/control: device-mapper not available"):
        secure_mount(request, _fetch, cryptsetup=FAST, dm_control=tmp_path / "control")
    assert FAST.is_luks2(loop_device)  # steps 1-5 ran for real before the refusal


def test_device_mapper_check_reads_the_kernel_not_just_the_node(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.touch()
    misc = tmp_path / "misc"
    misc.write_text(" 58 memory_bandwidth\n183 hw_random\n")
    assert "no device-mapper in" in str(device_mapper_missing(control, misc))
    misc.write_text(" 58 memory_bandwidth\n236 device-mapper\n")
    assert device_mapper_missing(control, misc) is None
    assert "no " in str(device_mapper_missing(tmp_path / "absent", misc))


def test_open_and_mount_where_device_mapper_exists(loop_device: str, tmp_path: Path) -> None:
    reason = device_mapper_missing()
    if reason is not None:
        pytest.skip(reason)
    mount_point = tmp_path / "mnt"
    request = SecureMountRequest(
        "block-device",
        {"devicePath": loop_device, "sourceType": "empty", "targetType": "fileSystem", "mapperName": "cg-test"},
        [],
        str(mount_point),
    )
    try:
        assert secure_mount(request, _fetch, cryptsetup=FAST) == str(mount_point)
        (mount_point / "file").write_text("data")
        assert os.path.ismount(mount_point)
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        subprocess.run(["cryptsetup", "close", "cg-test"], check=False)


def test_cli_check_only_checks_an_encrypted_volume(
    loop_device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"cli key")
    FAST.format(loop_device, b"cli key", integrity=False)  # the volume a previous boot made
    storage = tmp_path / "storage.json"
    options = {"devicePath": loop_device, "sourceType": "encrypted", "key": f"file://{key_file}"}
    storage.write_text(json.dumps({"volume_type": "block-device", "options": options, "mount_point": "/mnt/x"}))
    assert cocoguest_main(["secure-mount", "-s", str(storage), "--check-only"]) == 0
    assert capsys.readouterr().out == f"{loop_device}: LUKS2 header and key checked\n"
    key_file.write_bytes(b"wrong key")
    assert cocoguest_main(["secure-mount", "-s", str(storage), "--check-only"]) == 1
    assert "the key does not open" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"sourceType": "empty", "key": "kbs:///default/disk/key"}, "needs the confidential data hub"),
        ({"sourceType": "empty", "cipher": "null"}, "option 'cipher': unknown option"),
        ({"sourceType": "encrypted"}, "does not hold a LUKS2 volume"),
    ],
)
def test_cli_refusals_are_one_error_line(
    loop_device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: dict[str, str], expected: str
) -> None:
    storage = tmp_path / "storage.json"
    document = {"volume_type": "block-device", "options": {"devicePath": loop_device, **options}, "mount_point": "/m"}
    storage.write_text(json.dumps(document))
    assert cocoguest_main(["secure-mount", "-s", str(storage)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert expected in err
    assert err.count("\n") == 1
