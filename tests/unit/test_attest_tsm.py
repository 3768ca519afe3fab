"""configfs-tsm through a synthetic report root: the kernel ABI steps, generation conflicts, provider checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoguest.attestation.configfs_tsm import PROVIDER_TDX, ConfigfsTsm
from cocoguest.errors import TeeDeviceError, TeeReportError
from cocoguest.limits import Limits
from tests.fixtures.tee_devices import FakeTsmKernel


def _echo(inblob: bytes) -> bytes:
    return b"REPORT(" + inblob + b")"


def _tsm(kernel: FakeTsmKernel, limits: Limits | None = None) -> ConfigfsTsm:
    return ConfigfsTsm(
        kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry, limits=limits or Limits()
    )


def test_report_answers_the_written_inblob(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, _echo)
    report = _tsm(kernel).report(b"nonce-1", expected_provider=PROVIDER_TDX)
    assert kernel.inblobs == [b"nonce-1"]
    assert report.untrusted_outblob == b"REPORT(nonce-1)"
    assert report.provider == PROVIDER_TDX
    assert report.untrusted_auxblob is None
    assert list(kernel.root.iterdir()) == []  # the entry was removed


def test_privlevel_and_auxblob(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", "sev_guest", _echo, auxblob=b"certs")
    report = _tsm(kernel).report(b"rd", expected_provider="sev_guest", privlevel=0, want_auxblob=True)
    assert kernel.privlevels == [b"0"]
    assert report.untrusted_auxblob == b"certs"


def test_generation_conflict_is_retried(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, _echo, conflicts=2)
    report = _tsm(kernel).report(b"rd", expected_provider=PROVIDER_TDX)
    assert report.untrusted_outblob == b"REPORT(rd)"
    assert kernel.entries_created == 3


def test_persistent_generation_conflict_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, _echo, conflicts=100)
    with pytest.raises(TeeDeviceError, match="generation changed") as info:
        _tsm(kernel, Limits(max_tsm_generation_retries=2)).report(b"rd", expected_provider=PROVIDER_TDX)
    assert info.value.retryable
    assert kernel.entries_created == 3
    assert list(kernel.root.iterdir()) == []


def test_other_provider_is_refused_before_writing(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", "arm_cca_guest", _echo)
    with pytest.raises(TeeReportError, match="arm_cca_guest"):
        _tsm(kernel).report(b"rd", expected_provider=PROVIDER_TDX)
    assert kernel.inblobs == []
    assert list(kernel.root.iterdir()) == []


def test_empty_outblob_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, lambda _: b"")
    with pytest.raises(TeeReportError, match="empty outblob"):
        _tsm(kernel).report(b"rd", expected_provider=PROVIDER_TDX)


def test_oversized_outblob_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, lambda _: bytes(5000))
    with pytest.raises(TeeReportError, match="longer than 4096"):
        _tsm(kernel, Limits(max_tee_report_bytes=4096)).report(b"rd", expected_provider=PROVIDER_TDX)


def test_missing_root(tmp_path: Path) -> None:
    tsm = ConfigfsTsm(tmp_path / "absent")
    assert not tsm.available()
    assert tsm.provider() is None
    with pytest.raises(TeeDeviceError, match="cannot create a configfs-tsm report entry"):
        tsm.report(b"rd", expected_provider=PROVIDER_TDX)


def test_provider_probe(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", PROVIDER_TDX, _echo)
    assert _tsm(kernel).provider() == PROVIDER_TDX
    assert list(kernel.root.iterdir()) == []
