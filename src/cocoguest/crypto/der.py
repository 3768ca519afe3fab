"""A minimal DER TLV reader and writer, enough to build and walk CMS structures (ocicrypt.md §5.2).

Only single-octet identifiers (tag numbers 0-30) and definite lengths are supported; that covers every
structure of CMS EnvelopedData and X.509 that cocoguest walks.

Invariants:
    * The reader never reads outside its input: every length must fit within the bytes that enclose it,
      and a value that does not is a :class:`ProtocolError`, as is any other malformed encoding
      (indefinite length, high tag number, more than ``Limits.max_der_length_octets`` length octets,
      nesting deeper than ``Limits.max_der_depth``, trailing bytes after the outermost TLV).
    * The limits given to :func:`decode` travel with every :class:`Tlv` it returns, so walking a structure
      lazily (:meth:`Tlv.children`) obeys the caller's limits too.
    * :class:`Tlv` objects are views (offsets into one immutable ``bytes``); walking a structure copies
      nothing until :attr:`Tlv.contents` or :attr:`Tlv.encoded` is asked for.
    * The writer emits minimal definite lengths (DER); ``SET OF`` elements are sorted (X.690 §11.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits

# Universal tags (identifier octets, constructed bit included where DER requires it).
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
OID: Final = 0x06
SEQUENCE: Final = 0x30
SET: Final = 0x31

CONSTRUCTED: Final = 0x20
_CONTEXT: Final = 0x80
_HIGH_TAG: Final = 0x1F


def context_tag(number: int, *, constructed: bool) -> int:
    """The identifier octet of a context-specific tag ``[number]``."""
    if not 0 <= number < _HIGH_TAG:
        msg = f"context tag number {number} needs the high-tag-number form"
        raise ValueError(msg)
    return _CONTEXT | (CONSTRUCTED if constructed else 0) | number


# ---------------------------------------------------------------------------------------------- writer


def encode_length(length: int) -> bytes:
    """A minimal definite length: short form below 128, long form otherwise."""
    if length < 0:
        msg = f"negative length {length}"
        raise ValueError(msg)
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def encode(tag: int, contents: bytes) -> bytes:
    """One TLV with identifier octet ``tag``."""
    if not 0 <= tag <= 0xFF or tag & _HIGH_TAG == _HIGH_TAG:
        msg = f"tag {tag:#x} is not a single-octet low tag number"
        raise ValueError(msg)
    return bytes([tag]) + encode_length(len(contents)) + contents


def sequence(*elements: bytes) -> bytes:
    """``SEQUENCE { elements }`` from already encoded elements."""
    return encode(SEQUENCE, b"".join(elements))


def set_of(*elements: bytes) -> bytes:
    """``SET OF { elements }``, sorted as DER requires."""
    return encode(SET, b"".join(sorted(elements)))


def integer(value: int) -> bytes:
    """``INTEGER`` in minimal two's complement."""
    size = value.bit_length() // 8 + 1  # room for the sign bit
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    """``OCTET STRING``."""
    return encode(OCTET_STRING, value)


def oid(dotted: str) -> bytes:
    """``OBJECT IDENTIFIER`` from dotted form, e.g. ``"1.2.840.113549.1.7.3"``."""
    return encode(OID, encode_oid_contents(dotted))


def encode_oid_contents(dotted: str) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER."""
    arcs = [int(part) for part in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        msg = f"invalid object identifier {dotted!r}"
        raise ValueError(msg)
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        septets = max(1, (arc.bit_length() + 6) // 7)
        out += bytes(((arc >> (7 * i)) & 0x7F) | (0x80 if i else 0) for i in reversed(range(septets)))
    return bytes(out)


# ---------------------------------------------------------------------------------------------- reader


@dataclass(frozen=True, slots=True)
class Tlv:
    """One decoded TLV: a view of ``buf[start:end]`` whose contents start at ``content_start``."""

    tag: int
    buf: bytes
    start: int
    content_start: int
    end: int
    depth: int
    limits: Limits
    """The caps of the :func:`decode` call this view came from (``max_der_depth``, ``max_der_length_octets``)."""

    @property
    def constructed(self) -> bool:
        """True if the identifier octet has the constructed bit."""
        return bool(self.tag & CONSTRUCTED)

    @property
    def contents(self) -> bytes:
        """The contents octets."""
        return self.buf[self.content_start : self.end]

    @property
    def encoded(self) -> bytes:
        """The whole TLV, identifier and length included (e.g. a certificate's raw issuer Name)."""
        return self.buf[self.start : self.end]

    def children(self) -> list[Tlv]:
        """Decode the contents as a series of TLVs, whatever the constructed bit says.

        Raises:
            ProtocolError: the contents are not a well-formed series of TLVs, or nest too deeply.
        """
        return _decode_series(self.buf, self.content_start, self.end, self.depth + 1, self.limits)

    def expect(self, tag: int, what: str) -> Tlv:
        """Return ``self`` if its identifier octet is ``tag``.

        Raises:
            ProtocolError: it is not (names ``what``).
        """
        if self.tag != tag:
            msg = f"DER: {what}: expected tag {tag:#04x}, got {self.tag:#04x}"
            raise ProtocolError(msg)
        return self

    def as_int(self) -> int:
        """The value of an INTEGER (or any two's complement integer contents).

        Raises:
            ProtocolError: the contents are empty.
        """
        if self.end == self.content_start:
            msg = "DER: empty INTEGER"
            raise ProtocolError(msg)
        return int.from_bytes(self.contents, "big", signed=True)

    def as_oid(self) -> str:
        """The dotted form of an OBJECT IDENTIFIER's contents.

        Raises:
            ProtocolError: the contents are not a valid OID encoding.
        """
        contents = self.contents
        if not contents or contents[-1] & 0x80:
            msg = "DER: truncated OBJECT IDENTIFIER"
            raise ProtocolError(msg)
        values: list[int] = []
        value = 0
        fresh = True
        for octet in contents:
            if fresh and octet == 0x80:
                msg = "DER: non-minimal OBJECT IDENTIFIER arc"
                raise ProtocolError(msg)
            value = (value << 7) | (octet & 0x7F)
            fresh = not octet & 0x80
            if fresh:
                values.append(value)
                value = 0
        first = values[0]
        head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
        return ".".join(str(arc) for arc in [*head, *values[1:]])


def _read_tlv(buf: bytes, pos: int, end: int, depth: int, limits: Limits) -> Tlv:
    # SECURITY: every index below is checked against ``end``, the end of the enclosing value. Nothing in
    # CMS or X.509 nests deeper than about 10 levels, and a 4-octet length exceeds any annotation.
    if depth > limits.max_der_depth:
        msg = f"DER: nesting deeper than {limits.max_der_depth} levels (max_der_depth)"
        raise ProtocolError(msg)
    if end - pos < 2:
        msg = f"DER: truncated TLV at offset {pos}"
        raise ProtocolError(msg)
    start = pos
    tag = buf[pos]
    if tag & _HIGH_TAG == _HIGH_TAG:
        msg = f"DER: high tag number form at offset {pos} is not supported"
        raise ProtocolError(msg)
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        msg = f"DER: indefinite length at offset {pos - 1}"
        raise ProtocolError(msg)
    else:
        count = first & 0x7F
        if count > limits.max_der_length_octets or count > end - pos:
            msg = f"DER: bad long-form length at offset {pos - 1}"
            raise ProtocolError(msg)
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if length > end - pos:
        msg = f"DER: length {length} at offset {pos} runs past the end of its container"
        raise ProtocolError(msg)
    return Tlv(tag, buf, start, pos, pos + length, depth, limits)


def _decode_series(buf: bytes, pos: int, end: int, depth: int, limits: Limits) -> list[Tlv]:
    items: list[Tlv] = []
    while pos < end:
        item = _read_tlv(buf, pos, end, depth, limits)
        items.append(item)
        pos = item.end
    return items


def decode(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Tlv:
    """Decode exactly one TLV spanning all of ``data``, and later its children, within ``limits``.

    Raises:
        ProtocolError: the bytes are not one well-formed TLV (trailing bytes included).
    """
    data = bytes(data)
    tlv = _read_tlv(data, 0, len(data), 0, limits)
    if tlv.end != len(data):
        msg = f"DER: {len(data) - tlv.end} trailing bytes after the outermost value"
        raise ProtocolError(msg)
    return tlv
