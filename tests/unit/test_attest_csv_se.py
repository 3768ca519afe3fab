"""The CSV and SE attesters against synthetic device backends (their ioctls are not in the spec)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, HashAlgorithm, RuntimeMeasurer, Tee
from cocoguest.attestation.drivers.csv import CsvAttester, CsvReport, csv_register_for_pcr
from cocoguest.attestation.drivers.se import RESPONSE_FIELDS, SeAttester
from cocoguest.attestation.eventlog import AaelEvent, EventLog, tagged_event
from cocoguest.attestation.factory import DeviceBackends, select_attester
from cocoguest.errors import AttestationRequestError, TeeReportError
from tests.fixtures.tee_devices import probe_tree


class SyntheticCsvGuest:
    """A CSV guest device model: echoes report data, SM3 RTMRs with real extend semantics."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.rtmrs = [bytes(32)] * 5

    def attestation_report(self, report_data: bytes) -> CsvReport:
        return CsvReport(
            report_data=report_data if self.echo else bytes(64),
            attestation_report={"user_data": list(report_data), "sig": [1, 2]},
            pek={"version": 1},
            serial_number=b"SN-0001",
        )

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        self.rtmrs[index] = HashAlgorithm.SM3.digest(self.rtmrs[index] + digest)

    def read_rtmr(self, index: int) -> bytes:
        return self.rtmrs[index]


def test_csv_evidence(tmp_path: Path) -> None:
    attester = CsvAttester(SyntheticCsvGuest(), ccel_path=tmp_path / "CCEL", aael_path=tmp_path / "el")
    evidence = attester.evidence(b"\x07" * 48)
    assert list(evidence) == ["attestation_report", "cert_chain", "serial_number", "cc_eventlog"]
    assert evidence["serial_number"] == list(b"SN-0001")
    assert evidence["cert_chain"] == {"pek": {"version": 1}}
    assert evidence["cc_eventlog"] is None
    assert attester.bind_init_data(bytes(32)) is BindResult.UNSUPPORTED
    with pytest.raises(TeeReportError):
        CsvAttester(SyntheticCsvGuest(echo=False), aael_path=tmp_path / "el").evidence(b"x")


@pytest.mark.parametrize(("pcr", "register"), [(0, 0), (1, 1), (7, 1), (3, 2), (9, 3), (16, 4), (17, 4)])
def test_csv_register_mapping(pcr: int, register: int) -> None:
    assert csv_register_for_pcr(pcr) == register


def test_csv_event_log_uses_sm3(tmp_path: Path) -> None:
    device = SyntheticCsvGuest()
    attester = CsvAttester(device, aael_path=tmp_path / "el")
    assert isinstance(attester, RuntimeMeasurer)
    log = EventLog(attester, path=tmp_path / "el", wal_path=tmp_path / "wal")
    log.open()
    log.extend(AaelEvent("d", "o", "c"))
    entry = log.entries()[0]
    log.close()
    assert entry.algorithm is HashAlgorithm.SM3
    assert entry.target_mr == 4
    expected = HashAlgorithm.SM3.digest(bytes(32) + HashAlgorithm.SM3.digest(tagged_event(b"d o c")))
    assert device.rtmrs[4] == expected


class SyntheticUltravisor:
    def __init__(self) -> None:
        self.requests: list[Mapping[str, object]] = []

    def attest(self, request: Mapping[str, object]) -> Mapping[str, bytes]:
        self.requests.append(request)
        return {field: field.encode() for field in RESPONSE_FIELDS}


def test_se_evidence() -> None:
    uv = SyntheticUltravisor()
    request = {"request_blob": "AAAA", "runtime_data_digest": "q83v"}
    evidence = SeAttester(uv).evidence(json.dumps(request).encode())
    assert uv.requests == [request]
    assert list(evidence) == list(RESPONSE_FIELDS)
    assert base64.b64decode(str(evidence["cuid"])) == b"cuid"


@pytest.mark.parametrize("report_data", [b"not json", b"[1]", b'{"request_blob":"AAAA"}'])
def test_se_refuses_bad_requests(report_data: bytes) -> None:
    with pytest.raises(AttestationRequestError):
        SeAttester(SyntheticUltravisor()).evidence(report_data)


def test_se_refuses_incomplete_response() -> None:
    class Partial(SyntheticUltravisor):
        def attest(self, request: Mapping[str, object]) -> Mapping[str, bytes]:
            return {"measurement": b"m"}

    with pytest.raises(TeeReportError, match="cuid"):
        SeAttester(Partial()).evidence(b'{"runtime_data_digest":"x"}')


def test_factory_wires_csv_and_se(tmp_path: Path) -> None:
    backends = DeviceBackends(csv_guest=SyntheticCsvGuest(), ultravisor=SyntheticUltravisor())
    (tmp_path / "c").mkdir()
    (tmp_path / "s").mkdir()
    assert select_attester(False, probe_tree(tmp_path / "c", {Tee.CSV}), backends).tee is Tee.CSV
    assert select_attester(False, probe_tree(tmp_path / "s", {Tee.SE}), backends).tee is Tee.SE
