"""OpenPGP wire format (RFC 4880 §3-§5): packet framing, MPIs, curve OIDs, signature subpackets, ASCII armor.

The one reader (and writer) of OpenPGP packets, shared by :mod:`cocoguest.crypto.openpgp` (encryption) and
:mod:`cocoguest.crypto.openpgp_sign` (signatures). Pure functions over ``bytes``: no keys, no crypto, no IO.

Invariants:
    * Every reader checks each length against the data before slicing; malformed or truncated input raises
      :class:`MalformedOpenPgpError` (never ``IndexError``), whose one-line message says what is wrong.
    * Partial body chunks (new format) are joined; an old-format indeterminate length runs to the end.
    * :func:`write_packet` always writes a new-format header with a definite length (sequoia refuses partial
      chunks under 512 octets, which Go's openpgp writes).
"""

from __future__ import annotations

import base64
from typing import Final

TAG_PKESK: Final = 1
TAG_SIGNATURE: Final = 2
TAG_ONE_PASS: Final = 4
TAG_SECRET_KEY: Final = 5
TAG_PUBLIC_KEY: Final = 6
TAG_SECRET_SUBKEY: Final = 7
TAG_COMPRESSED: Final = 8
TAG_SED: Final = 9
TAG_MARKER: Final = 10
TAG_LITERAL: Final = 11
TAG_TRUST: Final = 12
TAG_USER_ID: Final = 13
TAG_PUBLIC_SUBKEY: Final = 14
TAG_USER_ATTRIBUTE: Final = 17
TAG_SEIPD: Final = 18


class MalformedOpenPgpError(ValueError):
    """The bytes are not well-formed OpenPGP (internal to ``crypto``: callers turn it into a typed error)."""


# --- framing (RFC 4880 §4.2) ----------------------------------------------------------------------------


def read_packet(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """``(tag, body, next_offset)`` of the packet at ``offset``; partial body chunks are joined.

    Raises:
        MalformedOpenPgpError: not a packet header, or truncated.
    """
    try:
        first = data[offset]
        if not first & 0x80:
            msg = f"no packet header at offset {offset}"
            raise MalformedOpenPgpError(msg)
        if not first & 0x40:  # old format
            tag, length_type = (first >> 2) & 0x0F, first & 0x03
            if length_type == 3:  # indeterminate: to the end of the data
                return tag, data[offset + 1 :], len(data)
            start = offset + 1 + (1 << length_type)
            end = start + int.from_bytes(data[offset + 1 : start], "big")
            if start > len(data) or end > len(data):
                raise MalformedOpenPgpError("truncated packet")
            return tag, data[start:end], end
        body = bytearray()
        pos = offset + 1
        while True:
            o1 = data[pos]
            partial = 224 <= o1 < 255
            if partial:  # partial body chunk of 2**n octets
                size, pos = 1 << (o1 & 0x1F), pos + 1
            elif o1 < 192:
                size, pos = o1, pos + 1
            elif o1 < 224:
                size, pos = ((o1 - 192) << 8) + data[pos + 1] + 192, pos + 2
            else:
                size, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            if pos > len(data) or pos + size > len(data):
                raise MalformedOpenPgpError("truncated packet")
            body += data[pos : pos + size]
            pos += size
            if not partial:
                return first & 0x3F, bytes(body), pos
    except IndexError as e:
        raise MalformedOpenPgpError("truncated packet header") from e


def read_packets(data: bytes) -> list[tuple[int, bytes]]:
    """All top-level ``(tag, body)`` pairs of ``data``.

    Raises:
        MalformedOpenPgpError: not a packet sequence, or truncated.
    """
    packets: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        tag, body, offset = read_packet(data, offset)
        packets.append((tag, body))
    return packets


def write_packet(tag: int, body: bytes) -> bytes:
    """One new-format packet with a definite length."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


# --- fields ---------------------------------------------------------------------------------------------


def read_mpi(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, next_pos)`` of the MPI at ``pos``; the bit count only says how many octets follow.

    Raises:
        MalformedOpenPgpError: truncated.
    """
    if pos + 2 > len(data):
        raise MalformedOpenPgpError("truncated MPI")
    size = (int.from_bytes(data[pos : pos + 2], "big") + 7) // 8
    if pos + 2 + size > len(data):
        raise MalformedOpenPgpError("truncated MPI")
    return int.from_bytes(data[pos + 2 : pos + 2 + size], "big"), pos + 2 + size


def read_oid(data: bytes, pos: int) -> tuple[bytes, int]:
    """``(oid, next_pos)`` of the length-prefixed curve OID at ``pos`` (RFC 6637 §9).

    Raises:
        MalformedOpenPgpError: a reserved length (0, 0xFF) or truncated.
    """
    if pos >= len(data) or data[pos] in (0, 0xFF) or pos + 1 + data[pos] > len(data):
        raise MalformedOpenPgpError("malformed curve OID")
    return data[pos + 1 : pos + 1 + data[pos]], pos + 1 + data[pos]


def read_subpackets(area: bytes) -> list[tuple[int, bool, bytes]]:
    """``(type, critical, body)`` of each signature subpacket in a (hashed or unhashed) area (RFC 4880 §5.2.3.1).

    Raises:
        MalformedOpenPgpError: a truncated length or a subpacket running past the area.
    """
    out: list[tuple[int, bool, bytes]] = []
    pos = 0
    while pos < len(area):
        o1 = area[pos]
        if o1 < 192:
            size, pos = o1, pos + 1
        elif o1 < 255:
            if pos + 1 >= len(area):
                raise MalformedOpenPgpError("truncated subpacket length")
            size, pos = ((o1 - 192) << 8) + area[pos + 1] + 192, pos + 2
        else:
            size, pos = int.from_bytes(area[pos + 1 : pos + 5], "big"), pos + 5
        if size < 1 or pos + size > len(area):
            raise MalformedOpenPgpError("malformed signature subpacket")
        kind = area[pos]
        out.append((kind & 0x7F, bool(kind & 0x80), area[pos + 1 : pos + size]))
        pos += size
    return out


# --- ASCII armor (RFC 4880 §6) --------------------------------------------------------------------------


def dearmor(data: bytes) -> bytes:
    """The binary form of ASCII-armored OpenPGP data; binary data is returned unchanged.

    Raises:
        MalformedOpenPgpError: armor without a valid base64 body.
    """
    if not data.lstrip().startswith(b"-----BEGIN PGP "):
        return data
    lines = data.decode("ascii", errors="replace").strip().splitlines()
    body: list[str] = []
    in_headers = True
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("-----END PGP "):
            break
        if in_headers:
            if not stripped:
                in_headers = False
            elif ":" not in stripped:  # no headers at all: this is already body
                in_headers = False
                body.append(stripped)
            continue
        if stripped.startswith("=") and len(stripped) == 5:  # CRC-24 line
            continue
        body.append(stripped)
    try:
        return base64.b64decode("".join(body), validate=True)
    except ValueError as e:
        raise MalformedOpenPgpError("malformed ASCII armor") from e


def first_line(error: BaseException) -> str:
    """The first line of an error's text (pysequoia's messages carry a multi-line backtrace)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
