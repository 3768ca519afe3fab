"""The az-snp-vtpm / az-tdx-vtpm attesters, Azure CVM detection and the built-in tpm backend on a real swtpm.

What is real: the TPM (swtpm, through tpm2-tools, the code path production uses), the NV report request, the
quote with the AK at the Azure handle 0x81000003 (its signature is verified here), PCR extends, HTTP to the IMDS.
What is synthetic: the HCL report (the test plays the paravisor and writes it into NV index 0x01400001, built
from a synthetic SNP report / TD report and runtime claims carrying the report data), and the IMDS (a fake on
loopback). No real Azure paravisor or IMDS is exercised.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from cocoguest.attestation.attester import BindResult, Tee
from cocoguest.attestation.detect import Probes, detect_tee
from cocoguest.attestation.drivers.azure_hcl import HclReportType
from cocoguest.attestation.drivers.azure_imds import ImdsClient
from cocoguest.attestation.drivers.azure_vtpm import AzSnpVtpmAttester, AzTdxVtpmAttester
from cocoguest.attestation.drivers.azure_vtpm_device import (
    AZURE_AK_HANDLE,
    HCL_REPORT_NV_INDEX,
    REPORT_REQUEST_NV_INDEX,
    Tpm2ToolsAzureVtpm,
)
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.factory import DeviceBackends, select_attester
from cocoguest.errors import HclReportBindingError, ImdsError, TeeDeviceError
from cocoguest.limits import Limits
from tests.fixtures.azure import FakeImds, synthetic_hcl_report
from tests.fixtures.cli import run_cocoguest
from tests.fixtures.swtpm import provision_ak, running_swtpm, tpm_tool
from tests.fixtures.tee_devices import probe_tree

pytestmark = pytest.mark.interop

FAST = Limits(azure_hcl_report_timeout_s=0.5, azure_hcl_report_poll_s=0.05)


@dataclasses.dataclass
class AzureTpm:
    tcti: str
    root: Path
    ak_der: bytes

    def paravisor_writes(self, report: bytes) -> None:
        """Play the paravisor: put ``report`` into the HCL report NV index."""
        (self.root / "hcl.bin").write_bytes(report)
        tpm_tool(self.tcti, "tpm2_nvwrite", "-C", "o", "-i", "hcl.bin", hex(HCL_REPORT_NV_INDEX), cwd=self.root)


@pytest.fixture(scope="module")
def azure_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureTpm]:
    """swtpm as an Azure vTPM: AK at 0x81000003, the HCL report NV index defined (2048 bytes, swtpm's maximum)."""
    root = tmp_path_factory.mktemp("azure-swtpm")
    with running_swtpm(root) as tcti:
        ak_der = provision_ak(tcti, root, AZURE_AK_HANDLE)
        tpm_tool(tcti, "tpm2_nvdefine", "-C", "o", "-s", "2048", "-a", "ownerread|ownerwrite",
                 hex(HCL_REPORT_NV_INDEX), cwd=root)  # fmt: skip
        yield AzureTpm(tcti, root, ak_der)


@pytest.fixture(scope="module")
def bare_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureTpm]:
    """swtpm as a plain TPM: AK at upstream's 0x81010002, no HCL report."""
    root = tmp_path_factory.mktemp("bare-swtpm")
    with running_swtpm(root) as tcti:
        yield AzureTpm(tcti, root, provision_ak(tcti, root, 0x81010002))


@pytest.fixture(scope="module")
def vcek() -> tuple[str, bytes]:
    """A stand-in VCEK (P-384, self-signed): its PEM for the fake IMDS and its DER."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def imds(vcek: tuple[str, bytes]) -> Iterator[FakeImds]:
    yield from FakeImds(vcek[0]).serve()


def _vtpm(tpm: AzureTpm, imds: FakeImds, limits: Limits = FAST) -> Tpm2ToolsAzureVtpm:
    return Tpm2ToolsAzureVtpm(tpm.tcti, ImdsClient(imds.url, limits=limits), limits=limits)


def _b64url(text: object) -> bytes:
    assert isinstance(text, str)
    assert len(text) % 4 == 0  # padded, as upstream's serde_with Base64<UrlSafe>
    return base64.urlsafe_b64decode(text)


def _check_quote(quote: object, ak_der: bytes, nonce: bytes) -> None:
    """The exact tpm_quote shape, an AK signature that verifies, the nonce and the PCR digest inside."""
    assert isinstance(quote, dict)
    assert list(quote) == ["signature", "message", "pcrs"]
    signature, message = bytes.fromhex(quote["signature"]), bytes.fromhex(quote["message"])
    pcrs = [bytes.fromhex(p) for p in quote["pcrs"]]
    assert len(pcrs) == 24
    assert all(len(p) == 32 for p in pcrs)
    ak = serialization.load_der_public_key(ak_der)
    assert isinstance(ak, rsa.RSAPublicKey)
    assert len(signature) == 256  # the bare RSA signature, no TPMT_SIGNATURE header
    ak.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    assert struct.pack(">H", len(nonce)) + nonce in message
    assert message.endswith(struct.pack(">H", 32) + hashlib.sha256(b"".join(pcrs)).digest())


def test_az_snp_vtpm_evidence_on_swtpm(azure_tpm: AzureTpm, imds: FakeImds, vcek: tuple[str, bytes]) -> None:
    report_data = hashlib.sha512(b"runtime data, snp").digest()
    hcl = synthetic_hcl_report(HclReportType.SNP, report_data)
    azure_tpm.paravisor_writes(hcl)
    evidence = AzSnpVtpmAttester(_vtpm(azure_tpm, imds)).evidence(report_data)
    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "vcek"]
    assert evidence["version"] == 2
    _check_quote(evidence["tpm_quote"], azure_tpm.ak_der, report_data)
    assert _b64url(evidence["hcl_report"]) == hcl
    assert _b64url(evidence["vcek"]) == vcek[1]
    # the report request reached the vTPM's request index, exactly
    out = tpm_tool(azure_tpm.tcti, "tpm2_nvread", "-C", "o", hex(REPORT_REQUEST_NV_INDEX), cwd=azure_tpm.root)
    assert out == report_data
    [(method, path, headers, _)] = imds.requests
    assert (method, path, headers["Metadata"]) == ("GET", "/metadata/THIM/amd/certification", "true")


def test_az_tdx_vtpm_evidence_on_swtpm(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    report_data = b"\x42" * 32  # a shorter request: the request index is defined again at the new size
    hcl = synthetic_hcl_report(HclReportType.TDX, report_data)
    azure_tpm.paravisor_writes(hcl)
    evidence = AzTdxVtpmAttester(_vtpm(azure_tpm, imds)).evidence(report_data)
    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "td_quote"]
    _check_quote(evidence["tpm_quote"], azure_tpm.ak_der, report_data)
    assert _b64url(evidence["hcl_report"]) == hcl
    td_report = hcl[32 : 32 + 1024]
    assert _b64url(evidence["td_quote"]) == b"TDQUOTE" + td_report
    [(method, path, headers, body)] = imds.requests
    assert (method, path, headers["Metadata"]) == ("POST", "/acc/tdquote", "true")
    sent = json.loads(body)["report"]
    assert "=" not in sent
    assert base64.urlsafe_b64decode(sent + "=" * (-len(sent) % 4)) == td_report
    out = tpm_tool(azure_tpm.tcti, "tpm2_nvread", "-C", "o", hex(REPORT_REQUEST_NV_INDEX), cwd=azure_tpm.root)
    assert out == report_data


def test_stale_hcl_report_is_refused(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    azure_tpm.paravisor_writes(synthetic_hcl_report(HclReportType.SNP, b"\x01" * 32))  # an earlier request's
    with pytest.raises(HclReportBindingError, match="stale"):
        AzSnpVtpmAttester(_vtpm(azure_tpm, imds)).evidence(b"\x02" * 32)
    assert imds.requests == []  # nothing else was fetched for a refused report


def test_torn_hcl_report_is_refused(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    report_data = b"\x03" * 32
    azure_tpm.paravisor_writes(synthetic_hcl_report(HclReportType.SNP, report_data, hw_report_data=bytes(64)))
    with pytest.raises(HclReportBindingError, match="torn"):
        AzSnpVtpmAttester(_vtpm(azure_tpm, imds)).evidence(report_data)


def test_a_late_paravisor_answer_is_awaited(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    report_data = b"\x04" * 32
    azure_tpm.paravisor_writes(synthetic_hcl_report(HclReportType.SNP, b"\x05" * 32))
    late = synthetic_hcl_report(HclReportType.SNP, report_data)
    paravisor = threading.Timer(0.2, azure_tpm.paravisor_writes, (late,))
    paravisor.start()
    limits = Limits(azure_hcl_report_timeout_s=10.0, azure_hcl_report_poll_s=0.05)
    try:
        evidence = AzSnpVtpmAttester(_vtpm(azure_tpm, imds, limits)).evidence(report_data)
    finally:
        paravisor.join()
    assert _b64url(evidence["hcl_report"]) == late


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("status-500", r"Azure IMDS VCEK \(GET http://127\.0\.0\.1:\d+/metadata/THIM/amd/certification\): HTTP 500"),
        ("oversize", "over the 262144-byte limit"),
        ("not-json", "the answer is not JSON"),
        ("nested", "nested deeper than 64 levels"),
        ("no-metadata", "HTTP 400"),
    ],
)
def test_imds_failures_are_named(azure_tpm: AzureTpm, imds: FakeImds, mode: str, message: str) -> None:
    report_data = b"\x06" * 32
    azure_tpm.paravisor_writes(synthetic_hcl_report(HclReportType.SNP, report_data))
    imds.mode = mode
    with pytest.raises(ImdsError, match=message):
        AzSnpVtpmAttester(_vtpm(azure_tpm, imds)).evidence(report_data)


def test_unreachable_imds_is_named(azure_tpm: AzureTpm) -> None:
    client = ImdsClient("http://127.0.0.1:9", limits=FAST)
    with pytest.raises(ImdsError, match=r"Azure IMDS TD quote \(POST http://127\.0\.0\.1:9/acc/tdquote\)"):
        client.td_quote(bytes(1024))


def test_pcr_extend_and_init_data_on_the_vtpm(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    vtpm = _vtpm(azure_tpm, imds)
    attester = AzSnpVtpmAttester(vtpm)
    before = vtpm.read_pcr(8)
    digest = hashlib.sha256(b'version = "0.1.0"\nalgorithm = "sha256"\n').digest()
    assert attester.bind_init_data(digest) is BindResult.BOUND
    assert vtpm.read_pcr(8) == hashlib.sha256(before + digest).digest()
    before = attester.read_runtime_measurement(23)
    assert before is not None
    attester.extend_runtime_measurement(b"\x09" * 32, 23)
    assert attester.read_runtime_measurement(23) == hashlib.sha256(before + b"\x09" * 32).digest()
    assert AzTdxVtpmAttester(vtpm).read_runtime_measurement(23) is None  # upstream issue #1201


def _probes(tmp_path: Path, tcti: str | None) -> Probes:
    # no other TEE marker; the Azure probe is the built-in one, on the given TCTI
    return dataclasses.replace(probe_tree(tmp_path, set()), azure_cvm=None, tpm_tcti=tcti)


@pytest.mark.parametrize(("kind", "tee"), [(HclReportType.SNP, Tee.AZ_SNP_VTPM), (HclReportType.TDX, Tee.AZ_TDX_VTPM)])
def test_detection_by_hcl_report_type(azure_tpm: AzureTpm, tmp_path: Path, kind: HclReportType, tee: Tee) -> None:
    azure_tpm.paravisor_writes(synthetic_hcl_report(kind, None))
    assert detect_tee(_probes(tmp_path, azure_tpm.tcti)).tee is tee


def test_detection_without_hcl_report_is_plain_tpm(bare_tpm: AzureTpm, tmp_path: Path) -> None:
    assert detect_tee(_probes(tmp_path, bare_tpm.tcti)).tee is Tee.TPM


def test_detection_of_a_non_hcl_nv_content_is_plain_tpm(azure_tpm: AzureTpm, tmp_path: Path) -> None:
    azure_tpm.paravisor_writes(b"\xff" * 2048)
    assert detect_tee(_probes(tmp_path, azure_tpm.tcti)).tee is Tee.TPM


def test_detection_without_any_tpm_is_no_tee(tmp_path: Path) -> None:
    detection = detect_tee(_probes(tmp_path, None))
    assert detection.tee is None
    assert any("Azure SNP CVM" in p for p in detection.probed)


def test_factory_builds_the_tpm_attester_with_the_builtin_backend(bare_tpm: AzureTpm, tmp_path: Path) -> None:
    attester = select_attester(False, _probes(tmp_path, bare_tpm.tcti))
    assert isinstance(attester, TpmAttester)
    evidence = attester.evidence(b"\x07" * 48)
    assert base64.b64decode(str(evidence["ak_public"])) == bare_tpm.ak_der
    quote = evidence["tpm_quote"]
    assert isinstance(quote, dict)
    assert b"\x07" * 32 in base64.b64decode(quote["message"])


def test_a_missing_ak_is_named_not_created(bare_tpm: AzureTpm, tmp_path: Path) -> None:
    with pytest.raises(TeeDeviceError, match=r"no attestation key at persistent handle 0x81010099.*tpm2_createak"):
        select_attester(False, _probes(tmp_path, bare_tpm.tcti), DeviceBackends(tpm_ak_handle=0x81010099))
    listing = tpm_tool(bare_tpm.tcti, "tpm2_getcap", "handles-persistent", cwd=bare_tpm.root).decode()
    assert "0x81010099" not in listing


def test_cocoguest_evidence_on_the_synthetic_azure_cvm(azure_tpm: AzureTpm, imds: FakeImds) -> None:
    # the real CLI and detection path; the TPM and the IMDS are injected through the documented environment
    runtime_data = b"nonce from the KBS"
    azure_tpm.paravisor_writes(synthetic_hcl_report(HclReportType.SNP, runtime_data.ljust(32, b"\0")))
    env = {
        **os.environ,
        "COCOGUEST_TPM_TCTI": azure_tpm.tcti,
        "COCOGUEST_AZURE_IMDS_URL": imds.url,
        "COCOGUEST_LIMITS": "azure_hcl_report_timeout_s=1",
    }
    started = time.monotonic()
    result = run_cocoguest("evidence", "--runtime-data", base64.b64encode(runtime_data).decode(), env=env)
    assert result.returncode == 0, result.stderr
    tee, _, document = result.stdout.strip().partition(":")
    assert tee == "az-snp-vtpm"
    evidence = json.loads(document)
    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "vcek"]
    _check_quote(evidence["tpm_quote"], azure_tpm.ak_der, runtime_data.ljust(32, b"\0"))
    assert time.monotonic() - started < 30

    # a stale report: one error line naming the HCL report, nothing on stdout
    result = run_cocoguest("evidence", "--runtime-data", base64.b64encode(b"other").decode(), env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ")
    assert "HCL report is stale" in line
