"""The tpm attester and the AA event log against a real software TPM (swtpm) through tpm2-tools.

The quote signature is verified with the AK public key the TPM exports, the quote's PCR digest against the PCR
values returned with it, and init-data / runtime-measurement extends are read back from the TPM.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cocoguest.attestation.attester import BindResult
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.drivers.tpm2_tools import Tpm2ToolsTpm
from cocoguest.attestation.eventlog import AaelEvent, EventLog, tagged_event
from cocoguest.errors import TeeDeviceError
from tests.fixtures.swtpm import provision_ak, running_swtpm

pytestmark = pytest.mark.interop

AK_HANDLE = 0x81010002


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh swtpm on loopback with an RSA AK persisted at 0x81010002; yields its TCTI string."""
    root = tmp_path_factory.mktemp("swtpm")
    with running_swtpm(root) as tcti:
        provision_ak(tcti, root, AK_HANDLE)
        yield tcti


def test_quote_is_signed_by_the_ak_and_binds_the_nonce(swtpm: str) -> None:
    tpm = Tpm2ToolsTpm(swtpm, AK_HANDLE)
    attester = TpmAttester(tpm, tpm.ak_public_der())
    report_data = hashlib.sha384(b"runtime data").digest()
    evidence = attester.evidence(report_data)
    quote = evidence["tpm_quote"]
    assert isinstance(quote, dict)
    message = base64.b64decode(quote["message"])
    signature = base64.b64decode(quote["signature"])
    ak = serialization.load_der_public_key(base64.b64decode(str(evidence["ak_public"])))
    assert isinstance(ak, rsa.RSAPublicKey)
    # TPMT_SIGNATURE: sigAlg (RSASSA 0x0014), hash (SHA256 0x000b), u16 size, signature
    alg, hash_alg, size = struct.unpack_from(">HHH", signature)
    assert (alg, hash_alg, size) == (0x0014, 0x000B, 256)
    ak.verify(signature[6:], message, padding.PKCS1v15(), hashes.SHA256())
    # the signed message carries our 32-byte nonce and the digest of the 24 PCR values returned with it
    assert report_data[:32] in message
    pcrs = [bytes.fromhex(p) for p in quote["pcrs"]]
    assert len(pcrs) == 24
    assert message.endswith(struct.pack(">H", 32) + hashlib.sha256(b"".join(pcrs)).digest())


def test_init_data_extends_pcr8(swtpm: str) -> None:
    tpm = Tpm2ToolsTpm(swtpm, AK_HANDLE)
    before = tpm.read_pcr(8)
    digest = hashlib.sha256(b'version = "0.1.0"\nalgorithm = "sha256"\n').digest()
    assert TpmAttester(tpm, b"").bind_init_data(digest) is BindResult.BOUND
    assert tpm.read_pcr(8) == hashlib.sha256(before + digest).digest()


def test_event_log_replays_to_the_real_pcr(swtpm: str, tmp_path: Path) -> None:
    tpm = Tpm2ToolsTpm(swtpm, AK_HANDLE)
    attester = TpmAttester(tpm, b"")
    before = tpm.read_pcr(23)
    # PCR 23 (application): upstream's default init_pcr 17 is a DRTM PCR that locality 0 cannot extend
    log = EventLog(attester, path=tmp_path / "eventlog", wal_path=tmp_path / ".wal", init_pcr=23)
    log.open()
    events = [AaelEvent("github.com/confidential-containers", "PullImage", '{"image":"x", "digest":"sha256:y"}'),
              AaelEvent("d", "o", "c")]  # fmt: skip
    for event in events:
        log.extend(event)
    log.close()
    value = before
    for event in events:
        value = hashlib.sha256(value + hashlib.sha256(tagged_event(event.text())).digest()).digest()
    assert tpm.read_pcr(23) == value


def test_default_init_pcr_17_is_refused_by_a_tpm(swtpm: str, tmp_path: Path) -> None:
    # A finding, not a wish: on a TPM, PCRs 17-22 are extendable only from localities 3/4, so upstream's default
    # init_pcr (17) cannot work with the tpm attester; the failure is typed and leaves the log unchanged.
    log = EventLog(TpmAttester(Tpm2ToolsTpm(swtpm, AK_HANDLE), b""), path=tmp_path / "el", wal_path=tmp_path / "w")
    log.open()
    with pytest.raises(TeeDeviceError, match="tpm2_pcrextend"):
        log.extend(AaelEvent("d", "o", "c"))
    assert log.entries() == []
    assert not (tmp_path / "w").exists()
    log.close()


def test_wrong_ak_handle_is_a_device_error(swtpm: str) -> None:
    with pytest.raises(TeeDeviceError, match="tpm2_quote"):
        Tpm2ToolsTpm(swtpm, 0x81010099).quote(bytes(32))
