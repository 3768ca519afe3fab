"""The tpm, az-snp-vtpm and az-tdx-vtpm attesters against a software TPM model with real PCR extends."""

from __future__ import annotations

import base64
import hashlib

import pytest

from cocoguest.attestation.attester import BindResult, RuntimeMeasurer, Tee
from cocoguest.attestation.drivers.azure_vtpm import AzSnpVtpmAttester, AzTdxVtpmAttester
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.drivers.tpm_quote import TpmQuote, check_quote_nonce
from cocoguest.errors import AttestationRequestError, TeeReportError
from tests.fixtures.tee_devices import SoftwareAzureVtpm, SoftwareTpm, tpms_attest


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_tpm_evidence_resizes_report_data_to_32() -> None:
    tpm = SoftwareTpm()
    attester = TpmAttester(tpm, b"ak-spki-der")
    report_data = hashlib.sha384(b"rd").digest()
    evidence = attester.evidence(report_data)
    quote = evidence["tpm_quote"]
    assert isinstance(quote, dict)
    assert base64.b64decode(quote["message"]) == tpms_attest(report_data[:32])
    assert quote["pcrs"] == [bytes(32).hex()] * 24
    assert base64.b64decode(str(evidence["ak_public"])) == b"ak-spki-der"
    short = attester.evidence(b"abc")["tpm_quote"]
    assert isinstance(short, dict)
    assert base64.b64decode(short["message"]) == tpms_attest(b"abc" + bytes(29))


def test_quote_with_other_nonce_refused() -> None:
    tpm = SoftwareTpm()
    tpm.nonce_override = b"\x01" * 32
    with pytest.raises(TeeReportError, match="nonce"):
        TpmAttester(tpm, b"").evidence(b"rd")


@pytest.mark.parametrize(
    "quote",
    [
        TpmQuote(b"", tpms_attest(b"n", magic=0), (bytes(32),) * 24),
        TpmQuote(b"", tpms_attest(b"n", kind=0x8014), (bytes(32),) * 24),
        TpmQuote(b"", tpms_attest(b"n")[:10], (bytes(32),) * 24),
        TpmQuote(b"", tpms_attest(b"n"), (bytes(32),) * 23),
    ],
)
def test_malformed_quotes_refused(quote: TpmQuote) -> None:
    with pytest.raises(TeeReportError):
        check_quote_nonce(quote, b"n")


def test_tpm_runtime_measurement_and_init_data() -> None:
    tpm = SoftwareTpm()
    attester = TpmAttester(tpm, b"")
    assert isinstance(attester, RuntimeMeasurer)
    assert attester.register_for_pcr(17) == 17
    digest = hashlib.sha256(b"init-data toml").digest()
    assert attester.bind_init_data(digest) is BindResult.BOUND
    assert tpm.read_pcr(8) == hashlib.sha256(bytes(32) + digest).digest()
    with pytest.raises(AttestationRequestError, match="sha256"):
        attester.bind_init_data(hashlib.sha384(b"x").digest())
    attester.extend_runtime_measurement(b"\x01" * 48, 17)  # a longer digest is truncated to the register
    assert attester.read_runtime_measurement(17) == hashlib.sha256(bytes(32) + b"\x01" * 32).digest()


def test_az_snp_vtpm_evidence() -> None:
    vtpm = SoftwareAzureVtpm()
    attester = AzSnpVtpmAttester(vtpm)
    assert attester.tee is Tee.AZ_SNP_VTPM
    evidence = attester.evidence(b"\x05" * 32)
    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "vcek"]
    assert evidence["version"] == 2
    quote = evidence["tpm_quote"]
    assert isinstance(quote, dict)
    assert bytes.fromhex(quote["message"]) == tpms_attest(b"\x05" * 32)
    assert len(quote["pcrs"]) == 24
    assert _b64url_decode(str(evidence["hcl_report"])) == vtpm.hcl_report(b"\x05" * 32)
    assert _b64url_decode(str(evidence["vcek"])) == vtpm.vcek()
    digest = hashlib.sha256(b"t").digest()
    assert attester.bind_init_data(digest) is BindResult.BOUND
    assert vtpm.read_pcr(8) == hashlib.sha256(bytes(32) + digest).digest()


def test_az_tdx_vtpm_evidence_and_no_readback() -> None:
    vtpm = SoftwareAzureVtpm()
    attester = AzTdxVtpmAttester(vtpm)
    evidence = attester.evidence(b"\x06" * 32)
    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "td_quote"]
    assert _b64url_decode(str(evidence["td_quote"])) == vtpm.td_quote(vtpm.hcl_report(b"\x06" * 32))
    assert attester.read_runtime_measurement(17) is None
    attester.extend_runtime_measurement(b"\x02" * 32, 17)
    assert vtpm.read_pcr(17) == hashlib.sha256(bytes(32) + b"\x02" * 32).digest()
