"""TDX quote requests without configfs-tsm, as bytes: the QGS message protocol and the GetQuote buffer (no IO).

Layouts, as Intel's DCAP ``qgs_msg_lib`` (version 1.1) and ``libtdx_attest`` define them (little-endian, packed):

* QGS message header (16 bytes): ``major_version u16`` (1), ``minor_version u16`` (1), ``type u32``
  (``GET_QUOTE_REQ`` 0, ``GET_QUOTE_RESP`` 1), ``size u32`` (the whole message, header included),
  ``error_code u32`` (responses only; 0 is success).
* ``GET_QUOTE_REQ``: header, ``report_size u32`` (1024), ``id_list_size u32`` (0: the default Intel TDQE), the
  TD report.
* ``GET_QUOTE_RESP``: header, ``selected_id_size u32``, ``quote_size u32``, the selected id, the quote. An error
  answer has a non-zero ``error_code`` below ``QGS_MSG_ERROR_MAX`` and both sizes 0.
* On a socket (vsock to the host, CID 2) every message is preceded by its length as a 4-byte **big-endian** u32.
* The ``TDX_CMD_GET_QUOTE`` (TDVMCALL GetQuote) shared buffer: ``version u64`` (1), ``status u64`` (set by the
  VMM: 0 success, ``0xffffffffffffffff`` in flight, ``0x8000000000000000`` error, ``0x8000000000000001`` service
  unavailable), ``in_len u32``, ``out_len u32``, then the length-prefixed message (request in, response out).

Invariants:
    * Decoders take ``untrusted_`` bytes and check every size field against the bytes actually present before
      slicing; a QGS error code becomes a :class:`QuoteServiceError` carrying the code, a malformed answer a
      :class:`TeeReportError`. Nothing here trusts the quote's content (the attester checks its report data).
    * Version checks as ``qgs_msg_lib``: the major version must be 1, a different minor version is accepted.
"""

from __future__ import annotations

import struct
from typing import Final

from cocoguest.errors import ConfigError, QuoteServiceError, TeeReportError

QGS_MSG_MAJOR_VERSION: Final = 1
QGS_MSG_MINOR_VERSION: Final = 1
GET_QUOTE_REQ: Final = 0
GET_QUOTE_RESP: Final = 1
QGS_HEADER: Final = struct.Struct("<HHIII")
"""major_version, minor_version, type, size, error_code."""
QGS_GET_QUOTE_SIZES: Final = struct.Struct("<II")
"""report_size, id_list_size (request) or selected_id_size, quote_size (response)."""
LENGTH_PREFIX: Final = struct.Struct(">I")
GET_QUOTE_HEADER: Final = struct.Struct("<QQII")
"""version, status, in_len, out_len of the GetQuote shared buffer."""
GET_QUOTE_VERSION: Final = 1
GET_QUOTE_OVERHEAD: Final = GET_QUOTE_HEADER.size + LENGTH_PREFIX.size
"""Bytes of a GetQuote buffer before the QGS message (libtdx_attest: ``sizeof(tdx_quote_hdr) + HEADER_SIZE``)."""

_QGS_MSG_ERROR_BASE: Final = 0x00012000
QGS_MSG_ERRORS: Final = {
    _QGS_MSG_ERROR_BASE | 1: "QGS_MSG_ERROR_UNEXPECTED",
    _QGS_MSG_ERROR_BASE | 2: "QGS_MSG_ERROR_OUT_OF_MEMORY",
    _QGS_MSG_ERROR_BASE | 3: "QGS_MSG_ERROR_INVALID_PARAMETER",
    _QGS_MSG_ERROR_BASE | 4: "QGS_MSG_ERROR_INVALID_VERSION",
    _QGS_MSG_ERROR_BASE | 5: "QGS_MSG_ERROR_INVALID_TYPE",
    _QGS_MSG_ERROR_BASE | 6: "QGS_MSG_ERROR_INVALID_SIZE",
    _QGS_MSG_ERROR_BASE | 7: "QGS_MSG_ERROR_INVALID_CODE",
}
QGS_MSG_ERROR_MAX: Final = _QGS_MSG_ERROR_BASE | 8
GET_QUOTE_STATUSES: Final = {
    0xFFFF_FFFF_FFFF_FFFF: "GET_QUOTE_IN_FLIGHT",
    0x8000_0000_0000_0000: "GET_QUOTE_ERROR",
    0x8000_0000_0000_0001: "GET_QUOTE_SERVICE_UNAVAILABLE",
}


def encode_get_quote_request(td_report: bytes) -> bytes:
    """A ``GET_QUOTE_REQ`` message for ``td_report`` with an empty id list (no length prefix)."""
    size = QGS_HEADER.size + QGS_GET_QUOTE_SIZES.size + len(td_report)
    return (
        QGS_HEADER.pack(QGS_MSG_MAJOR_VERSION, QGS_MSG_MINOR_VERSION, GET_QUOTE_REQ, size, 0)
        + QGS_GET_QUOTE_SIZES.pack(len(td_report), 0)
        + td_report
    )


def frame(message: bytes) -> bytes:
    """``message`` preceded by its 4-byte big-endian length (the QGS socket framing)."""
    return LENGTH_PREFIX.pack(len(message)) + message


def frame_length(untrusted_prefix: bytes, max_message: int) -> int:
    """The message length announced by a 4-byte prefix, at most ``max_message``.

    Raises:
        TeeReportError: the announced length is 0 or above ``max_message``.
    """
    length: int = LENGTH_PREFIX.unpack(untrusted_prefix)[0]
    if not 0 < length <= max_message:
        msg = f"TDX QGS announces a {length}-byte answer (allowed: 1 to {max_message})"
        raise TeeReportError(msg)
    return length


def decode_get_quote_response(untrusted: bytes) -> bytes:
    """The quote of a ``GET_QUOTE_RESP`` message (no length prefix), checked as ``qgs_msg_lib`` does.

    Raises:
        QuoteServiceError: the QGS answered with an error code (``.code``).
        TeeReportError: the message is malformed (size, version, type, sizes that do not add up).
    """
    fixed = QGS_HEADER.size + QGS_GET_QUOTE_SIZES.size
    if len(untrusted) < fixed:
        msg = f"TDX QGS answer of {len(untrusted)} bytes is shorter than a GET_QUOTE_RESP ({fixed} bytes)"
        raise TeeReportError(msg)
    major, minor, kind, size, error_code = QGS_HEADER.unpack_from(untrusted, 0)
    id_size, quote_size = QGS_GET_QUOTE_SIZES.unpack_from(untrusted, QGS_HEADER.size)
    if major != QGS_MSG_MAJOR_VERSION:
        msg = f"TDX QGS answer has message version {major}.{minor} (expected {QGS_MSG_MAJOR_VERSION}.x)"
        raise TeeReportError(msg)
    if kind != GET_QUOTE_RESP:
        msg = f"TDX QGS answer is message type {kind}, not GET_QUOTE_RESP ({GET_QUOTE_RESP})"
        raise TeeReportError(msg)
    # SECURITY: the host controls these sizes; they must add up to the bytes received before anything is sliced.
    if size != len(untrusted) or fixed + id_size + quote_size != size:
        msg = (
            f"TDX QGS answer sizes do not add up: header size {size}, selected id {id_size}, quote {quote_size}, "
            f"{len(untrusted)} bytes received"
        )
        raise TeeReportError(msg)
    if error_code != 0:
        if error_code >= QGS_MSG_ERROR_MAX or id_size or quote_size:
            msg = f"TDX QGS answer has an invalid error code 0x{error_code:x} (with a {quote_size}-byte quote)"
            raise TeeReportError(msg)
        name = QGS_MSG_ERRORS.get(error_code, "unknown")
        msg = f"TDX QGS refused the quote request: error 0x{error_code:x} ({name})"
        raise QuoteServiceError(msg, error_code)
    if quote_size == 0:
        msg = "TDX QGS answered success with an empty quote"
        raise TeeReportError(msg)
    return untrusted[fixed + id_size : size]


def encode_get_quote_buffer(td_report: bytes, buffer_size: int) -> bytes:
    """A ``buffer_size``-byte GetQuote shared buffer holding the framed ``GET_QUOTE_REQ`` for ``td_report``.

    Raises:
        ConfigError: ``buffer_size`` (``Limits.tdx_quote_buffer_bytes``) cannot hold the request.
    """
    framed = frame(encode_get_quote_request(td_report))
    if GET_QUOTE_HEADER.size + len(framed) > buffer_size:
        msg = f"Limits.tdx_quote_buffer_bytes ({buffer_size}) cannot hold a {len(framed)}-byte GetQuote request"
        raise ConfigError(msg)
    header = GET_QUOTE_HEADER.pack(GET_QUOTE_VERSION, 0, len(framed), 0)
    return header + framed + bytes(buffer_size - GET_QUOTE_HEADER.size - len(framed))


def decode_get_quote_buffer(untrusted: bytes) -> bytes:
    """The QGS message (no length prefix) the VMM left in a GetQuote buffer, checked as ``libtdx_attest`` does.

    Raises:
        QuoteServiceError: the VMM set a non-zero status (``.code``).
        TeeReportError: ``out_len`` or the length prefix do not match the buffer.
    """
    if len(untrusted) < GET_QUOTE_OVERHEAD:
        msg = f"TDX GetQuote buffer of {len(untrusted)} bytes is shorter than its header"
        raise TeeReportError(msg)
    _version, status, _in_len, out_len = GET_QUOTE_HEADER.unpack_from(untrusted, 0)
    if status != 0:
        name = GET_QUOTE_STATUSES.get(status, "unknown")
        msg = f"TDX GetQuote failed: the VMM set status 0x{status:x} ({name})"
        raise QuoteServiceError(msg, status)
    if not LENGTH_PREFIX.size < out_len <= len(untrusted) - GET_QUOTE_HEADER.size:
        msg = f"TDX GetQuote answer length {out_len} does not fit the {len(untrusted)}-byte buffer"
        raise TeeReportError(msg)
    (length,) = LENGTH_PREFIX.unpack_from(untrusted, GET_QUOTE_HEADER.size)
    if length != out_len - LENGTH_PREFIX.size:
        msg = f"TDX GetQuote answer announces {length} bytes but out_len is {out_len}"
        raise TeeReportError(msg)
    return untrusted[GET_QUOTE_OVERHEAD : GET_QUOTE_OVERHEAD + length]
