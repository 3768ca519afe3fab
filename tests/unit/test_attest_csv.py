"""The CSV attester and its built-in ``/dev/csv-guest`` driver against an emulated kernel and PSP.

Only the ioctl is synthetic (``tests/fixtures/csv_guest_kernel.py``): the device is a real file opened by the
driver, and the fake kernel decodes the driver's structures from raw bytes and writes through its pointers.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import struct
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, HashAlgorithm, RuntimeMeasurer, Tee
from cocoguest.attestation.drivers.csv import CsvAttester, csv_register_for_pcr
from cocoguest.attestation.drivers.csv_guest import CSV_CMD_GET_REPORT, CSV_CMD_RTMR, CsvGuestDevice
from cocoguest.attestation.drivers.csv_structs import csv_certificate_json, parse_csv_report
from cocoguest.attestation.eventlog import AaelEvent, EventLog, tagged_event
from cocoguest.attestation.factory import build_attester, select_attester
from cocoguest.cli.attester_source import AttesterEvidence
from cocoguest.devkbs.verifier import expected_report_data
from cocoguest.errors import AttestationRequestError, TeeDeviceError, TeeFirmwareError, TeeReportError
from tests.fixtures.csv_guest_kernel import GET_REPORT, RTMR, FakeCsvGuestKernel, csv_certificate
from tests.fixtures.tee_devices import probe_tree

RECORDED = Path(__file__).parent.parent / "vectors" / "attester" / "csv_report_v1.cert"
RECORDED_MNONCE = bytes.fromhex("67c6697351ff4aec29cdbaabf2fbe346")


def _device(tmp_path: Path, **kernel_options: object) -> tuple[CsvGuestDevice, FakeCsvGuestKernel]:
    path = tmp_path / "csv-guest"
    path.write_bytes(b"")
    kernel = FakeCsvGuestKernel(path, **kernel_options)  # type: ignore[arg-type]
    return CsvGuestDevice(path, ioctl=kernel), kernel


def _attester(tmp_path: Path, **kernel_options: object) -> tuple[CsvAttester, FakeCsvGuestKernel]:
    device, kernel = _device(tmp_path, **kernel_options)
    return CsvAttester(device, ccel_path=tmp_path / "CCEL", aael_path=tmp_path / "aael"), kernel


def _runtime_data() -> dict[str, object]:
    key = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AAAA", "y": "BBBB"}
    return {"tee-pubkey": key, "nonce": "bm9uY2U=", "additional-evidence": ""}


def test_request_numbers_match_the_kernel_header() -> None:
    assert CSV_CMD_GET_REPORT == GET_REPORT == 0xC0104401
    assert CSV_CMD_RTMR == RTMR == 0xC0184402


def test_extended_report_end_to_end_binds_the_kbs_report_data(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path)
    expected = expected_report_data("csv", _runtime_data())  # what the KBS will look for (SHA-384)
    evidence = json.loads(AttesterEvidence(attester).get_evidence(expected))
    assert kernel.calls == ["RTMR STATUS", "GET_REPORT"]
    assert list(evidence) == ["attestation_report", "cert_chain", "serial_number", "cc_eventlog"]
    wrapper = evidence["attestation_report"]
    assert bytes(wrapper["magic"]) == b"ATTESTATION_EXT\0"
    assert wrapper["flags"] == 1
    report = bytes(wrapper["data"])
    assert len(report) == 4096
    # KBS side: the extended TEE info carries the report data in clear, and RTMR0 = the launch measure.
    assert report[64:128] == expected.ljust(64, b"\0")
    assert report[144:176] == kernel.measure
    assert report[208:240] == kernel.measure
    # The request the kernel saw: data || mnonce || SM3(data || mnonce) || magic || flags 1.
    sent = kernel.report_inputs[0]
    assert sent[:64] == expected.ljust(64, b"\0")
    assert sent[80:112] == hashlib.new("sm3", sent[:80]).digest()
    assert sent[112:132] == b"ATTESTATION_EXT\0" + struct.pack("<I", 1)
    # The signer as csv-rs leaves it: PEK and serial unmasked, reserved zeroed.
    assert report[0x490 + 2084 + 64 : 0x490 + 2084 + 96] == bytes(32)
    assert bytes(evidence["serial_number"]) == b"SYNTHETIC-CHIP-0001".ljust(64, b"\0")
    pek = evidence["cert_chain"]["pek"]
    assert pek == csv_certificate_json(csv_certificate())
    assert pek["body"]["data"]["pubkey"]["usage"] == 0x1002
    assert bytes(pek["body"]["data"]["user_id"][: pek["body"]["data"]["uid_size"]]) == b"HYGON-SSD-PEK"
    assert evidence["cc_eventlog"] is None
    assert attester.bind_init_data(bytes(32)) is BindResult.UNSUPPORTED


def test_legacy_report_is_unmasked(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path, csv3=False)
    evidence = attester.evidence(b"\x07" * 48)
    assert kernel.calls == ["unknown 0xc0184402", "GET_REPORT"]
    assert len(kernel.report_inputs[0]) == 132
    assert kernel.report_inputs[0][112:] == bytes(20)  # a legacy request: no magic
    wrapper = evidence["attestation_report"]
    assert isinstance(wrapper, dict)
    assert wrapper["magic"] == [0] * 16
    assert wrapper["flags"] == 0
    report = bytes(wrapper["data"])
    assert struct.unpack_from("<I", report, 188)[0] == kernel.anonce
    assert report[64:128] != (b"\x07" * 48).ljust(64, b"\0")  # masked on the wire, as the PSP sends it
    assert evidence["serial_number"] == list(kernel.serial_number)


def test_recorded_legacy_report_from_csv_rs(tmp_path: Path) -> None:
    recorded = RECORDED.read_bytes()
    device, kernel = _device(tmp_path, csv3=False, recorded=recorded)
    device = CsvGuestDevice(device.path, ioctl=kernel, random_bytes=lambda n: RECORDED_MNONCE[:n])
    report = device.attestation_report(b"user data".ljust(64, b"\0"))
    assert report.report_data == b"user data".ljust(64, b"\0")
    assert report.serial_number.rstrip(b"\0") == b"NZA9T14052605"
    data = report.pek["body"]["data"]  # type: ignore[index]
    assert data["pubkey"]["usage"] == 0x1002  # type: ignore[index]
    assert bytes(data["user_id"][:13]) == b"HYGON-SSD-PEK"  # type: ignore[index]
    # The same recorded bytes with a different mnonce are a replay: refused.
    with pytest.raises(TeeReportError, match="mnonce"):
        parse_csv_report(recorded.ljust(4096, b"\0"), bytes(16), extended=False)


def _flip_pek_bit(report: bytearray) -> None:
    report[0x490 + 100] ^= 1


def _stale_mnonce(report: bytearray) -> None:
    report[128:144] = bytes(16)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tamper": _flip_pek_bit}, "MAC"),
        ({"tamper": _stale_mnonce}, "mnonce"),
        ({"copy_back": 1000}, "MAC"),  # truncated answer: the signer block never arrived
    ],
)
def test_bad_reports_are_refused(tmp_path: Path, options: dict[str, object], match: str) -> None:
    attester, _ = _attester(tmp_path, **options)
    with pytest.raises(TeeReportError, match=match) as caught:
        attester.evidence(b"x")
    assert str(tmp_path / "csv-guest") in str(caught.value)


def test_device_errors_name_the_device_and_errno(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path, report_errno=errno.EIO)
    with pytest.raises(TeeDeviceError, match=r"CSV_CMD_GET_REPORT on .*csv-guest failed: .*errno 5"):
        attester.evidence(b"x")
    missing = CsvAttester(CsvGuestDevice(tmp_path / "nope"), aael_path=tmp_path / "aael")
    with pytest.raises(TeeDeviceError, match=r"cannot open TEE device .*nope"):
        missing.evidence(b"x")
    with pytest.raises(AttestationRequestError, match="64-byte"):
        attester.evidence(bytes(65))


def test_rtmr_extend_and_read_through_the_event_log(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path)
    assert isinstance(attester, RuntimeMeasurer)
    assert attester.measurement_hash is HashAlgorithm.SM3
    log = EventLog(attester, path=tmp_path / "aael", wal_path=tmp_path / "wal")
    log.open()
    log.extend(AaelEvent("d", "o", "c"))
    entry = log.entries()[0]
    log.close()
    assert entry.target_mr == 4
    expected = hashlib.new("sm3", bytes(32) + HashAlgorithm.SM3.digest(tagged_event(b"d o c"))).digest()
    assert kernel.rtmrs[4] == expected
    assert attester.read_runtime_measurement(17) == expected
    assert attester.read_runtime_measurement(0) == kernel.measure
    assert "RTMR EXTEND" in kernel.calls


def test_rtmr_errors(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path, rtmr_fw_error=0x27)
    with pytest.raises(TeeFirmwareError, match="firmware error 0x27") as caught:
        attester.extend_runtime_measurement(bytes(32), 9)
    assert caught.value.code == 0x27
    with pytest.raises(AttestationRequestError, match="RTMR 2"):
        attester.extend_runtime_measurement(bytes(32), 3)
    (tmp_path / "legacy").mkdir()
    legacy, _ = _attester(tmp_path / "legacy", csv3=False)
    with pytest.raises(TeeDeviceError, match=r"CSV_CMD_RTMR EXTEND .*Inappropriate ioctl"):
        legacy.extend_runtime_measurement(bytes(32), 17)


@pytest.mark.parametrize(("pcr", "register"), [(0, 0), (1, 1), (7, 1), (3, 2), (9, 3), (16, 4), (17, 4)])
def test_csv_register_mapping(pcr: int, register: int) -> None:
    assert csv_register_for_pcr(pcr) == register


def test_factory_uses_the_built_in_driver(tmp_path: Path) -> None:
    probes = probe_tree(tmp_path, {Tee.CSV})
    attester = select_attester(False, probes)
    assert attester.tee is Tee.CSV
    # The real fcntl.ioctl on the probe's (regular) file: the kernel answers ENOTTY, named with the path.
    with pytest.raises(TeeDeviceError, match=r"CSV_CMD_GET_REPORT on .*csv-guest failed: Inappropriate ioctl"):
        attester.evidence(b"x")
    elsewhere = build_attester(Tee.CSV, dataclasses.replace(probes, csv_guest_device=tmp_path / "other"))
    with pytest.raises(TeeDeviceError, match="other"):
        elsewhere.evidence(b"x")
