"""RCAR for IBM SE end to end: the KBS client with the real SE attester against the test KBS's SE mode.

The guest side is production code down to the ioctl: ``KbsClient`` → ``RcarHandshake`` (digest injection) →
``AttesterEvidence`` → ``SeAttester`` → ``UvDevice``; only the ioctl is the emulated uvdevice and Ultravisor
(``tests/fixtures/uv_kernel.py``). The KBS side (``tests/fixtures/test_kbs.py``, SE mode) shares no code with
the client: it issues the ``SeAttestationRequest`` nonce with ``selected-hash-algorithm: sha512`` and checks
the evidence's user data against SHA-512 of the JCS runtime data and the measurement HMAC, as Trustee does.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.attestation.agent import AttesterEvidence
from cocoguest.attestation.drivers.se import SeAttester
from cocoguest.attestation.drivers.uvdevice import UvDevice
from cocoguest.errors import AttestationRequestError, KbsDeniedError
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.resource_uri import ResourceUri
from tests.fixtures.test_kbs import SeChallenge, TestKbs, jcs
from tests.fixtures.uv_kernel import FakeUvKernel

ARCB = b"ARCB-for-this-guest" + bytes(range(256))
MEASUREMENT_KEY = b"\x5a" * 64
REQUEST_NONCE = b"\x3c" * 16
TAGS = b"\x11" * 64 + b"\x22" * 64 + b"\x33" * 64 + b"\x44" * 16
ADDITIONAL = b"\x77" * 32
RESOURCE = ResourceUri.parse("kbs:///default/key/se")
SECRET = b"\x42" * 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _se_challenge() -> SeChallenge:
    """The attestation service's request for this guest (encrypted members are opaque to guest and test)."""
    request: dict[str, object] = {
        "request_blob": _b64(ARCB),
        "measurement_size": 64,
        "additional_size": len(ADDITIONAL),
        "encr_measurement_key": _b64(b"\xee" * 80),
        "encr_request_nonce": _b64(b"\xdd" * 32),
        "image_hdr_tags": _b64(TAGS),
    }
    return SeChallenge(request, MEASUREMENT_KEY, REQUEST_NONCE)


class _Recording:
    """An evidence source around the SE attester that records what the client handed it (and may alter it)."""

    def __init__(self, inner: AttesterEvidence, digest_override: bytes | None = None) -> None:
        self.inner = inner
        self.inputs: list[bytes] = []
        self.digest_override = digest_override

    @property
    def tee(self) -> str:
        return self.inner.tee

    def get_evidence(self, report_data: bytes) -> bytes:
        self.inputs.append(report_data)
        if self.digest_override is not None:
            request = json.loads(report_data)
            request["runtime_data_digest"] = _b64(self.digest_override)
            report_data = json.dumps(request).encode()
        return self.inner.get_evidence(report_data)


@pytest.fixture
def kbs() -> Iterator[TestKbs]:
    with TestKbs(resources={"default/key/se": SECRET}, se=_se_challenge()).running() as server:
        yield server


def _guest(tmp_path: Path, digest_override: bytes | None = None) -> tuple[_Recording, FakeUvKernel]:
    device = tmp_path / "uv"
    device.write_bytes(b"")
    kernel = FakeUvKernel(
        device,
        arcb=ARCB,
        measurement_key=MEASUREMENT_KEY,
        nonce=REQUEST_NONCE,
        boot_hdr_tags=TAGS,
        additional=ADDITIONAL,
    )
    attester = SeAttester(UvDevice(device, ioctl=kernel))
    return _Recording(AttesterEvidence(attester), digest_override), kernel


def test_se_guest_completes_rcar_and_gets_a_resource(kbs: TestKbs, tmp_path: Path) -> None:
    evidence, kernel = _guest(tmp_path)
    client = KbsClient(kbs.url, evidence)
    try:
        assert client.get_resource(RESOURCE) == SECRET
    finally:
        client.close()
    assert kbs.auths == kbs.attestations == 1
    # The KBS's runtime data: its JSON nonce verbatim, the client's key; SHA-512 as Trustee uses for se.
    nonce = json.dumps(_se_challenge().request, separators=(",", ":"))
    runtime_data = {"tee-pubkey": client.tee_key.public_jwk(), "nonce": nonce, "additional-evidence": ""}
    digest = hashlib.sha512(jcs(runtime_data)).digest()
    (attester_input,) = evidence.inputs
    assert json.loads(attester_input) == {**_se_challenge().request, "runtime_data_digest": _b64(digest)}
    assert kernel.user_data == [digest]
    assert isinstance(kbs.last_evidence, dict)
    assert base64.b64decode(kbs.last_evidence["user_data"]) == digest


def test_kbs_refuses_evidence_bound_to_other_runtime_data(kbs: TestKbs, tmp_path: Path) -> None:
    # The UV measurement is genuine, but over a digest that is not SHA-512 of the runtime data: refused.
    evidence, kernel = _guest(tmp_path, digest_override=b"\x00" * 64)
    client = KbsClient(kbs.url, evidence)
    try:
        with pytest.raises(KbsDeniedError, match="REPORT_DATA is different"):
            client.get_token()
    finally:
        client.close()
    assert kernel.user_data == [b"\x00" * 64]
    assert kbs.attestations == 0


def test_kbs_refuses_a_measurement_key_the_arcb_did_not_carry(tmp_path: Path) -> None:
    challenge = _se_challenge()
    wrong_key = SeChallenge(challenge.request, b"\x00" * 64, REQUEST_NONCE)
    evidence, _kernel = _guest(tmp_path)
    with TestKbs(se=wrong_key).running() as server:
        client = KbsClient(server.url, evidence)
        try:
            with pytest.raises(KbsDeniedError, match="REPORT_DATA is different"):
                client.get_token()
        finally:
            client.close()


def test_se_request_the_attester_refuses_names_the_member(tmp_path: Path) -> None:
    bad = SeChallenge({**_se_challenge().request, "image_hdr_tags": _b64(b"short")}, MEASUREMENT_KEY, None)
    evidence, kernel = _guest(tmp_path)
    with TestKbs(se=bad).running() as server:
        client = KbsClient(server.url, evidence)
        try:
            with pytest.raises(AttestationRequestError, match="image_hdr_tags of 5 bytes"):
                client.get_token()
        finally:
            client.close()
    assert kernel.calls == 0
