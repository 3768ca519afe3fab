"""Tests of the streaming tar reader (cocoguest.image.fs.tar_stream)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cocoguest.errors import ProtocolError
from cocoguest.image.fs.tar_stream import EntryType, TarEntry, TarStream
from cocoguest.limits import Limits
from tests.fixtures.layers import SPARSE_SIZE, Member, TarBuilder, pax_records, raw_header, sparse_tar

BLOCK = 512


class CountingReader(io.BytesIO):
    """A BytesIO that returns short reads and remembers how far it was read."""

    def __init__(self, data: bytes, max_read: int = 700) -> None:
        super().__init__(data)
        self.max_read = max_read

    def read(self, n: int | None = -1, /) -> bytes:
        if n is None or n < 0 or n > self.max_read:
            n = self.max_read
        return super().read(n)


def entries(data: bytes, *, max_read: int = 700, **kw: object) -> list[tuple[TarEntry, bytes]]:
    tar = TarStream(CountingReader(data, max_read), what="layer test", **kw)  # type: ignore[arg-type]
    out = [(entry, b"".join(tar.data_chunks())) for entry in tar]
    tar.drain()
    return out


def test_every_entry_kind() -> None:
    data = (
        TarBuilder()
        .dir("d", mode=0o1777, uid=1, gid=2, mtime=1700000000)
        .file("d/f", b"hello", mode=0o6755, uid=1000, gid=100, mtime=5)
        .symlink("d/s", "../f")
        .hardlink("d/h", "d/f")
        .fifo("d/p", mode=0o600)
        .char("d/c", 1, 3)
        .block("d/b", 8, 1)
        .build()
    )
    got = entries(data)
    assert [(e.unsafe_name, e.type) for e, _ in got] == [
        ("d", EntryType.DIR),
        ("d/f", EntryType.FILE),
        ("d/s", EntryType.SYMLINK),
        ("d/h", EntryType.HARDLINK),
        ("d/p", EntryType.FIFO),
        ("d/c", EntryType.CHAR),
        ("d/b", EntryType.BLOCK),
    ]
    d, f, s, h, p, c, b = (e for e, _ in got)
    assert (d.mode, d.uid, d.gid, d.mtime_ns) == (0o1777, 1, 2, 1700000000 * 10**9)
    assert (f.mode, f.uid, f.gid, f.size, got[1][1]) == (0o6755, 1000, 100, 5, b"hello")
    assert s.unsafe_linkname == "../f"
    assert h.unsafe_linkname == "d/f"
    assert p.mode == 0o600
    assert (c.devmajor, c.devminor, b.devmajor, b.devminor) == (1, 3, 8, 1)


@pytest.mark.parametrize("long_names", ["pax", "gnu"])
def test_long_names_and_link_names(long_names: str) -> None:
    name = "dir/" + "n" * 200 + "/file"
    target = "/" + "t" * 300
    data = (
        TarBuilder(long_names=long_names)  # type: ignore[arg-type]
        .file(name, b"x")
        .symlink("s" * 150, target)
        .hardlink("h" * 120, name)
        .build()
    )
    got = [e for e, _ in entries(data)]
    assert [e.unsafe_name for e in got] == [name, "s" * 150, "h" * 120]
    assert got[1].unsafe_linkname == target
    assert got[2].unsafe_linkname == name


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_writes(fmt: int) -> None:
    # USTAR uses the prefix field for this name; GNU uses ././@LongLink; PAX a path record.
    name = "p" * 90 + "/" + "q" * 60
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        info.uid = 3_000_000 if fmt != tarfile.USTAR_FORMAT else 7
        tar.addfile(info, io.BytesIO(b"abc"))
    ((entry, content),) = entries(buf.getvalue())
    assert entry.unsafe_name == name
    assert content == b"abc"
    assert entry.uid == (3_000_000 if fmt != tarfile.USTAR_FORMAT else 7)


def test_pax_overrides_and_xattrs() -> None:
    member = Member(
        "short",
        data=b"12345",
        pax={"path": b"from/pax", "uid": b"70000", "gid": b"80000", "mtime": b"1234.5"},
        xattrs={"user.k": b"v\x00\xff", "security.capability": b"\x01\x02"},
    )
    ((entry, content),) = entries(TarBuilder().add(member).build())
    assert entry.unsafe_name == "from/pax"
    assert (entry.uid, entry.gid) == (70000, 80000)
    assert entry.mtime_ns == 1234_500_000_000
    assert dict(entry.untrusted_xattrs) == {"user.k": b"v\x00\xff", "security.capability": b"\x01\x02"}
    assert content == b"12345"


def test_base256_uid() -> None:
    ((entry, _),) = entries(TarBuilder(long_names="gnu").file("f", uid=40_000_000).build())
    assert entry.uid == 40_000_000


def test_uid_minus_one_refused() -> None:
    with pytest.raises(ProtocolError, match="uid 4294967295 out of range"):
        entries(TarBuilder().add(Member("f", pax={"uid": b"4294967295"})).build())


@pytest.mark.parametrize(
    ("eof_blocks", "final_padding"),
    [(2, True), (1, True), (0, True), (0, False)],
    ids=["eof2", "eof1", "none", "nopad"],
)
def test_tolerant_ends(eof_blocks: int, final_padding: bool) -> None:
    data = (
        TarBuilder().file("a", b"first").file("b", b"x" * 700).build(eof_blocks=eof_blocks, final_padding=final_padding)
    )
    got = entries(data)
    assert [(e.unsafe_name, c) for e, c in got] == [("a", b"first"), ("b", b"x" * 700)]
    if not final_padding:
        assert len(data) % 512 != 0


def test_drain_reads_trailing_bytes() -> None:
    trailing = b"\0" * 10000 + b"garbage after the end"
    data = TarBuilder().file("a", b"1").build(trailing=trailing)
    reader = CountingReader(data)
    tar = TarStream(reader, what="layer test")
    assert [e.unsafe_name for e in tar] == ["a"]
    assert tar.drain() == len(trailing)
    assert reader.tell() == len(data)
    assert reader.read() == b""


def test_drain_without_iterating_consumes_everything() -> None:
    data = TarBuilder().file("a", b"1" * 3000).file("b").build(trailing=b"tail")
    reader = CountingReader(data)
    TarStream(reader, what="layer test").drain()
    assert reader.tell() == len(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:700], "truncated entry data"),
        (lambda d: d[:300], "truncated header"),
        (lambda d: d[:148] + b"0000001\0" + d[156:], "checksum mismatch"),
        (lambda d: d + bytes(512) + raw_header(b"late"), "lone zero block"),
    ],
    ids=["data", "header", "checksum", "lone-zero"],
)
def test_malformed_archives(mutate: object, message: str) -> None:
    data = TarBuilder().file("a", b"y" * 1000).build(eof_blocks=0)
    with pytest.raises(ProtocolError, match=message) as info:
        entries(mutate(data))  # type: ignore[operator]
    assert "layer test" in str(info.value)


def test_unsupported_type_refused() -> None:
    with pytest.raises(ProtocolError, match="unsupported entry type"):
        entries(raw_header(b"vol", b"M"))


def test_bad_pax_record() -> None:
    data = raw_header(b"pax", b"x", size=10) + b"99 path=x\n".ljust(512, b"\0")
    with pytest.raises(ProtocolError, match="bad PAX record"):
        entries(data)


def test_chunks_are_bounded() -> None:
    data = TarBuilder().file("big", bytes(range(256)) * 100).build()
    tar = TarStream(io.BytesIO(data), what="layer test", limits=Limits(stream_chunk_bytes=1024))
    next(iter(tar))
    chunks = list(tar.data_chunks())
    assert max(len(c) for c in chunks) <= 1024
    assert b"".join(chunks) == bytes(range(256)) * 100


def test_limits_entry_count_name_and_pax_size() -> None:
    many = TarBuilder()
    for i in range(5):
        many.file(f"f{i}")
    with pytest.raises(ProtocolError, match="more than 4 headers"):
        entries(many.build(), limits=Limits(max_tar_entries=4))
    with pytest.raises(ProtocolError, match="name of 300 bytes exceeds 200"):
        entries(TarBuilder().file("n" * 300).build(), limits=Limits(max_tar_name_bytes=200))
    big = TarBuilder().add(Member("f", pax={"comment": b"c" * 5000})).build()
    with pytest.raises(ProtocolError, match=r"PAX header of \d+ bytes exceeds 4096"):
        entries(big, limits=Limits(max_tar_pax_header_bytes=4096))


@pytest.mark.parametrize(("fmt", "version"), [("gnu", None), ("posix", "0.0"), ("posix", "0.1"), ("posix", "1.0")])
def test_sparse_formats(tmp_path: Path, fmt: str, version: str | None) -> None:
    archive, content = sparse_tar(tmp_path, fmt=fmt, version=version)
    ((entry, stored),) = entries(archive)
    assert entry.unsafe_name == "sparse.bin"
    assert entry.size == SPARSE_SIZE
    assert entry.sparse_map is not None
    rebuilt = bytearray(entry.size)
    pos = 0
    for offset, length in entry.sparse_map:
        rebuilt[offset : offset + length] = stored[pos : pos + length]
        pos += length
    assert pos == len(stored) == entry.stored_size
    assert bytes(rebuilt) == content


def test_sparse_map_overlap_refused() -> None:
    member = Member(
        "GNUSparseFile.0/s",
        data=b"abcd",
        pax={"GNU.sparse.map": b"0,4,2,0", "GNU.sparse.size": b"10", "GNU.sparse.name": b"s"},
    )
    with pytest.raises(ProtocolError, match="sparse map"):
        entries(TarBuilder().add(member).build())


def test_global_pax_header_applies_to_later_entries() -> None:
    records = pax_records({"uid": b"4242"})
    data = raw_header(b"global", b"g", size=len(records)) + records.ljust(512, b"\0") + TarBuilder().file("f").build()
    ((entry, _),) = entries(data)
    assert entry.uid == 4242


# -- header fields: the fast paths must agree with the reference parsing -------------------------------------


def with_field(header: bytes, start: int, value: bytes, *, checksum: bytes | None = None) -> bytes:
    """``header`` with ``value`` at ``start`` and a recomputed unsigned checksum (or ``checksum`` verbatim)."""
    block = bytearray(header[:BLOCK])
    block[start : start + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(block)
    return bytes(block) + header[BLOCK:]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"0000644\0", 0o644),  # ustar: NUL-terminated
        (b"000644 \0", 0o644),  # old tar: space and NUL
        (b"644     ", 0o644),  # space-padded
        (b"   644 \0", 0o644),  # leading spaces
        (b"\x00\x00\x00644\x00", 0o644),  # leading NULs (read as spaces)
        (b"00000644", 0o644),  # no terminator
        (b"\0" * 8, 0),  # empty
        (b"\x80\0\0\0\0\0\x01\xa4", 0o644),  # GNU base-256
    ],
    ids=["nul", "space-nul", "right-pad", "left-pad", "leading-nul", "full", "empty", "base256"],
)
def test_number_field_spellings(field: bytes, expected: int) -> None:
    header = TarBuilder().file("f", b"abc", mode=0o600).build(eof_blocks=0)
    ((entry, content),) = entries(with_field(header, 100, field))
    assert (entry.mode, content) == (expected, b"abc")


@pytest.mark.parametrize("field", [b"0000680\0", b"06\x0044\0\0\0", b"0x644\0\0\0"], ids=["digit8", "inner-nul", "hex"])
def test_bad_octal_refused(field: bytes) -> None:
    header = TarBuilder().file("f", b"abc").build(eof_blocks=0)
    with pytest.raises(ProtocolError, match="bad octal mode field"):
        entries(with_field(header, 100, field))


def test_negative_base256_mtime() -> None:
    header = TarBuilder().file("f").build(eof_blocks=0)
    ((entry, _),) = entries(with_field(header, 136, b"\xff" * 12))
    assert entry.mtime_ns == -1_000_000_000


def high_byte_header() -> bytes:
    """A GNU symlink header whose byte sum (over 100,000) exceeds 65,521, the modulus of Adler-32: high bytes in
    the names, the user and group names and the GNU-only area after the device numbers."""
    header = TarBuilder(long_names="gnu").symlink(b"\xff" * 100, b"\xfe" * 100).build(eof_blocks=0)
    return with_field(with_field(header, 265, b"\xfd" * 64), 345, b"\xfc" * 155)


def test_checksum_of_a_high_byte_header() -> None:
    header = high_byte_header()
    assert sum(header[:148]) + 256 + sum(header[156:BLOCK]) > 65521 + 32768
    ((entry, _),) = entries(header)
    assert entry.type is EntryType.SYMLINK
    assert (os.fsencode(entry.unsafe_name), os.fsencode(entry.unsafe_linkname)) == (b"\xff" * 100, b"\xfe" * 100)


@pytest.mark.parametrize("delta", [1, -1, 65521, -65521, 65536, 512 * 255], ids=str)
def test_checksum_off_by_anything_refused(delta: int) -> None:
    header = high_byte_header()
    stored = int(header[148:154], 8)
    with pytest.raises(ProtocolError, match="checksum mismatch"):
        entries(with_field(header, 0, b"", checksum=b"%07o\0" % (stored + delta)))


def test_signed_checksum_accepted() -> None:
    """Old tars (and Go's reader) accept a checksum that sums the bytes as signed chars."""
    header = high_byte_header()
    block = header[:148] + b" " * 8 + header[156:BLOCK]
    signed = sum(b - 256 if b >= 0x80 else b for b in block)
    ((entry, _),) = entries(with_field(header, 0, b"", checksum=b"%06o\0 " % signed))
    assert entry.type is EntryType.SYMLINK


def test_data_split_across_reads_of_every_size() -> None:
    members = TarBuilder()
    for i in range(12):
        members.file(f"f{i}", bytes([i]) * (i * 97 + 1))
    data = members.build()
    expected = [(f"f{i}", bytes([i]) * (i * 97 + 1)) for i in range(12)]
    for max_read in (1, 3, 511, 512, 513, 4096):
        got = [(e.unsafe_name, content) for e, content in entries(data, max_read=max_read)]
        assert got == expected, max_read


# -- values an OS call takes are range-checked in the parser (issue 7, defect 5) ---------------------------------


@pytest.mark.parametrize("mtime", [2**90, -(2**90), 2**63 // 10**9 + 1], ids=["2^90", "-2^90", "just-over"])
def test_base256_mtime_outside_64_bit_nanoseconds_refused(mtime: int) -> None:
    with pytest.raises(ProtocolError, match="entry 'f': mtime is outside the range") as info:
        entries(TarBuilder().file("f", mtime=mtime).build())
    assert len(str(info.value)) < 200


def test_largest_mtime_in_range_accepted() -> None:
    ((entry, _),) = entries(TarBuilder().file("f", mtime=2**63 // 10**9).build())
    assert entry.mtime_ns == (2**63 // 10**9) * 10**9


@pytest.mark.parametrize("mtime", [b"9" * 19, b"9" * 5000, b"-" + b"9" * 30])
def test_pax_mtime_outside_range_refused(mtime: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"entry 'f': .*mtime") as info:
        entries(TarBuilder().add(Member("f", pax={"mtime": mtime})).build())
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("key", ["uid", "gid", "size", "GNU.sparse.size"])
def test_long_pax_numbers_refused_with_a_short_message(key: str) -> None:
    with pytest.raises(ProtocolError, match=f"PAX {key} value of 4000 characters") as info:
        entries(TarBuilder().add(Member("f", pax={key: b"9" * 4000, "GNU.sparse.map": b""})).build())
    assert len(str(info.value)) < 200


def test_nul_in_xattr_name_refused() -> None:
    data = TarBuilder().add(Member("f", xattrs={"user.a\0b": b"1"})).build()
    with pytest.raises(ProtocolError, match=r"entry 'f': xattr name 'user.a\\x00b' contains a NUL byte"):
        entries(data)


def test_nul_in_xattr_value_kept() -> None:
    ((entry, _),) = entries(TarBuilder().add(Member("f", xattrs={"user.a": b"\0\0"})).build())
    assert entry.untrusted_xattrs == (("user.a", b"\0\0"),)
