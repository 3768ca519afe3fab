"""TEE detection order on synthetic probe trees, and the no-silent-fallback-to-sample rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cocoguest.attestation.attester import Tee
from cocoguest.attestation.configfs_tsm import PROVIDER_CCA, PROVIDER_TDX
from cocoguest.attestation.detect import Probes, detect_additional_devices, detect_tee
from cocoguest.attestation.drivers.cca import CcaAttester
from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.attestation.drivers.sgx import SgxAttester
from cocoguest.attestation.drivers.snp import SnpAttester
from cocoguest.attestation.drivers.tdx import TdxAttester
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.factory import DeviceBackends, select_additional_devices, select_attester
from cocoguest.errors import TeeNotFoundError
from tests.fixtures.tee_devices import SoftwareAzureVtpm, SoftwareTpm, probe_tree

ORDER = (
    Tee.TDX,
    Tee.SGX,
    Tee.AZ_TDX_VTPM,
    Tee.AZ_SNP_VTPM,
    Tee.SNP,
    Tee.CSV,
    Tee.CCA,
    Tee.SE,
    Tee.TPM,
)


@pytest.mark.parametrize("index", range(len(ORDER)))
def test_first_in_upstream_order_wins(tmp_path: Path, index: int) -> None:
    # every TEE from ORDER[index] on shows its marker; the earliest must win
    present = set(ORDER[index:])
    provider = PROVIDER_CCA if Tee.CCA in present and Tee.TDX not in present else None
    probes = probe_tree(tmp_path, present, tsm_provider=provider, machine="aarch64")
    assert detect_tee(probes).tee is ORDER[index]


def test_tdx_by_configfs_tsm_provider(tmp_path: Path) -> None:
    probes = probe_tree(tmp_path, {Tee.SNP}, tsm_provider=PROVIDER_TDX)
    assert detect_tee(probes).tee is Tee.TDX
    assert list((tmp_path / "tsm").iterdir()) == []  # the probe entry was removed


def test_cca_needs_aarch64(tmp_path: Path) -> None:
    assert detect_tee(probe_tree(tmp_path / "a", set(), tsm_provider=PROVIDER_CCA, machine="aarch64")).tee is Tee.CCA
    (tmp_path / "b").mkdir()
    assert detect_tee(probe_tree(tmp_path / "b", set(), tsm_provider=PROVIDER_CCA, machine="x86_64")).tee is None


def test_nothing_found_is_none_and_listsprobe_tree(tmp_path: Path) -> None:
    detection = detect_tee(probe_tree(tmp_path, set()))
    assert detection.tee is None
    assert [p.split(":")[0] for p in detection.probed] == [str(t) for t in ORDER]
    assert any(str(tmp_path / "tdx_guest") in p for p in detection.probed)


def test_no_silent_fallback_to_sample(tmp_path: Path) -> None:
    with pytest.raises(TeeNotFoundError) as info:
        select_attester(False, probe_tree(tmp_path, set()))
    message = str(info.value)
    assert "no TEE found" in message
    assert "--allow-sample-attester" in message
    assert str(tmp_path / "sev-guest-platform") in message


def test_sample_only_when_allowed_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        attester = select_attester(True, probe_tree(tmp_path, set()))
        assert isinstance(attester, SampleAttester)
        attester.evidence(b"a")
        attester.evidence(b"b")
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("SAMPLE attester" in w for w in warnings) == 1
    assert sum("NOT backed by a TEE" in w for w in warnings) == 2


def test_allow_sample_does_not_override_a_real_tee(tmp_path: Path) -> None:
    attester = select_attester(True, probe_tree(tmp_path, {Tee.SNP}))
    assert isinstance(attester, SnpAttester)


@pytest.mark.parametrize(("tee", "cls"), [(Tee.TDX, TdxAttester), (Tee.SGX, SgxAttester), (Tee.SNP, SnpAttester)])
def test_factory_builds_the_detected_driver(tmp_path: Path, tee: Tee, cls: type) -> None:
    assert isinstance(select_attester(False, probe_tree(tmp_path, {tee})), cls)


def test_factory_cca(tmp_path: Path) -> None:
    probes = probe_tree(tmp_path, set(), tsm_provider=PROVIDER_CCA, machine="aarch64")
    assert isinstance(select_attester(False, probes), CcaAttester)


@pytest.mark.parametrize("tee", [Tee.AZ_SNP_VTPM, Tee.AZ_TDX_VTPM])
def test_azure_gets_the_builtin_vtpm_backend(tmp_path: Path, tee: Tee) -> None:
    # built without touching the device; tests/unit/test_attest_azure_swtpm.py drives it on a swtpm
    attester = select_attester(False, probe_tree(tmp_path, {tee}), DeviceBackends(azure_imds_url="http://fake"))
    assert attester.tee is tee


def test_backends_complete_tpm_and_azure(tmp_path: Path) -> None:
    backends = DeviceBackends(tpm=SoftwareTpm(), azure_vtpm=SoftwareAzureVtpm())
    assert isinstance(select_attester(False, probe_tree(tmp_path / "t", {Tee.TPM}), backends), TpmAttester)
    (tmp_path / "a").mkdir()
    assert select_attester(False, probe_tree(tmp_path / "a", {Tee.AZ_TDX_VTPM}), backends).tee is Tee.AZ_TDX_VTPM


def test_additional_devices(tmp_path: Path) -> None:
    assert detect_additional_devices(Probes()) == ()
    probes = Probes(enable_sample_device=True)
    assert [a.tee for a in select_additional_devices(probes)] == [Tee.SAMPLE_DEVICE]
