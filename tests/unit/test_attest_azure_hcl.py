"""The HCL report parser and binding check, on Azure's recorded reports and on synthetic ones."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest

from cocoguest.attestation.drivers.azure_hcl import HclReport, HclReportType, check_report_binding
from cocoguest.errors import HclReportBindingError, TeeReportError
from tests.fixtures.azure import runtime_claims, synthetic_hcl_report

VECTORS = Path(__file__).parent.parent / "vectors" / "azure"


@pytest.mark.parametrize(
    ("name", "kind"), [("hcl-report-snp.bin", HclReportType.SNP), ("hcl-report-tdx.bin", HclReportType.TDX)]
)
def test_recorded_reports_parse_and_commit_to_their_claims(name: str, kind: HclReportType) -> None:
    report = HclReport.parse((VECTORS / name).read_bytes())
    assert report.report_type is kind
    assert report.hw_report_data == hashlib.sha256(report.var_data).digest().ljust(64, b"\0")
    keys = report.runtime_claims()["keys"]
    assert isinstance(keys, list)
    assert keys[0]["kid"] == "HCLAkPub"


def test_recorded_tdx_report_binds_zero_user_data() -> None:
    report = HclReport.parse((VECTORS / "hcl-report-tdx.bin").read_bytes())
    check_report_binding(report, bytes(64))
    check_report_binding(report, bytes(32))  # zero-padded to the paravisor's 64-byte buffer
    with pytest.raises(HclReportBindingError, match="stale"):
        check_report_binding(report, b"\x01" * 32)


def test_recorded_snp_report_without_user_data_warns(caplog: pytest.LogCaptureFixture) -> None:
    report = HclReport.parse((VECTORS / "hcl-report-snp.bin").read_bytes())
    with caplog.at_level(logging.WARNING):
        check_report_binding(report, b"\x01" * 32)
    assert "no user-data claim" in caplog.text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:1000], "shorter than its 1236-byte header"),
        (lambda b: b"XCLA" + b[4:], "not the HCLA signature"),
        (lambda b: b[:1224] + (3).to_bytes(4, "little") + b[1228:], "hardware report type 3"),
        (lambda b: b[:1232] + (5000).to_bytes(4, "little") + b[1236:], "5000 bytes of runtime claims past"),
    ],
)
def test_malformed_reports_are_named(mutate: object, message: str) -> None:
    raw = synthetic_hcl_report(HclReportType.SNP, b"\x01" * 32)
    assert callable(mutate)
    with pytest.raises(TeeReportError, match=message):
        HclReport.parse(mutate(raw))


def test_user_data_case_and_shape() -> None:
    claims = json.loads(runtime_claims(b"\xab" * 32))
    claims["user-data"] = claims["user-data"].lower()
    report = HclReport.parse(synthetic_hcl_report(HclReportType.TDX, None, claims=json.dumps(claims).encode()))
    check_report_binding(report, b"\xab" * 32)
    claims["user-data"] = 12
    report = HclReport.parse(synthetic_hcl_report(HclReportType.TDX, None, claims=json.dumps(claims).encode()))
    with pytest.raises(TeeReportError, match="user-data is not a hex string"):
        check_report_binding(report, b"\xab" * 32)


def test_torn_report_is_refused() -> None:
    report = HclReport.parse(synthetic_hcl_report(HclReportType.SNP, b"\x01" * 32, hw_report_data=b"\x02" * 64))
    with pytest.raises(HclReportBindingError, match="torn"):
        check_report_binding(report, b"\x01" * 32)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        (b"<claims/>", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_runtime_claims_that_are_not_a_json_object_are_named(claims: bytes, message: str) -> None:
    report = HclReport.parse(synthetic_hcl_report(HclReportType.SNP, b"\x01" * 32))
    with pytest.raises(TeeReportError, match=message):
        dataclasses.replace(report, var_data=claims).runtime_claims()
