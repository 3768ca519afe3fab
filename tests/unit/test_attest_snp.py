"""The SNP attester against a synthetic configfs-tsm tree (report in outblob, certificate table in auxblob)."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult
from cocoguest.attestation.configfs_tsm import PROVIDER_SNP, ConfigfsTsm
from cocoguest.attestation.drivers.snp import SNP_GET_EXT_REPORT, SevGuestDevice, SnpAttester
from cocoguest.attestation.drivers.snp_structs import parse_cert_table, parse_snp_report
from cocoguest.errors import AttestationRequestError, InitDataMismatchError, TeeDeviceError, TeeReportError
from tests.fixtures.tee_devices import ARK_GUID, ASK_GUID, VCEK_GUID, FakeTsmKernel, cert_table, snp_report

CERTS = [(VCEK_GUID, b"vcek-der"), (ASK_GUID, b"ask-der!"), (ARK_GUID, b"ark")]


def _attester(tmp_path: Path, respond=None, auxblob: bytes = b"", host_data: bytes = bytes(32)):  # type: ignore[no-untyped-def]
    kernel = FakeTsmKernel(
        tmp_path / "tsm",
        PROVIDER_SNP,
        respond or (lambda inblob: snp_report(inblob, host_data=host_data)),
        auxblob=auxblob,
    )
    tsm = ConfigfsTsm(kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry)
    return SnpAttester(tsm=tsm), kernel


def test_evidence_with_certificate_chain(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path, auxblob=cert_table(CERTS))
    report_data = hashlib.sha384(b"rd").digest()
    evidence = attester.evidence(report_data)
    assert kernel.inblobs == [report_data + bytes(16)]
    assert kernel.privlevels == [b"0"]  # VMPL 0
    report = evidence["attestation_report"]
    assert isinstance(report, dict)
    assert bytes(report["report_data"]) == report_data + bytes(16)
    assert report["version"] == 2
    assert report["vmpl"] == 0
    assert report["current_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert evidence["cert_chain"] == [
        {"cert_type": "VCEK", "data": list(b"vcek-der")},
        {"cert_type": "ASK", "data": list(b"ask-der!")},
        {"cert_type": "ARK", "data": list(b"ark")},
    ]


def test_evidence_without_certificates(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path)
    assert attester.evidence(b"n")["cert_chain"] is None


@pytest.mark.parametrize(
    "respond",
    [
        lambda inblob: snp_report(b"\x07" * 64),  # someone else's report data
        lambda inblob: snp_report(inblob, vmpl=1),
        lambda inblob: snp_report(inblob)[:-1],
        lambda inblob: snp_report(inblob, version=131076),  # a TD quote header read as a version
    ],
)
def test_bad_reports_refused(tmp_path: Path, respond) -> None:  # type: ignore[no-untyped-def]
    attester, _ = _attester(tmp_path, respond=respond)
    with pytest.raises(TeeReportError):
        attester.evidence(b"n")


def test_cert_table_parsing_errors() -> None:
    good = cert_table(CERTS)
    assert [c.cert_type for c in parse_cert_table(good, 8)] == ["VCEK", "ASK", "ARK"]
    with pytest.raises(TeeReportError, match="terminating"):
        parse_cert_table(VCEK_GUID.bytes_le + struct.pack("<II", 24, 0), 8)
    with pytest.raises(TeeReportError, match="more than 2"):
        parse_cert_table(good, 2)
    outside = VCEK_GUID.bytes_le + struct.pack("<II", 48, 1000) + bytes(24)
    with pytest.raises(TeeReportError, match="outside"):
        parse_cert_table(outside, 8)
    unknown = uuid.UUID("11111111-2222-3333-4444-555555555555")
    assert parse_cert_table(cert_table([(unknown, b"x")]), 8)[0].cert_type == str(unknown)


def test_bind_init_data_host_data(tmp_path: Path) -> None:
    toml = b'version = "0.1.0"\nalgorithm = "sha256"\n'
    digest = hashlib.sha256(toml).digest()
    attester, _ = _attester(tmp_path, host_data=digest)
    assert attester.bind_init_data(digest) is BindResult.BOUND
    with pytest.raises(InitDataMismatchError, match="HOST_DATA"):
        attester.bind_init_data(hashlib.sha256(toml + b"\n").digest())
    with pytest.raises(AttestationRequestError, match="32 bytes"):
        attester.bind_init_data(hashlib.sha384(toml).digest())


def test_report_parse_fields() -> None:
    report = parse_snp_report(snp_report(b"\x05" * 64, host_data=b"\x09" * 32))
    assert report.host_data == b"\x09" * 32
    assert report.measurement == b"\x42" * 48


def test_legacy_device_errors(tmp_path: Path) -> None:
    assert SNP_GET_EXT_REPORT == 0xC0205302  # _IOWR('S', 2, struct snp_guest_request_ioctl of 32 bytes)
    not_a_device = tmp_path / "sev-guest"
    not_a_device.write_bytes(b"")
    with pytest.raises(TeeDeviceError, match="SNP_GET_EXT_REPORT"):
        SevGuestDevice(not_a_device).extended_report(b"rd", 0)
    attester = SnpAttester(tsm=ConfigfsTsm(tmp_path / "absent"), report_source=SevGuestDevice(tmp_path / "absent"))
    with pytest.raises(TeeDeviceError, match="cannot open"):
        attester.evidence(b"rd")
