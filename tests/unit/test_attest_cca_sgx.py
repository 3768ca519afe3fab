"""The CCA attester (synthetic configfs-tsm) and the SGX attester (synthetic Gramine /dev/attestation)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, encode_evidence
from cocoguest.attestation.configfs_tsm import PROVIDER_CCA, ConfigfsTsm
from cocoguest.attestation.drivers.cca import CcaAttester
from cocoguest.attestation.drivers.sgx import SgxAttester, quote_report_data
from cocoguest.errors import AttestationRequestError, TeeReportError, UnsupportedError
from tests.fixtures.tee_devices import FakeGramine, FakeTsmKernel, sgx_quote_v3


def test_cca_token_for_challenge(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", PROVIDER_CCA, lambda inblob: b"\xd9\x01\x8f" + inblob)
    tsm = ConfigfsTsm(kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry)
    attester = CcaAttester(tsm=tsm)
    evidence = attester.evidence(b"challenge")
    challenge = b"challenge" + bytes(55)
    assert kernel.inblobs == [challenge]
    assert evidence == {"token": list(b"\xd9\x01\x8f" + challenge)}
    assert encode_evidence(evidence).startswith(b'{"token":[217,1,143,99,104')
    assert attester.bind_init_data(bytes(32)) is BindResult.UNSUPPORTED
    with pytest.raises(AttestationRequestError):
        attester.evidence(bytes(65))


def test_cca_refuses_tdx_provider(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", "tdx_guest", lambda inblob: inblob)
    tsm = ConfigfsTsm(kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry)
    with pytest.raises(TeeReportError, match="tdx_guest"):
        CcaAttester(tsm=tsm).evidence(b"c")


@pytest.fixture
def gramine(tmp_path: Path) -> Iterator[FakeGramine]:
    fake = FakeGramine(tmp_path / "attestation")
    yield fake
    fake.close()


def test_sgx_gramine_quote(gramine: FakeGramine) -> None:
    attester = SgxAttester(attestation_dir=gramine.directory)
    evidence = attester.evidence(b"\x01" * 48)
    quote = base64.b64decode(str(evidence["quote"]))
    assert quote_report_data(quote) == b"\x01" * 48 + bytes(16)
    assert gramine.report_data == [b"\x01" * 48 + bytes(16)]
    # a second call writes again and reads a fresh quote
    attester.evidence(b"\x02")
    assert gramine.report_data[-1] == b"\x02" + bytes(63)


def test_sgx_quote_for_other_data_refused(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path / "attestation", respond=lambda _: sgx_quote_v3(b"\x09" * 64))
    try:
        with pytest.raises(TeeReportError, match="requested report data"):
            SgxAttester(attestation_dir=fake.directory).evidence(b"n")
    finally:
        fake.close()


def test_sgx_occlum_needs_a_library() -> None:
    with pytest.raises(UnsupportedError, match="Occlum"):
        SgxAttester(occlum=True).evidence(b"n")

    class Library:
        def quote(self, report_data: bytes) -> bytes:
            return sgx_quote_v3(report_data)

    evidence = SgxAttester(occlum=True, occlum_library=Library()).evidence(b"n")
    assert quote_report_data(base64.b64decode(str(evidence["quote"]))) == b"n" + bytes(63)


def test_sgx_short_quote() -> None:
    with pytest.raises(TeeReportError, match="too short"):
        quote_report_data(bytes(100))
