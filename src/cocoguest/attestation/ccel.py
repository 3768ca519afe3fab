"""The event log sent with TDX and CSV evidence: CCEL (ACPI) + AAEL (guest-components.md §6.5, "Reading").

Layout of the ``cc_eventlog`` evidence field (base64 standard):
    * the ACPI CCEL log area, trimmed after its last event (the unused area starts with an 8-byte all-0xFF or
      all-zero word), when ``/sys/firmware/acpi/tables/data/CCEL`` exists;
    * then the AAEL file, preceded by :data:`SPEC_ID_HEADER` when there was no CCEL (so a verifier can parse it);
    * then the 8-byte all-0xFF end flag.
    No CCEL and no AAEL: ``None`` (JSON ``null``).

Invariants:
    * CCEL trimming walks the TCG crypto-agile entries with bounds checks; a log without an end word, with an
      unknown digest algorithm, or with an entry past the end is a :class:`TeeReportError`.
    * Both files are read with caps (``Limits.max_ccel_bytes``, ``Limits.max_eventlog_bytes``).
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Final

from cocoguest.attestation.attester import HashAlgorithm
from cocoguest.attestation.devfs import read_capped
from cocoguest.errors import TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_CCEL_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")
DEFAULT_AAEL_PATH: Final = Path("/run/attestation-agent/eventlog")

EV_NO_ACTION: Final = 0x3
END_FLAG: Final = b"\xff" * 8

_HEADER_ALGORITHMS: Final = (HashAlgorithm.SHA256, HashAlgorithm.SHA384, HashAlgorithm.SM3)
"""Digest sizes declared by the header: every hash an AAEL entry can carry (Azure vTPM, TDX, CSV)."""


def _spec_id_header() -> bytes:
    """A TCG_PCR_EVENT (EV_NO_ACTION) whose TCG_EfiSpecIDEvent declares :data:`_HEADER_ALGORITHMS`.

    As upstream's ``EL_HEADER``: PCR 0, SHA-1 digest and the signature/platform/version fields all zero, then the
    algorithm table and an empty vendor-info. (The spec's "69 bytes" is the two-algorithm variant; the current
    upstream header declares three algorithms, 73 bytes.)
    """
    table = b"".join(struct.pack("<HH", a.tcg_alg_id, a.digest_size) for a in _HEADER_ALGORITHMS)
    event = bytes(24) + struct.pack("<I", len(_HEADER_ALGORITHMS)) + table + b"\0"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(event)) + event


SPEC_ID_HEADER: Final = _spec_id_header()

_DIGEST_SIZES: Final = {a.tcg_alg_id: a.digest_size for a in HashAlgorithm}


def trim_ccel(untrusted_ccel: bytes) -> bytes:
    """The CCEL log area cut after its last event.

    Raises:
        TeeReportError: truncated entries, an unknown digest algorithm, or no end word.
    """
    data = untrusted_ccel
    index = 4  # PCR index of the first (TCG_PCR_EVENT) entry

    def u32(at: int, what: str) -> int:
        if at + 4 > len(data):
            msg = f"CCEL event log truncated reading {what} at offset {at}"
            raise TeeReportError(msg)
        value: int = struct.unpack_from("<I", data, at)[0]
        return value

    event_type = u32(index, "the first event type")
    index += 4 + 20
    if event_type == EV_NO_ACTION:
        index += 4 + u32(index, "the spec-ID event size")
    while True:
        if index + 8 > len(data):
            msg = f"CCEL event log has no end marker (ran out at offset {index})"
            raise TeeReportError(msg)
        word = data[index : index + 8]
        if word in (END_FLAG, bytes(8)):
            return data[:index]
        index += 8  # target MR, event type
        digest_count = u32(index, "the digest count")
        index += 4
        for _ in range(digest_count):
            if index + 2 > len(data):
                msg = f"CCEL event log truncated reading a digest algorithm at offset {index}"
                raise TeeReportError(msg)
            alg_id: int = struct.unpack_from("<H", data, index)[0]
            size = _DIGEST_SIZES.get(alg_id)
            if size is None:
                msg = f"CCEL event log: unsupported digest algorithm 0x{alg_id:04x} at offset {index}"
                raise TeeReportError(msg)
            index += 2 + size
        index += 4 + u32(index, "an event size")


def read_cc_eventlog(
    ccel_path: Path = DEFAULT_CCEL_PATH, aael_path: Path = DEFAULT_AAEL_PATH, *, limits: Limits = DEFAULT_LIMITS
) -> str | None:
    """The ``cc_eventlog`` evidence field, or ``None`` when neither log exists.

    Raises:
        TeeDeviceError: a log exists but cannot be read.
        TeeReportError: a log is too large, or the CCEL is malformed.
    """
    log = b""
    if ccel_path.exists():
        log = trim_ccel(read_capped(ccel_path, limits.max_ccel_bytes, "CCEL table"))
    if aael_path.exists():
        if not log:
            log = SPEC_ID_HEADER
        log += read_capped(aael_path, limits.max_eventlog_bytes, "AA event log")
    if not log:
        return None
    return base64.b64encode(log + END_FLAG).decode("ascii")
