"""AMD SEV-SNP binary structures: the attestation report (1184 bytes) and the certificate table (SNP ABI spec).

Parsing checks shape only; the signature is the verifier's business.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import TeeReportError

REPORT_SIZE: Final = 0x4A0
MIN_REPORT_VERSION: Final = 2
MAX_REPORT_VERSION: Final = 16
"""Newer report versions only claim reserved space; a bound keeps other blobs (a TD quote) from passing."""

CERT_TYPES: Final = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}
_ENTRY: Final = struct.Struct("<16sII")


@dataclass(frozen=True, slots=True)
class SnpReport:
    """The fields of an SNP attestation report that cocoguest reads, plus the raw bytes."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    vmpl: int
    report_data: bytes
    measurement: bytes
    host_data: bytes

    def to_json(self) -> dict[str, object]:
        """The report as a JSON object: SNP ABI field names, byte fields as arrays of numbers (serde style).

        Not verified byte-for-byte against upstream's ``sev`` crate serialisation (the spec does not give it).
        """
        r = self.raw

        def tcb(at: int) -> dict[str, int]:
            return {"bootloader": r[at], "tee": r[at + 1], "snp": r[at + 6], "microcode": r[at + 7]}

        def u32(at: int) -> int:
            value: int = struct.unpack_from("<I", r, at)[0]
            return value

        def u64(at: int) -> int:
            value: int = struct.unpack_from("<Q", r, at)[0]
            return value

        return {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": self.policy,
            "family_id": list(r[0x10:0x20]),
            "image_id": list(r[0x20:0x30]),
            "vmpl": self.vmpl,
            "sig_algo": u32(0x34),
            "current_tcb": tcb(0x38),
            "plat_info": u64(0x40),
            "flags": u32(0x48),
            "report_data": list(self.report_data),
            "measurement": list(self.measurement),
            "host_data": list(self.host_data),
            "id_key_digest": list(r[0xE0:0x110]),
            "author_key_digest": list(r[0x110:0x140]),
            "report_id": list(r[0x140:0x160]),
            "report_id_ma": list(r[0x160:0x180]),
            "reported_tcb": tcb(0x180),
            "chip_id": list(r[0x1A0:0x1E0]),
            "committed_tcb": tcb(0x1E0),
            "current_build": r[0x1E8],
            "current_minor": r[0x1E9],
            "current_major": r[0x1EA],
            "committed_build": r[0x1EC],
            "committed_minor": r[0x1ED],
            "committed_major": r[0x1EE],
            "launch_tcb": tcb(0x1F0),
            "signature": {"r": list(r[0x2A0:0x2E8]), "s": list(r[0x2E8:0x330])},
        }


def parse_snp_report(untrusted: bytes) -> SnpReport:
    """An SNP attestation report.

    Raises:
        TeeReportError: wrong size or an implausible version.
    """
    if len(untrusted) != REPORT_SIZE:
        msg = f"SNP report of {len(untrusted)} bytes (expected {REPORT_SIZE})"
        raise TeeReportError(msg)
    version, guest_svn, policy = struct.unpack_from("<IIQ", untrusted, 0)
    if not MIN_REPORT_VERSION <= version <= MAX_REPORT_VERSION:
        msg = f"SNP report version {version} is outside {MIN_REPORT_VERSION}..{MAX_REPORT_VERSION}"
        raise TeeReportError(msg)
    (vmpl,) = struct.unpack_from("<I", untrusted, 0x30)
    return SnpReport(
        raw=untrusted,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        vmpl=vmpl,
        report_data=untrusted[0x50:0x90],
        measurement=untrusted[0x90:0xC0],
        host_data=untrusted[0xC0:0xE0],
    )


@dataclass(frozen=True, slots=True)
class SnpCertificate:
    """One certificate-table entry."""

    guid: uuid.UUID
    data: bytes

    @property
    def cert_type(self) -> str:
        """``ARK``, ``ASK``, ``VCEK``, ``VLEK``, ``CRL``, or the GUID text for others."""
        return CERT_TYPES.get(self.guid, str(self.guid))


def parse_cert_table(untrusted: bytes, max_entries: int) -> list[SnpCertificate]:
    """The certificate table (GUID, offset, length entries ending in an all-zero entry; offsets from its start).

    Raises:
        TeeReportError: no terminator, too many entries, or an entry pointing outside the table.
    """
    certificates: list[SnpCertificate] = []
    at = 0
    while True:
        if at + _ENTRY.size > len(untrusted):
            msg = "SNP certificate table has no terminating entry"
            raise TeeReportError(msg)
        raw_guid, offset, length = _ENTRY.unpack_from(untrusted, at)
        at += _ENTRY.size
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            return certificates
        if len(certificates) >= max_entries:
            msg = f"SNP certificate table has more than {max_entries} entries"
            raise TeeReportError(msg)
        if offset < at or offset + length > len(untrusted):
            msg = f"SNP certificate table entry {len(certificates)} points outside the table"
            raise TeeReportError(msg)
        certificates.append(SnpCertificate(uuid.UUID(bytes_le=raw_guid), untrusted[offset : offset + length]))
