"""Hygon CSV binary structures: the GET_REPORT request, the 4096-byte attestation report, the CSV certificate.

Layouts (little-endian, as the Hygon guest kernel's ``csv-guest.h`` and the ``csv-rs`` crate define them):

* Request, at the start of the caller's report buffer: ``user_data[64] mnonce[16] hash[32]`` with
  ``hash = SM3(user_data || mnonce)``; the extended (CSV3, RTMR-capable) request adds
  ``magic[16] = "ATTESTATION_EXT\\0"`` and ``flags u32 = 1`` (132 bytes).
* Report: TEE info (legacy 0x150 bytes; extended 0x490, which adds ``build``, ``rtmr_version`` and RTMR0-4),
  then the signer: ``pek_cert[2084] sn[64] reserved[32] mac[32]``, zero-padded to 4096 bytes. TEE info:
  ``user_pubkey_digest[32] vm_id[16] vm_version[16] report_data[64] mnonce[16] measure[32] policy u32
  sig_usage u32 sig_algo u32 anonce u32`` (extended: ``build u32`` instead of ``anonce``) ...
* In a legacy report every TEE-info field but ``anonce`` and the signature, and the PEK and serial number,
  are XOR-masked with the firmware's ``anonce`` (little-endian, repeated); an extended report has no mask.
* ``mac = HMAC-SM3(key = mnonce, pek_cert || sn || reserved)`` (over the masked bytes).

Invariants:
    * SECURITY: :func:`parse_csv_report` accepts a report only if it carries the caller's ``mnonce`` and its
      signer MAC verifies under that ``mnonce``: a replayed report or one whose signer block was altered on the
      way is refused. (The report's SM2 signature is the verifier's business.)
    * Parsing checks sizes; nothing beyond shape and the MAC is trusted.
    * Pure: no IO.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final

from cocoguest.attestation.attester import JsonObject
from cocoguest.errors import TeeReportError

REPORT_BUFFER_SIZE: Final = 4096
"""The caller's report buffer (a page; upstream's ``AttestationReportV1/V2`` are padded to it)."""
USER_DATA_SIZE: Final = 64
MNONCE_SIZE: Final = 16
HASH_SIZE: Final = 32
EXT_MAGIC: Final = b"ATTESTATION_EXT\0"
EXT_FLAG_REPORT_V2: Final = 1
LEGACY_MAGIC: Final = bytes(16)
TEE_INFO_LEGACY_SIZE: Final = 0x150
TEE_INFO_EXTENDED_SIZE: Final = 0x490
PEK_CERT_SIZE: Final = 2084
SERIAL_NUMBER_SIZE: Final = 64
_SIGNER_RESERVED_SIZE: Final = 32
_MAC_SIZE: Final = 32
_REPORT_DATA_AT: Final = 64
_MNONCE_AT: Final = 128
_ANONCE_AT: Final = 188
_CERT_BODY_SIZE: Final = 1044
_CERT_SIGNATURE_SIZE: Final = 520


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def _unmask(data: bytes, anonce: int) -> bytes:
    key = struct.pack("<I", anonce)
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def report_request(report_data: bytes, mnonce: bytes, *, extended: bool) -> bytes:
    """The GET_REPORT request for 64-byte ``report_data`` and 16-byte ``mnonce`` (see the module docstring)."""
    if len(report_data) != USER_DATA_SIZE or len(mnonce) != MNONCE_SIZE:
        msg = "CSV report request needs 64 bytes of report data and a 16-byte mnonce"
        raise ValueError(msg)
    request = report_data + mnonce + _sm3(report_data + mnonce)
    if extended:
        request += EXT_MAGIC + struct.pack("<I", EXT_FLAG_REPORT_V2)
    return request


@dataclass(frozen=True, slots=True)
class CsvReportFields:
    """A checked CSV report: what the attester needs, with masks removed."""

    extended: bool
    report_data: bytes
    """The 64-byte report data (unmasked)."""
    serial_number: bytes
    """The chip serial number field (64 bytes, unmasked; ASCII, NUL-padded)."""
    pek_cert: bytes
    """The PEK certificate (2084 bytes, unmasked)."""
    report: bytes
    """The 4096 report bytes with the signer restored as upstream's ``csv-rs`` leaves them after its MAC check
    (PEK and serial number unmasked, reserved zeroed): the ``data`` of the evidence's ``attestation_report``."""


def parse_csv_report(untrusted: bytes, mnonce: bytes, *, extended: bool) -> CsvReportFields:
    """Check and unmask a report the PSP wrote for a request with ``mnonce``.

    Raises:
        TeeReportError: wrong size, not our mnonce, or the signer MAC does not verify.
    """
    if len(untrusted) != REPORT_BUFFER_SIZE:
        msg = f"CSV report of {len(untrusted)} bytes (expected {REPORT_BUFFER_SIZE})"
        raise TeeReportError(msg)
    signer_at = TEE_INFO_EXTENDED_SIZE if extended else TEE_INFO_LEGACY_SIZE
    anonce = 0 if extended else struct.unpack_from("<I", untrusted, _ANONCE_AT)[0]
    # SECURITY: the report must answer this request (mnonce), or it may be a replay of an older one.
    echoed = _unmask(untrusted[_MNONCE_AT : _MNONCE_AT + MNONCE_SIZE], anonce)
    if not hmac.compare_digest(echoed, mnonce):
        msg = "CSV report does not carry the mnonce of this request (a stale or foreign report)"
        raise TeeReportError(msg)
    sn_at = signer_at + PEK_CERT_SIZE
    reserved_at = sn_at + SERIAL_NUMBER_SIZE
    mac_at = reserved_at + _SIGNER_RESERVED_SIZE
    # SECURITY: the PSP MACs the signer block with our mnonce; a changed PEK or serial number fails here.
    expected_mac = hmac.new(mnonce, untrusted[signer_at:mac_at], "sm3").digest()
    if not hmac.compare_digest(expected_mac, untrusted[mac_at : mac_at + _MAC_SIZE]):
        msg = "CSV report signer MAC (HMAC-SM3 under our mnonce) does not verify"
        raise TeeReportError(msg)
    pek_cert = _unmask(untrusted[signer_at:sn_at], anonce)
    serial_number = _unmask(untrusted[sn_at:reserved_at], anonce)
    restored = untrusted[:signer_at] + pek_cert + serial_number + bytes(_SIGNER_RESERVED_SIZE) + untrusted[mac_at:]
    return CsvReportFields(
        extended=extended,
        report_data=_unmask(untrusted[_REPORT_DATA_AT : _REPORT_DATA_AT + USER_DATA_SIZE], anonce),
        serial_number=serial_number,
        pek_cert=pek_cert,
        report=restored,
    )


def attestation_report_json(fields: CsvReportFields) -> JsonObject:
    """``csv-rs`` ``AttestationReportWrapper`` as serde JSON: ``{"magic": [16], "flags": n, "data": [4096]}``."""
    magic, flags = (EXT_MAGIC, EXT_FLAG_REPORT_V2) if fields.extended else (LEGACY_MAGIC, 0)
    return {"magic": list(magic), "flags": flags, "data": list(fields.report)}


def _signature_json(raw: bytes) -> JsonObject:
    usage, algo = struct.unpack_from("<II", raw, 0)
    return {
        "usage": usage,
        "algo": algo,
        "signature": {"r": list(raw[8:80]), "s": list(raw[80:152])},
        "_reserved": list(raw[152:520]),
    }


def csv_certificate_json(untrusted: bytes) -> JsonObject:
    """A 2084-byte CSV certificate as ``csv-rs`` ``certs::csv::Certificate`` serde JSON (byte arrays as lists).

    Body (1044 bytes): ``ver u32``, ``firmware {major u8, minor u8}``, ``reserved1 u16``, ``pubkey {usage u32,
    algo u32, key {g u32, x[72], y[72]}}``, ``uid_size u16``, ``user_id[254]``, ``sid[16]``, ``reserved2[608]``;
    then two signatures of 520 bytes: ``usage u32, algo u32, signature {r[72], s[72]}, _reserved[368]``.

    Raises:
        TeeReportError: not 2084 bytes.
    """
    if len(untrusted) != PEK_CERT_SIZE:
        msg = f"CSV certificate of {len(untrusted)} bytes (expected {PEK_CERT_SIZE})"
        raise TeeReportError(msg)
    ver, major, minor, reserved1 = struct.unpack_from("<IBBH", untrusted, 0)
    usage, algo, group = struct.unpack_from("<III", untrusted, 8)
    (uid_size,) = struct.unpack_from("<H", untrusted, 164)
    data: JsonObject = {
        "firmware": {"major": major, "minor": minor},
        "reserved1": reserved1,
        "pubkey": {
            "usage": usage,
            "algo": algo,
            "key": {"g": group, "x": list(untrusted[20:92]), "y": list(untrusted[92:164])},
        },
        "uid_size": uid_size,
        "user_id": list(untrusted[166:420]),
        "sid": list(untrusted[420:436]),
        "reserved2": list(untrusted[436:_CERT_BODY_SIZE]),
    }
    first = _CERT_BODY_SIZE
    second = first + _CERT_SIGNATURE_SIZE
    return {
        "body": {"ver": ver, "data": data},
        "sigs": [
            _signature_json(untrusted[first:second]),
            _signature_json(untrusted[second : second + _CERT_SIGNATURE_SIZE]),
        ],
    }
