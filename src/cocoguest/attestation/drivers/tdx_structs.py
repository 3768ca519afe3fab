"""Intel TDX binary structures: the TDREPORT (1024 bytes) and TD quotes v4/v5 (Intel TDX DCAP quote layout).

Only the fields cocoguest needs are exposed (report data, MRTD, MRCONFIGID, RTMRs); parsing checks sizes and the
TEE type, nothing is trusted beyond shape (the quote's signature is the verifier's business).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import TeeReportError

TDREPORT_SIZE: Final = 1024
TDX_TEE_TYPE: Final = 0x81
_TDINFO_OFFSET: Final = 512
_TD_REPORT_BODY_V10: Final = 584
_TD_REPORT_BODY_V15: Final = 648
_QUOTE_HEADER: Final = 48


@dataclass(frozen=True, slots=True)
class TdMeasurements:
    """Measurements of a TD, as found in a TDREPORT or a quote body."""

    report_data: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]


def _rtmrs(data: bytes, at: int) -> tuple[bytes, bytes, bytes, bytes]:
    return (data[at : at + 48], data[at + 48 : at + 96], data[at + 96 : at + 144], data[at + 144 : at + 192])


def parse_td_report(untrusted: bytes) -> TdMeasurements:
    """Fields of a TDREPORT_STRUCT (REPORTMACSTRUCT 256 B, TEE_TCB_INFO 256 B, TDINFO 512 B).

    Raises:
        TeeReportError: wrong size or not a TDX report type.
    """
    if len(untrusted) != TDREPORT_SIZE:
        msg = f"TDREPORT of {len(untrusted)} bytes (expected {TDREPORT_SIZE})"
        raise TeeReportError(msg)
    if untrusted[0] != TDX_TEE_TYPE:
        msg = f"TDREPORT type 0x{untrusted[0]:02x} is not TDX (0x{TDX_TEE_TYPE:02x})"
        raise TeeReportError(msg)
    info = _TDINFO_OFFSET
    return TdMeasurements(
        report_data=untrusted[128:192],
        mrtd=untrusted[info + 16 : info + 64],
        mrconfigid=untrusted[info + 64 : info + 112],
        mrowner=untrusted[info + 112 : info + 160],
        mrownerconfig=untrusted[info + 160 : info + 208],
        rtmrs=_rtmrs(untrusted, info + 208),
    )


def parse_td_quote(untrusted: bytes) -> TdMeasurements:
    """Fields of the TD report body of a quote (version 4, or version 5 with body type 2 or 3).

    Raises:
        TeeReportError: truncated, an unknown version or body type, or not a TDX quote.
    """
    if len(untrusted) < _QUOTE_HEADER + 6:
        msg = f"TD quote of {len(untrusted)} bytes is too short"
        raise TeeReportError(msg)
    version, _key_type, tee_type = struct.unpack_from("<HHI", untrusted, 0)
    if tee_type != TDX_TEE_TYPE:
        msg = f"quote TEE type 0x{tee_type:x} is not TDX (0x{TDX_TEE_TYPE:x})"
        raise TeeReportError(msg)
    if version == 4:
        body_at, body_size = _QUOTE_HEADER, _TD_REPORT_BODY_V10
    elif version == 5:
        body_type, body_size = struct.unpack_from("<HI", untrusted, _QUOTE_HEADER)
        if (body_type, body_size) not in ((2, _TD_REPORT_BODY_V10), (3, _TD_REPORT_BODY_V15)):
            msg = f"TD quote v5 with body type {body_type} of {body_size} bytes is not a TD report"
            raise TeeReportError(msg)
        body_at = _QUOTE_HEADER + 6
    else:
        msg = f"TD quote version {version} is not supported (4 or 5)"
        raise TeeReportError(msg)
    if len(untrusted) < body_at + body_size:
        msg = f"TD quote of {len(untrusted)} bytes is truncated inside its report body"
        raise TeeReportError(msg)
    body = untrusted[body_at : body_at + body_size]
    # TDREPORT10 body: TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48, SEAMATTRIBUTES 8, TDATTRIBUTES 8, XFAM 8, MRTD 48,
    # MRCONFIGID 48, MROWNER 48, MROWNERCONFIG 48, RTMR0-3 4x48, REPORTDATA 64.
    return TdMeasurements(
        report_data=body[520:584],
        mrtd=body[136:184],
        mrconfigid=body[184:232],
        mrowner=body[232:280],
        mrownerconfig=body[280:328],
        rtmrs=_rtmrs(body, 328),
    )
