"""The sample and sampledevice attesters: byte-exact evidence, a warning on every call, additional evidence."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, Tee, additional_evidence, encode_evidence
from cocoguest.attestation.drivers.sample import SampleAttester, SampleDeviceAttester

VECTORS = Path(__file__).parent.parent / "vectors" / "attester"
REPORT_DATA = bytes(range(48))


def test_sample_evidence_is_byte_exact() -> None:
    expected = (VECTORS / "sample_evidence_rd_00_2f.json").read_bytes()
    assert encode_evidence(SampleAttester().evidence(REPORT_DATA)) == expected


def test_sampledevice_evidence_is_byte_exact() -> None:
    expected = (VECTORS / "sampledevice_evidence_rd_00_2f.json").read_bytes()
    assert encode_evidence(SampleDeviceAttester().evidence(REPORT_DATA)) == expected


@pytest.mark.parametrize("report_data", [b"", b"x", bytes(200)])
def test_sample_neither_pads_nor_truncates(report_data: bytes) -> None:

    evidence = SampleAttester().evidence(report_data)
    assert base64.b64decode(str(evidence["report_data"])) == report_data


def test_sample_warns_on_every_evidence_call(caplog: pytest.LogCaptureFixture) -> None:
    attester = SampleAttester()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            attester.evidence(b"n")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "NOT backed by a TEE" in r.message]
    assert len(warnings) == 3


def test_sample_names_and_init_data() -> None:
    assert SampleAttester().tee == "sample"
    assert SampleDeviceAttester().tee is Tee.SAMPLE_DEVICE
    assert SampleAttester().bind_init_data(bytes(32)) is BindResult.UNSUPPORTED


def test_additional_evidence_empty_without_devices() -> None:
    assert additional_evidence([], b"rd") == b""


def test_additional_evidence_maps_tee_to_evidence() -> None:
    expected_inner = (VECTORS / "sampledevice_evidence_rd_00_2f.json").read_bytes()
    assert additional_evidence([SampleDeviceAttester()], REPORT_DATA) == b'{"sampledevice":' + expected_inner + b"}"
