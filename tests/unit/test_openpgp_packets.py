"""The one OpenPGP packet reader: framing, MPIs, OIDs, subpackets, armor; used by encryption and signatures."""

from __future__ import annotations

import base64

import pytest

from cocoguest.crypto import openpgp, openpgp_packets, openpgp_sign
from cocoguest.crypto.openpgp_packets import (
    MalformedOpenPgpError,
    dearmor,
    read_mpi,
    read_oid,
    read_packet,
    read_packets,
    read_subpackets,
    write_packet,
)


def test_encryption_and_signatures_share_the_packet_reader() -> None:
    shared = {"read_packets", "read_mpi", "write_packet", "first_line", "MalformedOpenPgpError"}
    for module in (openpgp, openpgp_sign):
        for name in shared:
            assert getattr(module, name) is getattr(openpgp_packets, name), f"{module.__name__}.{name}"
    for private in ("_read_packets", "_read_packet", "_read_mpi", "_mpi", "_packet", "_new_format_packet"):
        assert not hasattr(openpgp, private)
        assert not hasattr(openpgp_sign, private)


@pytest.mark.parametrize("size", [0, 1, 191, 192, 8383, 8384, 70_000])
def test_written_packets_read_back(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = write_packet(11, body) + write_packet(2, b"x")
    assert read_packets(data) == [(11, body), (2, b"x")]


def test_old_format_lengths() -> None:
    one = bytes([0x80 | (11 << 2) | 0, 3]) + b"abc"
    two = bytes([0x80 | (2 << 2) | 1, 0, 2]) + b"de"
    indeterminate = bytes([0x80 | (8 << 2) | 3]) + b"rest of it"
    assert read_packets(one + two + indeterminate) == [(11, b"abc"), (2, b"de"), (8, b"rest of it")]


def test_partial_body_chunks_are_joined() -> None:
    data = bytes([0xC0 | 18, 0xE1]) + b"ab" + bytes([0xE0]) + b"c" + bytes([3]) + b"def"
    assert read_packet(data, 0) == (18, b"abcdef", len(data))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00", "no packet header at offset 0"),
        (bytes([0xC0 | 11, 5]) + b"abc", "truncated packet"),
        (bytes([0x80 | (11 << 2) | 2, 0, 0]), "truncated packet"),
        (bytes([0xC0 | 11]), "truncated packet header"),
        (bytes([0xC0 | 11, 0xC5]), "truncated packet header"),
        (bytes([0xC0 | 18, 0xE1]) + b"ab", "truncated packet header"),
    ],
)
def test_malformed_framing(data: bytes, why: str) -> None:
    with pytest.raises(MalformedOpenPgpError, match=why):
        read_packets(data)


def test_mpi_and_oid() -> None:
    assert read_mpi(b"\x00\x09\x01\xff!", 0) == (0x1FF, 4)
    for bad in (b"", b"\x00", b"\x00\x10\x01"):
        with pytest.raises(MalformedOpenPgpError, match="truncated MPI"):
            read_mpi(bad, 0)
    assert read_oid(b"\x03abc-", 0) == (b"abc", 4)
    for bad in (b"", b"\x00", b"\xff", b"\x04abc"):
        with pytest.raises(MalformedOpenPgpError, match="malformed curve OID"):
            read_oid(bad, 0)


def test_subpackets() -> None:
    area = bytes([5, 0x82]) + b"\x00\x00\x00\x01" + bytes([1, 16])
    assert read_subpackets(area) == [(2, True, b"\x00\x00\x00\x01"), (16, False, b"")]
    with pytest.raises(MalformedOpenPgpError, match="malformed signature subpacket"):
        read_subpackets(bytes([9, 2, 0]))
    with pytest.raises(MalformedOpenPgpError, match="truncated subpacket length"):
        read_subpackets(bytes([0xC0]))


def test_dearmor() -> None:
    binary = write_packet(11, b"hello")
    armored = (
        b"-----BEGIN PGP MESSAGE-----\nComment: x\n\n"
        + base64.b64encode(binary)
        + b"\n=abcd\n-----END PGP MESSAGE-----\n"
    )
    assert dearmor(armored) == binary
    assert dearmor(binary) == binary
    with pytest.raises(MalformedOpenPgpError, match="malformed ASCII armor"):
        dearmor(b"-----BEGIN PGP MESSAGE-----\n\n!!!\n-----END PGP MESSAGE-----\n")
