"""SGX under Occlum: OcclumDcapDevice and SgxAttester against an emulated Occlum ``/dev/sgx`` ioctl.

The emulator (tests/fixtures/emulated_ioctl.py) decodes the ioctl argument with Occlum's layout and reads and
writes the caller's memory through its pointers. The recorded quote is Trustee's
``deps/verifier/test_data/occlum_quote.dat`` (report data ``"test"``, zero-padded).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import os
from pathlib import Path

import pytest

from cocoguest.attestation.attester import Tee
from cocoguest.attestation.detect import Probes
from cocoguest.attestation.drivers.occlum_dcap import (
    SGXIOC_GEN_DCAP_QUOTE,
    SGXIOC_GET_DCAP_QUOTE_SIZE,
    OcclumDcapDevice,
)
from cocoguest.attestation.drivers.sgx import SgxAttester, quote_report_data
from cocoguest.attestation.factory import DeviceBackends, build_attester
from cocoguest.errors import AttestationRequestError, TeeDeviceError, TeeReportError
from cocoguest.limits import Limits
from tests.fixtures.emulated_ioctl import EmulatedOcclumSgx
from tests.fixtures.tee_devices import sgx_quote_v3

RECORDED_QUOTE = (Path(__file__).parent.parent / "vectors" / "attester" / "trustee_occlum_quote.dat").read_bytes()


def _sgx(tmp_path: Path) -> Path:
    device = tmp_path / "sgx"
    device.write_bytes(b"")
    return device


def test_ioctl_numbers_match_occlum() -> None:
    # occlum tools/toolchains/dcap_lib/src/occlum_dcap.rs
    assert SGXIOC_GET_DCAP_QUOTE_SIZE == 0x80047307
    assert SGXIOC_GEN_DCAP_QUOTE == 0xC0187308


def test_recorded_occlum_quote(tmp_path: Path) -> None:
    libos = EmulatedOcclumSgx(_sgx(tmp_path), lambda _rd: RECORDED_QUOTE)
    quote = OcclumDcapDevice(libos.path, ioctl=libos).quote(b"test")
    assert quote == RECORDED_QUOTE
    assert libos.report_data == [b"test" + bytes(60)]
    assert libos.requests == [0x80047307, 0xC0187308]
    attester = SgxAttester(occlum=True, occlum_library=OcclumDcapDevice(libos.path, ioctl=libos))
    assert base64.b64decode(str(attester.evidence(b"test")["quote"])) == RECORDED_QUOTE
    # SECURITY: the recorded quote does not bind another nonce.
    with pytest.raises(TeeReportError, match="requested report data"):
        attester.evidence(b"other")


def test_evidence_binds_report_data(tmp_path: Path) -> None:
    libos = EmulatedOcclumSgx(_sgx(tmp_path))
    attester = SgxAttester(occlum=True, occlum_library=OcclumDcapDevice(libos.path, ioctl=libos))
    report_data = hashlib.sha384(b"nonce" + b"tee-pubkey").digest()
    evidence = attester.evidence(report_data)
    assert libos.report_data == [report_data + bytes(16)]
    assert quote_report_data(base64.b64decode(str(evidence["quote"]))) == report_data + bytes(16)
    with pytest.raises(AttestationRequestError):
        attester.evidence(bytes(65))
    assert len(libos.report_data) == 1


def test_emulator_refuses_a_wrong_layout(tmp_path: Path) -> None:
    """The emulated LibOS really decodes the layout: an argument with the quote length inline is refused."""

    class Inline(ctypes.Structure):
        _fields_ = (("report_data", ctypes.c_void_p), ("quote_len", ctypes.c_uint64), ("quote_buf", ctypes.c_void_p))

    libos = EmulatedOcclumSgx(_sgx(tmp_path))
    report = ctypes.create_string_buffer(64)
    buf = ctypes.create_string_buffer(1000)
    fd = os.open(libos.path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="emulated kernel") as caught:
            libos(fd, 0xC0187308, Inline(ctypes.addressof(report), 1000, ctypes.addressof(buf)))
        assert caught.value.errno == errno.EFAULT
    finally:
        os.close(fd)


def test_libos_written_length_honoured(tmp_path: Path) -> None:
    libos = EmulatedOcclumSgx(_sgx(tmp_path), written_len=48 + 384)
    quote = OcclumDcapDevice(libos.path, ioctl=libos).quote(b"rd")
    assert quote == sgx_quote_v3(b"rd" + bytes(62))[: 48 + 384]


@pytest.mark.parametrize(
    ("libos_kwargs", "limits", "error", "message"),
    [
        ({"announced_size": 0}, Limits(), TeeReportError, "announces a DCAP quote of 0 bytes"),
        (
            {},
            Limits(max_tee_report_bytes=400),
            TeeReportError,
            r"announces a DCAP quote of 440 bytes \(allowed: 1 to 400",
        ),
        ({"announced_size": 100}, Limits(), TeeDeviceError, r"SGXIOC_GEN_DCAP_QUOTE on .*sgx failed: Invalid argument"),
        ({"written_len": 0}, Limits(), TeeReportError, "quote length of 0"),
        ({"written_len": 441}, Limits(), TeeReportError, "quote length of 441"),
    ],
)
def test_bad_libos_answers(
    tmp_path: Path, libos_kwargs: dict[str, int], limits: Limits, error: type, message: str
) -> None:
    libos = EmulatedOcclumSgx(_sgx(tmp_path), **libos_kwargs)
    with pytest.raises(error, match=message):
        OcclumDcapDevice(libos.path, ioctl=libos, limits=limits).quote(b"rd")


def test_real_ioctl_errors_name_the_device(tmp_path: Path) -> None:
    with pytest.raises(TeeDeviceError, match=r"cannot open Occlum SGX device .*absent"):
        OcclumDcapDevice(tmp_path / "absent").quote(b"rd")
    # The real fcntl.ioctl on a file that is not /dev/sgx: ENOTTY, naming the first ioctl.
    with pytest.raises(TeeDeviceError, match=r"SGXIOC_GET_DCAP_QUOTE_SIZE on .*sgx failed"):
        OcclumDcapDevice(_sgx(tmp_path)).quote(b"rd")


def test_factory_wires_occlum_device(tmp_path: Path) -> None:
    probes = Probes(occlum=True, occlum_sgx_device=tmp_path / "sgx")
    attester = build_attester(Tee.SGX, probes)
    # Built in now: the missing device is named, where an UnsupportedError used to say "no library".
    with pytest.raises(TeeDeviceError, match="cannot open Occlum SGX device"):
        attester.evidence(b"n")
    libos = EmulatedOcclumSgx(_sgx(tmp_path))
    injected = build_attester(Tee.SGX, probes, DeviceBackends(occlum_library=OcclumDcapDevice(libos.path, ioctl=libos)))
    injected.evidence(b"n")
    assert libos.report_data == [b"n" + bytes(63)]
