"""The SE attester and its built-in ``/dev/uv`` driver against an emulated uvdevice and Ultravisor.

Only the ioctl is synthetic (``tests/fixtures/uv_kernel.py``). The end-to-end test plays both ends of the
binding: the KBS's runtime-data digest (SHA-512) goes into the request as the client injects it, and the
KBS-side check recomputes the measurement HMAC from the response with the measurement key the (emulated)
ARCB carried.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import json
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, Tee
from cocoguest.attestation.drivers.se import RESPONSE_FIELDS, SeAttester
from cocoguest.attestation.drivers.uvdevice import UVIO_IOCTL_ATT, UvDevice
from cocoguest.attestation.factory import build_attester, select_attester
from cocoguest.devkbs.verifier import expected_report_data
from cocoguest.errors import AttestationRequestError, TeeDeviceError, TeeFirmwareError, TeeReportError
from cocoguest.limits import Limits
from tests.fixtures.tee_devices import probe_tree
from tests.fixtures.uv_kernel import UVIO_IOCTL_ATT as KERNEL_UVIO_IOCTL_ATT
from tests.fixtures.uv_kernel import FakeUvKernel, se_measurement

ARCB = b"ARCB" + bytes(range(256)) * 3
KEY = b"\x41" * 64
NONCE = b"\x08" * 16
TAGS = b"\x01" * 64 + b"\x02" * 64 + b"\x03" * 64 + b"\x04" * 16
ADDITIONAL = b"\x09" * 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _request(digest: bytes | None, **overrides: object) -> bytes:
    """An ``SeAttestationRequest`` as the attestation service makes it, with the client's digest injected."""
    request: dict[str, object] = {
        "request_blob": _b64(ARCB),
        "measurement_size": 64,
        "additional_size": 32,
        "encr_measurement_key": _b64(b"\xee" * 80),
        "encr_request_nonce": _b64(b"\xdd" * 32),
        "image_hdr_tags": _b64(TAGS),
    }
    if digest is not None:
        request["runtime_data_digest"] = _b64(digest)
    request.update(overrides)
    return json.dumps(request).encode()


def _attester(
    tmp_path: Path, limits: Limits | None = None, **kernel_options: object
) -> tuple[SeAttester, FakeUvKernel]:
    path = tmp_path / "uv"
    path.write_bytes(b"")
    options: dict[str, object] = {
        "arcb": ARCB,
        "measurement_key": KEY,
        "nonce": NONCE,
        "boot_hdr_tags": TAGS,
        "additional": ADDITIONAL,
        **kernel_options,
    }
    kernel = FakeUvKernel(path, **options)  # type: ignore[arg-type]
    limits = limits or Limits()
    return SeAttester(UvDevice(path, ioctl=kernel, limits=limits), limits=limits), kernel


def test_request_number_matches_the_uapi_header() -> None:
    assert UVIO_IOCTL_ATT == KERNEL_UVIO_IOCTL_ATT == 0xC0407501


def test_measurement_helper_matches_s390_tools_vector() -> None:
    # s390-tools rust/pv/src/uvattest/attest.rs `measurement_all` (MIT): key 0x41*64, tags 1/2/3/4, cuid 5,
    # user 7*256, nonce 8*16, additional 9*128.
    expected = bytes.fromhex(
        "88794c62cce7bcf26216deb3f48f13fea6374b6d7e35bcc5c2ce68121db6f45d"
        "fc8c171856463549408bf8e7d1aca11efad0a878af97dc9e21a1fc2a32f3a675"
    )
    assert se_measurement(KEY, TAGS, b"\x05" * 16, b"\x07" * 256, NONCE, b"\x09" * 128) == expected


def test_end_to_end_binding_to_the_kbs_runtime_data(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path)
    runtime_data = {"tee-pubkey": {"kty": "EC"}, "nonce": "<the SeAttestationRequest>", "additional-evidence": ""}
    digest = expected_report_data("se", runtime_data)  # the KBS hashes SE runtime data with SHA-512
    assert len(digest) == 64
    evidence = attester.evidence(_request(digest))
    assert list(evidence) == list(RESPONSE_FIELDS)
    assert all(isinstance(value, str) for value in evidence.values())
    fields = {name: base64.b64decode(str(value)) for name, value in evidence.items()}
    assert kernel.user_data == [digest]
    assert fields["user_data"] == digest
    assert fields["cuid"] == kernel.cuid
    assert fields["additional_data"] == ADDITIONAL
    assert fields["image_hdr_tags"] == TAGS
    assert fields["encr_measurement_key"] == b"\xee" * 80
    assert fields["encr_request_nonce"] == b"\xdd" * 32
    # KBS side: recompute the HMAC with the decrypted measurement key and the request nonce.
    recomputed = se_measurement(KEY, fields["image_hdr_tags"], fields["cuid"], fields["user_data"], NONCE, ADDITIONAL)
    assert fields["measurement"] == recomputed
    # A different runtime-data digest gives a different measurement: the digest is bound.
    other = attester.evidence(_request(b"\x00" * 64))
    assert other["measurement"] != evidence["measurement"]
    assert attester.bind_init_data(bytes(32)) is BindResult.UNSUPPORTED


def test_short_digest_is_zero_padded_and_no_additional_data(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path, additional=b"")
    evidence = attester.evidence(_request(b"\xab" * 48, additional_size=0))
    assert kernel.user_data == [(b"\xab" * 48).ljust(64, b"\0")]
    assert evidence["additional_data"] == ""


@pytest.mark.parametrize(
    ("report_data", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (_request(None), "runtime_data_digest"),
        (_request(b"\x01" * 65), "64-byte"),
        (_request(b"\x01" * 64, image_hdr_tags=_b64(TAGS[:-1])), "image_hdr_tags of 207 bytes"),
        (_request(b"\x01" * 64, request_blob="@@@"), "request_blob is not base64"),
        (_request(b"\x01" * 64, measurement_size=-1), "measurement_size"),
        (_request(b"\x01" * 64, measurement_size=True), "measurement_size"),
        (_request(b"\x01" * 64, measurement_size=0), "measurement_size of 0 bytes"),
        (_request(b"\x01" * 64, additional_size=0x8001), "additional_size of 32769 bytes"),
        (_request(b"\x01" * 64, request_blob=""), r"request_blob \(ARCB\) of 0 bytes"),
    ],
)
def test_bad_requests_are_refused_before_the_ioctl(tmp_path: Path, report_data: bytes, match: str) -> None:
    attester, kernel = _attester(tmp_path)
    with pytest.raises(AttestationRequestError, match=match):
        attester.evidence(report_data)
    assert kernel.calls == 0


def test_arcb_limit_comes_from_limits(tmp_path: Path) -> None:
    attester, kernel = _attester(tmp_path, Limits(se_max_arcb_bytes=16))
    with pytest.raises(AttestationRequestError, match=r"request_blob \(ARCB\) of 772 bytes is outside 1..16"):
        attester.evidence(_request(b"\x01" * 64))
    assert kernel.calls == 0


def test_kernel_einval_names_device_and_errno(tmp_path: Path) -> None:
    # Limits looser than the kernel's: the kernel's own check answers EINVAL.
    attester, kernel = _attester(tmp_path, Limits(se_max_measurement_bytes=0x10000))
    with pytest.raises(TeeDeviceError, match=rf"UVIO_IOCTL_ATT on .*uv failed: .*errno {errno.EINVAL}"):
        attester.evidence(_request(b"\x01" * 64, measurement_size=0x9000))
    assert kernel.calls == 1


@pytest.mark.parametrize(
    ("options", "code", "match"),
    [
        ({"arcb": b"another machine's request"}, 0x010C, "cannot decrypt"),
        ({"uv_rc": 0x0002, "uv_rrc": 0x0007}, 0x0002, "rrc 0x0007"),
        ({"uv_rc": 0x0999}, 0x0999, "unexpected return code"),
    ],
)
def test_ultravisor_return_codes(tmp_path: Path, options: dict[str, object], code: int, match: str) -> None:
    attester, _ = _attester(tmp_path, **options)
    with pytest.raises(TeeFirmwareError, match=match) as caught:
        attester.evidence(_request(b"\x01" * 64))
    assert caught.value.code == code
    assert str(tmp_path / "uv") in str(caught.value)


def test_measurement_buffer_too_small_is_the_uv_s_answer(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path)
    with pytest.raises(TeeFirmwareError, match="measurement buffer too small") as caught:
        attester.evidence(_request(b"\x01" * 64, measurement_size=32))
    assert caught.value.code == 0x010D


def test_overlong_additional_data_answer_is_refused(tmp_path: Path) -> None:
    attester, _ = _attester(tmp_path, reported_additional=4096)
    with pytest.raises(TeeReportError, match="4096 bytes of additional data, more than the 32-byte buffer"):
        attester.evidence(_request(b"\x01" * 64))


def test_factory_uses_the_built_in_driver(tmp_path: Path) -> None:
    probes = dataclasses.replace(probe_tree(tmp_path, {Tee.SE}), uv_device=tmp_path / "uv")
    (tmp_path / "uv").write_bytes(b"")
    attester = select_attester(False, probes)
    assert attester.tee is Tee.SE
    # The real fcntl.ioctl on a regular file: ENOTTY, named with the device path.
    with pytest.raises(TeeDeviceError, match=r"UVIO_IOCTL_ATT on .*uv failed: Inappropriate ioctl"):
        attester.evidence(_request(b"\x01" * 64))
    missing = build_attester(Tee.SE, dataclasses.replace(probes, uv_device=tmp_path / "absent"))
    with pytest.raises(TeeDeviceError, match=r"cannot open TEE device .*absent"):
        missing.evidence(_request(b"\x01" * 64))
