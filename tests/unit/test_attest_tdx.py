"""The TDX attester against a synthetic configfs-tsm tree, sysfs measurement files and the recorded TDREPORT."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, RuntimeMeasurer
from cocoguest.attestation.ccel import END_FLAG, SPEC_ID_HEADER, read_cc_eventlog, trim_ccel
from cocoguest.attestation.configfs_tsm import PROVIDER_TDX, ConfigfsTsm
from cocoguest.attestation.drivers.tdx import (
    TDX_CMD_GET_REPORT0,
    TdxAttester,
    TdxGuestDevice,
    tdx_register_for_pcr,
)
from cocoguest.attestation.drivers.tdx_structs import parse_td_quote, parse_td_report
from cocoguest.errors import AttestationRequestError, InitDataMismatchError, TeeDeviceError, TeeReportError
from tests.fixtures.tee_devices import FakeTsmKernel, td_quote_v4

VECTOR = Path(__file__).parent.parent / "vectors" / "attester" / "tdx_report_1.bin"


class RecordedTdReport:
    """A TdReportSource answering with the recorded upstream TDREPORT (optionally with another MRCONFIGID)."""

    def __init__(self, mrconfigid: bytes | None = None) -> None:
        report = bytearray(VECTOR.read_bytes())
        if mrconfigid is not None:
            report[576:624] = mrconfigid
        self.report = bytes(report)

    def td_report(self, report_data: bytes) -> bytes:
        return self.report


def _attester(tmp_path: Path, respond=None, **kwargs) -> tuple[TdxAttester, FakeTsmKernel]:  # type: ignore[no-untyped-def]
    kernel = FakeTsmKernel(tmp_path / "tsm", PROVIDER_TDX, respond or td_quote_v4)
    tsm = ConfigfsTsm(kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry)
    kwargs.setdefault("ccel_path", tmp_path / "CCEL")
    kwargs.setdefault("aael_path", tmp_path / "eventlog")
    kwargs.setdefault("measurements_dir", tmp_path / "measurements")
    return TdxAttester(tsm=tsm, **kwargs), kernel


def test_recorded_tdreport_parses() -> None:
    report = parse_td_report(VECTOR.read_bytes())
    assert report.mrtd.hex().startswith("98bbc39e3e27b4cb")
    assert report.mrtd.hex().endswith("a37b8ab5")
    assert report.mrconfigid == bytes(48)
    assert report.rtmrs[0].hex().startswith("f4ec1a04")
    assert report.report_data == bytes(64)


@pytest.mark.parametrize("blob", [b"", bytes(1023), b"\x00" + VECTOR.read_bytes()[1:]])
def test_malformed_tdreport_refused(blob: bytes) -> None:
    with pytest.raises(TeeReportError):
        parse_td_report(blob)


def test_evidence_binds_padded_report_data(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path)
    report_data = hashlib.sha384(b"runtime data").digest()
    evidence = attester.evidence(report_data)
    padded = report_data + bytes(16)
    assert kernel.inblobs == [padded]
    assert list(evidence) == ["cc_eventlog", "quote"]
    assert evidence["cc_eventlog"] is None
    quote = base64.b64decode(str(evidence["quote"]))
    assert parse_td_quote(quote).report_data == padded


def test_report_data_too_long(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path)
    with pytest.raises(AttestationRequestError, match="65 bytes"):
        attester.evidence(bytes(65))
    assert kernel.inblobs == []


def test_quote_for_other_report_data_refused(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path, respond=lambda _: td_quote_v4(b"\x01" * 64))
    with pytest.raises(TeeReportError, match="requested report data"):
        attester.evidence(b"nonce")


@pytest.mark.parametrize(
    "mangle",
    [lambda q: q[:600], lambda q: struct.pack("<H", 3) + q[2:], lambda q: q[:4] + struct.pack("<I", 0) + q[8:]],
)
def test_malformed_quote_refused(tmp_path: Path, mangle) -> None:  # type: ignore[no-untyped-def]
    attester, _ = _attester(tmp_path, respond=lambda inblob: mangle(td_quote_v4(inblob)))
    with pytest.raises(TeeReportError):
        attester.evidence(b"nonce")


def test_no_quote_source(tmp_path: Path) -> None:
    attester = TdxAttester(tsm=ConfigfsTsm(tmp_path / "absent"), report_source=RecordedTdReport())
    with pytest.raises(TeeDeviceError, match="no TDX quote source"):
        attester.evidence(b"nonce")


def test_legacy_quote_generator_path(tmp_path: Path) -> None:
    class Qgs:
        def quote(self, td_report: bytes) -> bytes:
            return td_quote_v4(parse_td_report(td_report).report_data)

    class Device:
        def td_report(self, report_data: bytes) -> bytes:
            report = bytearray(VECTOR.read_bytes())
            report[128:192] = report_data
            return bytes(report)

    attester = TdxAttester(
        tsm=ConfigfsTsm(tmp_path / "absent"), report_source=Device(), quote_generator=Qgs(), aael_path=tmp_path / "x"
    )
    quote = base64.b64decode(str(attester.evidence(b"abc")["quote"]))
    assert parse_td_quote(quote).report_data == b"abc" + bytes(61)


def test_cc_eventlog_with_aael_only(tmp_path: Path) -> None:
    (tmp_path / "eventlog").write_bytes(b"AAEL-ENTRIES")
    attester, _ = _attester(tmp_path)
    log = base64.b64decode(str(attester.evidence(b"n")["cc_eventlog"]))
    assert log == SPEC_ID_HEADER + b"AAEL-ENTRIES" + END_FLAG
    assert len(SPEC_ID_HEADER) == 73
    assert struct.unpack_from("<II", SPEC_ID_HEADER, 0) == (0, 3)


def _spec_id_event() -> bytes:
    return struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", 4) + b"spec"


def _event(target: int, data: bytes) -> bytes:
    return struct.pack("<IIIH", target, 13, 1, 0x0C) + b"\xab" * 48 + struct.pack("<I", len(data)) + data


def test_ccel_trimmed_and_aael_appended(tmp_path: Path) -> None:
    events = _spec_id_event() + _event(1, b"one") + _event(2, b"")
    (tmp_path / "CCEL").write_bytes(events + b"\xff" * 8 + bytes(100))
    (tmp_path / "eventlog").write_bytes(b"AAEL")
    log = read_cc_eventlog(tmp_path / "CCEL", tmp_path / "eventlog")
    assert log is not None
    assert base64.b64decode(log) == events + b"AAEL" + END_FLAG


def test_ccel_zero_end_word() -> None:
    events = _spec_id_event() + _event(3, b"x")
    assert trim_ccel(events + bytes(8)) == events


@pytest.mark.parametrize(
    "ccel",
    [
        b"\0" * 4,
        _spec_id_event(),  # no end word
        _spec_id_event() + struct.pack("<IIIH", 1, 13, 1, 0x01) + bytes(40),  # unknown algorithm
        _spec_id_event() + _event(1, b"abc")[:-2],  # truncated entry
    ],
)
def test_malformed_ccel_refused(ccel: bytes) -> None:
    with pytest.raises(TeeReportError):
        trim_ccel(ccel)


def test_no_eventlogs_is_null(tmp_path: Path) -> None:
    assert read_cc_eventlog(tmp_path / "CCEL", tmp_path / "eventlog") is None


@pytest.mark.parametrize(
    ("pcr", "ccmr"), [(0, 4), (1, 1), (7, 1), (2, 2), (6, 2), (8, 3), (15, 3), (16, 4), (17, 4), (23, 4)]
)
def test_pcr_to_ccmr(pcr: int, ccmr: int) -> None:
    assert tdx_register_for_pcr(pcr) == ccmr


def test_rtmr_extend_writes_sysfs(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    rtmr3 = measurements / "rtmr3:sha384"
    rtmr3.write_bytes(bytes(48))
    attester, _ = _attester(tmp_path)
    assert isinstance(attester, RuntimeMeasurer)
    digest = hashlib.sha384(b"event").digest()
    attester.extend_runtime_measurement(digest, 17)  # PCR 17 -> CC MR 4 -> RTMR3
    assert rtmr3.read_bytes() == digest
    assert attester.read_runtime_measurement(17) == digest


def test_rtmr_extend_without_sysfs(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path)
    with pytest.raises(TeeDeviceError, match="rtmr3:sha384"):
        attester.extend_runtime_measurement(bytes(48), 17)


def test_bind_init_data_sysfs_mrconfigid(tmp_path: Path) -> None:
    toml = b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
    digest = hashlib.sha384(toml).digest()
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    (measurements / "mrconfigid").write_bytes(digest)
    attester, _ = _attester(tmp_path)
    assert attester.bind_init_data(digest) is BindResult.BOUND
    with pytest.raises(InitDataMismatchError, match="MRCONFIGID"):
        attester.bind_init_data(hashlib.sha384(toml + b" ").digest())


def test_bind_init_data_from_td_report(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"init").digest()
    attester, _ = _attester(tmp_path, report_source=RecordedTdReport(digest + bytes(16)))
    assert attester.bind_init_data(digest) is BindResult.BOUND
    with pytest.raises(InitDataMismatchError):
        attester.bind_init_data(hashlib.sha256(b"other").digest())
    # the recorded report itself has an all-zero MRCONFIGID: a real digest does not match it
    plain, _ = _attester(tmp_path / "2", report_source=RecordedTdReport())
    with pytest.raises(InitDataMismatchError):
        plain.bind_init_data(digest)
    with pytest.raises(AttestationRequestError):
        plain.bind_init_data(bytes(64))


def test_legacy_ioctl_request_number_and_error(tmp_path: Path) -> None:
    assert TDX_CMD_GET_REPORT0 == 0xC4405401  # _IOWR('T', 1, 64 + 1024 bytes), linux/tdx-guest.h
    not_a_device = tmp_path / "tdx_guest"
    not_a_device.write_bytes(b"")
    with pytest.raises(TeeDeviceError, match="TDX_CMD_GET_REPORT0"):
        TdxGuestDevice(not_a_device).td_report(b"rd")
    with pytest.raises(TeeDeviceError, match="cannot open"):
        TdxGuestDevice(tmp_path / "absent").td_report(b"rd")
