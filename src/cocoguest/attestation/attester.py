"""The Attester protocol, TEE names, measurement hashes and report-data shaping (guest-components.md §6).

Invariants:
    * :meth:`Attester.evidence` returns the evidence as a JSON object whose member order is upstream's;
      :func:`encode_evidence` turns it into the compact bytes the AA returns (GetEvidence).
    * Report data is never silently truncated: a TEE with a fixed report-data field zero-pads shorter data and
      refuses longer data with :class:`AttestationRequestError` (only the TPM "resizes", as upstream, and says so).
    * Runtime measurement is an optional capability (:class:`RuntimeMeasurer`), not a method that raises:
      callers test ``isinstance(attester, RuntimeMeasurer)``.
    * :meth:`Attester.bind_init_data` returns :attr:`BindResult.BOUND` only after the TEE's value was checked
      (or extended); a mismatch raises :class:`InitDataMismatchError`, never returns.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from cocoguest.errors import AttestationRequestError

JsonObject = dict[str, object]
"""An evidence document: a JSON object as built by a driver (insertion order = member order on the wire)."""


class Tee(enum.StrEnum):
    """TEE names on the wire (kbs-types ``Tee`` serde names, guest-components.md §6.1)."""

    AZ_SNP_VTPM = "az-snp-vtpm"
    AZ_TDX_VTPM = "az-tdx-vtpm"
    NVIDIA = "nvidia"
    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"
    CCA = "cca"
    CSV = "csv"
    SE = "se"
    HYGON_DCU = "hygondcu"
    TPM = "tpm"
    SAMPLE = "sample"
    SAMPLE_DEVICE = "sampledevice"


class HashAlgorithm(enum.Enum):
    """A measurement hash: hashlib name, TCG algorithm id (event log ``alg_id``) and digest size."""

    SHA256 = ("sha256", 0x0B, 32)
    SHA384 = ("sha384", 0x0C, 48)
    SHA512 = ("sha512", 0x0D, 64)
    SM3 = ("sm3", 0x12, 32)

    def __init__(self, hashlib_name: str, tcg_alg_id: int, digest_size: int) -> None:
        self.hashlib_name = hashlib_name
        self.tcg_alg_id = tcg_alg_id
        self.digest_size = digest_size

    def digest(self, data: bytes) -> bytes:
        """``data`` hashed with this algorithm."""
        return hashlib.new(self.hashlib_name, data).digest()

    @classmethod
    def from_name(cls, name: str) -> HashAlgorithm:
        """The algorithm called ``name`` (``sha256``, ``sha384``, ``sha512``, ``sm3``).

        Raises:
            KeyError: unknown name (callers turn it into their own typed error).
        """
        for algorithm in cls:
            if algorithm.hashlib_name == name:
                return algorithm
        raise KeyError(name)


class BindResult(enum.Enum):
    """Outcome of binding init-data to the TEE (upstream ``InitDataResult``)."""

    BOUND = "bound"
    """The TEE's init-data field equals the digest (TDX, SNP), or the digest was extended into PCR 8 (vTPM)."""
    UNSUPPORTED = "unsupported"
    """This TEE has no place for init-data; nothing was checked."""


class Attester(Protocol):
    """A TEE evidence producer (upstream ``attester::Attester``)."""

    @property
    def tee(self) -> Tee:
        """The TEE name sent to the KBS."""
        ...

    def evidence(self, report_data: bytes) -> JsonObject:
        """Evidence binding ``report_data`` (raw bytes, e.g. a 48-byte SHA-384 digest).

        Raises:
            AttestationRequestError: ``report_data`` does not fit the TEE's report-data field.
            TeeDeviceError: the device failed.
            TeeReportError: the device returned malformed data.
        """
        ...

    def bind_init_data(self, digest: bytes) -> BindResult:
        """Check (TDX, SNP) or extend (vTPM) the init-data ``digest``.

        Raises:
            InitDataMismatchError: the TEE measured a different value.
            AttestationRequestError: ``digest`` is too long for the TEE's field.
            TeeDeviceError: the device failed.
        """
        ...


@runtime_checkable
class RuntimeMeasurer(Protocol):
    """The optional runtime-measurement capability (RTMR, PCR) of an attester."""

    @property
    def measurement_hash(self) -> HashAlgorithm:
        """The hash of the registers and of the event-log digests (upstream ``ccel_hash_algorithm``)."""
        ...

    def register_for_pcr(self, pcr: int) -> int:
        """The CC measurement-register index that PCR ``pcr`` maps to (upstream ``pcr_to_ccmr``)."""
        ...

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        """Extend the register that ``pcr`` maps to with ``event_digest`` (padded/truncated to the register size).

        Raises:
            TeeDeviceError: the register could not be extended.
        """
        ...

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        """The current value of the register ``pcr`` maps to, or ``None`` if this platform cannot read it back.

        Raises:
            TeeDeviceError: the register exists but could not be read.
        """
        ...


def encode_evidence(evidence: Mapping[str, object]) -> bytes:
    """The compact JSON bytes of ``evidence`` in member order, as the AA's GetEvidence returns them."""
    return json.dumps(evidence, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def fit_report_data(report_data: bytes, width: int, tee: Tee) -> bytes:
    """``report_data`` zero-padded to ``width`` bytes.

    Raises:
        AttestationRequestError: ``report_data`` is longer than ``width``.
    """
    # SECURITY: never truncate: a truncated nonce/key digest would bind less than the caller asked for.
    if len(report_data) > width:
        msg = f"{tee}: report data of {len(report_data)} bytes does not fit the {width}-byte report-data field"
        raise AttestationRequestError(msg)
    return report_data.ljust(width, b"\0")


def pad_digest(digest: bytes, width: int, field: str) -> bytes:
    """Init-data ``digest`` zero-padded to the ``width`` bytes of the TEE's ``field``.

    Raises:
        AttestationRequestError: ``digest`` is longer than ``width`` (it could never match).
    """
    if len(digest) > width:
        msg = f"init-data digest of {len(digest)} bytes does not fit {field} ({width} bytes)"
        raise AttestationRequestError(msg)
    return digest.ljust(width, b"\0")


def fit_register(event_digest: bytes, width: int) -> bytes:
    """An event digest zero-padded or truncated to a register of ``width`` bytes (upstream semantics, §6.5)."""
    return event_digest[:width].ljust(width, b"\0")


def additional_evidence(devices: Iterable[Attester], report_data: bytes) -> bytes:
    """GetAdditionalEvidence: compact JSON ``{"<tee>": evidence, ...}``, or empty bytes when there is no device."""
    evidence: JsonObject = {str(device.tee): device.evidence(report_data) for device in devices}
    if not evidence:
        return b""
    return encode_evidence(evidence)
