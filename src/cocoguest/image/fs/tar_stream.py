"""A streaming, tolerant, bounded reader of untrusted tar archives (layer tars).

The reader parses 512-byte headers itself (ustar, GNU and PAX), so that its tolerance is explicit and tested
rather than inherited: it never creates a file, it only yields :class:`TarEntry` values and the stored data of
the current entry, in chunks.

Invariants:
    * Memory is bounded: an entry's data is handed out in chunks of at most ``limits.stream_chunk_bytes``;
      PAX headers, GNU long names and sparse maps are capped (the ``max_tar_*`` fields of
      :class:`~cocoguest.limits.Limits`), and so is the number of headers.
    * Every header's checksum is verified; numbers are octal or base-256 (GNU); a malformed or truncated
      archive raises :class:`~cocoguest.errors.ProtocolError` naming the layer (``what``) and the entry.
    * Tolerance, as Go's archive/tar (umoci, containerd) has it: an archive may end without end-of-archive
      blocks, after a single zero block, or without the padding of its last member's data. EOF inside a
      header or inside member data is a truncation error.
    * :meth:`TarStream.drain` reads the underlying stream to EOF, so that the caller's digest of the whole
      stream (diff_id) and every end-of-stream check below it fire.
    * Names are returned raw (``unsafe_name``, ``unsafe_linkname``): this module makes no path decision.
    * Values an OS call will take are range-checked here, so that applying an entry never fails with a
      bare ``OverflowError`` or ``ValueError``: ``mtime_ns`` fits a signed 64-bit integer, ``uid``/``gid``
      are below 2**32-1, device numbers below 2**32, and xattr names are non-empty without NUL bytes.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Final, NamedTuple

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, KiB, Limits

BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(BLOCK)
_READ_AHEAD: Final = 64 * KiB
_OCTAL_PAD: Final = b" \0"
"""What terminates (and may pad) a plain octal number field."""
_META_TYPEFLAGS: Final = frozenset({b"x", b"g", b"L", b"K", b"V"})
_MTIME_NS_BOUND: Final = 1 << 63
"""Modification times are kept in nanoseconds as a signed 64-bit value (years 1678 to 2262): the range the
kernel's timestamps and ``os.utime`` accept; the format itself allows far more (base-256 fields)."""
_XATTR_PREFIX: Final = "SCHILY.xattr."
_PAX_NUMBER_CHARS: Final = 20
"""Characters of a PAX decimal number: a sign and the 19 digits of a signed 64-bit value."""


class EntryType(enum.Enum):
    """The kinds of filesystem entries a layer tar can carry."""

    FILE = "file"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    DIR = "dir"
    FIFO = "fifo"


_TYPEFLAGS: Final = {
    b"0": EntryType.FILE,
    b"\0": EntryType.FILE,
    b"7": EntryType.FILE,  # contiguous file: a regular file everywhere that matters
    b"1": EntryType.HARDLINK,
    b"2": EntryType.SYMLINK,
    b"3": EntryType.CHAR,
    b"4": EntryType.BLOCK,
    b"5": EntryType.DIR,
    b"D": EntryType.DIR,  # GNU dumpdir: a directory whose data (a name list) is skipped
    b"6": EntryType.FIFO,
    b"S": EntryType.FILE,  # old GNU sparse file
}


class TarEntry(NamedTuple):
    """One archive member, with PAX/GNU extensions applied. Names are raw archive bytes decoded with
    ``os.fsdecode`` semantics (UTF-8, surrogateescape) and must be sanitized before use.

    Attributes:
        unsafe_name: The member name as stored (may be absolute, contain ``..``, ...).
        type: The entry kind.
        mode: Permission and special bits (``0o7777`` mask).
        uid: Owner uid.
        gid: Owner gid.
        mtime_ns: Modification time in nanoseconds since the epoch.
        size: The file's real (apparent) size for regular files; 0 for other kinds.
        stored_size: Bytes of data stored in the archive for this entry (after any sparse map).
        unsafe_linkname: Symlink target or hardlink target name; empty for other kinds.
        devmajor: Device major number (char/block devices).
        devminor: Device minor number.
        untrusted_xattrs: Extended attributes from PAX ``SCHILY.xattr.*`` records, in archive order.
        sparse_map: ``(offset, length)`` data segments of a sparse file (holes elsewhere), or ``None``.
    """

    unsafe_name: str
    type: EntryType
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    stored_size: int
    unsafe_linkname: str
    devmajor: int
    devminor: int
    untrusted_xattrs: tuple[tuple[str, bytes], ...]
    sparse_map: tuple[tuple[int, int], ...] | None


class _Meta:
    """Extensions collected from meta headers for the next entry (created only when there are some)."""

    __slots__ = ("long_link", "long_name", "pax", "pax_sparse")

    def __init__(self) -> None:
        self.long_name: bytes | None = None
        self.long_link: bytes | None = None
        self.pax: dict[str, bytes] = {}
        self.pax_sparse: list[int] = []


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _header_sum(header: bytes) -> int:
    """The sum of the 512 bytes of ``header``, computed in C.

    The low 16 bits of Adler-32 are ``1 + sum(bytes) mod 65521`` (RFC 1950 section 8.2), and 256 bytes sum to
    at most 65280, so each half's sum is exact. Several times faster than ``sum()`` over the block.
    """
    return (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


class TarStream:
    """Iterate the entries of an uncompressed tar stream; read each entry's data in chunks.

    Usage::

        tar = TarStream(untrusted_stream, what="layer sha256:..")
        for entry in tar:
            for chunk in tar.data_chunks():   # optional; unread data is skipped
                ...
        tar.drain()
    """

    def __init__(
        self,
        untrusted_stream: BinaryIO,
        *,
        what: str,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Wrap ``untrusted_stream`` (read with ``read(n)`` only).

        Args:
            untrusted_stream: The uncompressed archive bytes.
            what: Names the layer in error messages.
            limits: Chunk size and the tar caps (``max_tar_*``).
        """
        self._raw = untrusted_stream
        self._what = what
        self._limits = limits
        self._chunk_bytes = max(BLOCK, limits.stream_chunk_bytes)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._offset = 0  # bytes consumed from the archive so far
        self._remaining = 0  # stored data bytes of the current entry not yet consumed
        self._padding = 0  # padding bytes after the current entry's data
        self._current = ""
        self._headers = 0
        self._ended = False
        self._global_pax: dict[str, bytes] = {}
        # A header's own names are at most 256 bytes (155 prefix + "/" + 100): under a sane cap, unchecked.
        self._header_names_fit = self._limits.max_tar_name_bytes >= 256

    # -- low-level input --------------------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer only at EOF)."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):  # fast path: all buffered
            self._pos = end
            self._offset += n
            return self._buf[pos:end]
        if pos < len(self._buf):
            parts = [self._buf[pos:]]
            need = n - len(parts[0])
        else:
            parts = []
            need = n
        self._buf = b""
        self._pos = 0
        while need > 0 and not self._eof:
            data = self._raw.read(max(need, _READ_AHEAD))
            if not data:
                self._eof = True
                break
            if len(data) > need:
                parts.append(data[:need])
                self._buf = data
                self._pos = need
                need = 0
            else:
                parts.append(data)
                need -= len(data)
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._offset += len(out)
        return out

    def _read_some(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes (``b""`` only at EOF), without joining reads: what is buffered, else one
        read of the underlying stream."""
        pos = self._pos
        buf = self._buf
        if pos < len(buf):
            end = pos + n
            if end < len(buf):
                self._pos = end
            else:
                end = len(buf)
                self._buf = b""
                self._pos = 0
            out = buf[pos:end] if pos or end < len(buf) else buf
        else:
            if self._eof:
                return b""
            data = self._raw.read(max(n, _READ_AHEAD))
            if not data:
                self._eof = True
                return b""
            if len(data) > n:
                self._buf = data
                self._pos = n
                out = data[:n]
            else:
                self._buf = b""
                self._pos = 0
                out = data
        self._offset += len(out)
        return out

    def _error(self, message: str) -> ProtocolError:
        where = f" entry {self._current!r}" if self._current else ""
        return ProtocolError(f"{self._what}: malformed tar at byte {self._offset}{where}: {message}")

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise self._error(f"truncated {what}")
        return data

    def _skip(self, n: int, *, allow_eof: bool) -> None:
        end = self._pos + n
        if end <= len(self._buf):  # fast path: all buffered
            self._pos = end
            self._offset += n
            return
        while n > 0:
            got = len(self._read_some(min(n, self._chunk_bytes)))
            if got == 0:
                if allow_eof:
                    return
                raise self._error("truncated entry data")
            n -= got

    # -- entry data -------------------------------------------------------------------------------------------

    def data_chunks(self) -> Iterator[bytes]:
        """The current entry's remaining stored data, in chunks of at most ``limits.stream_chunk_bytes``.

        Raises:
            ProtocolError: the archive ends inside the data.
        """
        chunk_bytes = self._chunk_bytes
        while self._remaining > 0:
            data = self._read_some(min(self._remaining, chunk_bytes))
            if not data:
                raise self._error("truncated entry data")
            self._remaining -= len(data)
            yield data

    def _finish_entry(self) -> None:
        """Skip the rest of the current entry's data and its padding (EOF in the padding is tolerated)."""
        if self._remaining:
            self._skip(self._remaining, allow_eof=False)
            self._remaining = 0
        if self._padding:
            # Tolerance: Go's tar.Writer writes a member's padding only at the next header or Close, so an
            # archive whose writer was never closed (umoci) ends without it.
            self._skip(self._padding, allow_eof=True)
            self._padding = 0

    def _read_meta_data(self, size: int, kind: str) -> bytes:
        if size > self._limits.max_tar_pax_header_bytes:
            raise self._error(f"{kind} header of {size} bytes exceeds {self._limits.max_tar_pax_header_bytes}")
        data = self._read_exact(size, f"{kind} header")
        self._skip(-size % BLOCK, allow_eof=False)
        return data

    # -- headers ----------------------------------------------------------------------------------------------

    def _number(self, field: bytes, name: str) -> int:
        if field and field[0] & 0x80:
            # GNU base-256: big-endian two's complement with the top bit of the first byte as a marker.
            value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
            if field[0] & 0x40:
                value -= 1 << (8 * len(field) - 1)
            return value
        text = field.replace(b"\0", b" ").strip()
        if not text:
            return 0
        try:
            return int(text, 8)
        except ValueError as e:
            raise self._error(f"bad octal {name} field {text!r}") from e

    def _octal(self, header: bytes, start: int, end: int, name: str) -> int:
        """The number in ``header[start:end]``: the common NUL/space-terminated octal text with one C-level
        ``int()``, anything else (base-256, leading NULs, garbage) through :meth:`_number`."""
        field = header[start:end]
        try:
            return int(field.rstrip(_OCTAL_PAD), 8)
        except ValueError:  # never for a base-256 field's digits: its first byte is not ASCII
            return self._number(field, name)

    def _checksum_ok(self, block: bytes) -> bool:
        """The reference check: the stored checksum is the unsigned or (old tars) signed sum of the header
        with the checksum field read as spaces."""
        stored_field = block[148:156]
        try:
            stored = self._number(stored_field, "checksum")
        except ProtocolError:
            return False
        unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
        if stored == unsigned:
            return True
        signed = sum((b ^ 0x80) - 0x80 for b in block[:148] + block[156:]) + 8 * 0x20
        return stored == signed

    def _parse_pax(self, data: bytes, into: dict[str, bytes], sparse: list[int]) -> None:
        pos = 0
        while pos < len(data):
            if data[pos:].strip(b"\0") == b"":
                break  # trailing NUL padding inside the declared size
            space = data.find(b" ", pos)
            if space < 0:
                raise self._error("bad PAX record (no length)")
            try:
                length = int(data[pos:space])
            except ValueError as e:
                raise self._error("bad PAX record length") from e
            end = pos + length
            if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
                raise self._error("bad PAX record")
            key_raw, eq, value = data[space + 1 : end - 1].partition(b"=")
            if not eq:
                raise self._error("bad PAX record (no '=')")
            key = key_raw.decode("utf-8", "surrogateescape")
            if key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
                # PAX sparse 0.0: repeated keys whose order is the map.
                sparse.append(self._pax_int(value, key))
            else:
                into[key] = value
            pos = end

    def _pax_int(self, value: bytes, key: str) -> int:
        # A 64-bit number has at most 20 digits; longer text costs int() and would flood error messages.
        if len(value) > _PAX_NUMBER_CHARS:
            raise self._error(f"PAX {key} value of {len(value)} characters (at most {_PAX_NUMBER_CHARS})")
        try:
            return int(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            raise self._error(f"bad PAX {key} value") from e

    def _pax_mtime_ns(self, value: bytes) -> int:
        text = value.decode("ascii", "replace").strip()
        whole, _, frac = text.partition(".")
        if len(whole) > _PAX_NUMBER_CHARS:
            raise self._error(f"PAX mtime of {len(whole)} digits (at most {_PAX_NUMBER_CHARS})")
        try:
            sign = -1 if whole.startswith("-") else 1
            seconds = int(whole)
            nanos = int((frac + "000000000")[:9]) if frac else 0
        except ValueError as e:
            raise self._error("bad PAX mtime") from e
        return seconds * 1_000_000_000 + sign * nanos

    def _check_name(self, name: bytes, kind: str) -> None:
        if len(name) > self._limits.max_tar_name_bytes:
            raise self._error(f"{kind} of {len(name)} bytes exceeds {self._limits.max_tar_name_bytes}")
        if b"\0" in name:
            raise self._error(f"{kind} contains a NUL byte")

    def _sparse_pairs(self, numbers: list[int], kind: str) -> list[tuple[int, int]]:
        if len(numbers) % 2:
            raise self._error(f"odd {kind} sparse map")
        if len(numbers) // 2 > self._limits.max_tar_sparse_segments:
            raise self._error(f"sparse map exceeds {self._limits.max_tar_sparse_segments} segments")
        return [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2)]

    def _old_gnu_sparse(self, header: bytes) -> tuple[list[tuple[int, int]], int]:
        numbers: list[int] = []

        def take(area: bytes, count: int) -> None:
            for i in range(count):
                offset_field = area[i * 24 : i * 24 + 12]
                if offset_field.strip(b"\0") == b"":
                    continue
                numbers.append(self._number(offset_field, "sparse offset"))
                numbers.append(self._number(area[i * 24 + 12 : i * 24 + 24], "sparse length"))

        take(header[386:482], 4)
        extended = header[482]
        real_size = self._number(header[483:495], "sparse real size")
        while extended:
            block = self._read_exact(BLOCK, "GNU sparse extension header")
            take(block[:504], 21)
            extended = block[504]
            if len(numbers) // 2 > self._limits.max_tar_sparse_segments:
                raise self._error(f"sparse map exceeds {self._limits.max_tar_sparse_segments} segments")
        return self._sparse_pairs(numbers, "GNU"), real_size

    def _sparse_1_0_map(self, stored: int) -> tuple[list[tuple[int, int]], int]:
        """Read the PAX sparse 1.0 map at the start of the data; return it and the bytes it used."""
        numbers: list[int] = []
        used = 0
        pending = b""
        count: int | None = None
        while count is None or len(numbers) < 2 * count:
            if used + BLOCK > stored:
                raise self._error("truncated PAX sparse 1.0 map")
            block = self._read_exact(BLOCK, "PAX sparse 1.0 map")
            used += BLOCK
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if count is not None and len(numbers) >= 2 * count:
                    break
                try:
                    value = int(line)
                except ValueError as e:
                    raise self._error("bad PAX sparse 1.0 map") from e
                if count is None:
                    if not 0 <= value <= self._limits.max_tar_sparse_segments:
                        raise self._error(f"sparse map exceeds {self._limits.max_tar_sparse_segments} segments")
                    count = value
                else:
                    numbers.append(value)
            complete = count is not None and len(numbers) >= 2 * count
            if not complete and len(pending) > 64:  # a number cannot be that long
                raise self._error("bad PAX sparse 1.0 map")
        return self._sparse_pairs(numbers, "PAX 1.0"), used

    def __iter__(self) -> Iterator[TarEntry]:
        """Yield entries until the end of the archive (see the module invariants for what counts as one).

        Raises:
            ProtocolError: a malformed, truncated or over-limit archive.
        """
        max_entries = self._limits.max_tar_entries
        meta: _Meta | None = None  # created by the first meta header before an entry
        while True:
            if self._remaining or self._padding:
                self._finish_entry()
            self._current = ""
            header = self._read(BLOCK)
            if len(header) < BLOCK:
                if header.strip(b"\0"):
                    raise self._error("truncated header")
                break  # EOF at (or zero bytes before) a header boundary: an archive without EOF blocks
            if header == _ZERO_BLOCK:
                following = self._read(BLOCK)
                if following and following.strip(b"\0"):
                    raise self._error("a lone zero block followed by data")
                break
            self._headers += 1
            if self._headers > max_entries:
                raise self._error(f"more than {max_entries} headers")
            checksum_field = header[148:156]
            try:
                stored_checksum = int(checksum_field.rstrip(_OCTAL_PAD), 8)
            except ValueError:
                stored_checksum = -1  # not plain octal: left to the reference check
            if stored_checksum != _header_sum(header) - sum(checksum_field) + 8 * 0x20 and not self._checksum_ok(
                header
            ):
                raise self._error("header checksum mismatch")
            typeflag = header[156:157]
            size = self._octal(header, 124, 136, "size")
            if size < 0:
                raise self._error("negative size")
            if typeflag in _META_TYPEFLAGS:
                if meta is None:
                    meta = _Meta()
                self._meta_header(typeflag, size, meta)
                continue
            kind = _TYPEFLAGS.get(typeflag)
            if kind is None:
                raise self._error(f"unsupported entry type {typeflag!r}")
            if meta is None and not self._global_pax and typeflag != b"S":
                entry = self._plain_entry(header, kind, size)
            else:
                entry = self._entry(header, kind, typeflag, size, meta if meta is not None else _Meta())
                meta = None
            yield entry
        self._ended = True

    def _meta_header(self, typeflag: bytes, size: int, meta: _Meta) -> None:
        """Consume a PAX / GNU long-name / volume header (``typeflag`` in ``_META_TYPEFLAGS``) into ``meta``."""
        if typeflag == b"x":
            self._parse_pax(self._read_meta_data(size, "PAX"), meta.pax, meta.pax_sparse)
        elif typeflag == b"g":
            self._parse_pax(self._read_meta_data(size, "PAX global"), self._global_pax, meta.pax_sparse)
        elif typeflag == b"L":
            meta.long_name = _cstr(self._read_meta_data(size, "GNU long name"))
        elif typeflag == b"K":
            meta.long_link = _cstr(self._read_meta_data(size, "GNU long link"))
        else:  # b"V", a volume label: metadata only
            self._remaining, self._padding = size, -size % BLOCK

    def _plain_entry(self, header: bytes, kind: EntryType, size: int) -> TarEntry:
        """An entry described by its header block alone (no PAX records, GNU long names or sparse map): the
        same result as :meth:`_entry` with empty extensions, in fewer steps."""
        name = header[:100].partition(b"\0")[0]
        if header[345] and header.startswith(b"ustar\0", 257):  # POSIX ustar: a prefix of leading directories
            name = header[345:500].partition(b"\0")[0] + b"/" + name
        link = header[157:257].partition(b"\0")[0]
        if not self._header_names_fit:
            self._check_name(name, "name")
            self._check_name(link, "link name")
        self._current = unsafe_name = name.decode("utf-8", "surrogateescape")
        uid = self._octal(header, 108, 116, "uid")
        gid = self._octal(header, 116, 124, "gid")
        if not (0 <= uid < 0xFFFFFFFF and 0 <= gid < 0xFFFFFFFF):
            self._check_owner(uid, gid)
        mtime_ns = self._checked_mtime_ns(self._octal(header, 136, 148, "mtime") * 1_000_000_000)
        self._remaining = size
        self._padding = -size % BLOCK
        if kind is EntryType.FILE:
            mode = self._octal(header, 100, 108, "mode") & 0o7777
            return TarEntry(unsafe_name, kind, mode, uid, gid, mtime_ns, size, size, "", 0, 0, (), None)
        devmajor = devminor = 0
        if kind is EntryType.CHAR or kind is EntryType.BLOCK:
            devmajor, devminor = self._device_numbers(header)
        mode = self._octal(header, 100, 108, "mode") & 0o7777
        unsafe_linkname = (
            link.decode("utf-8", "surrogateescape") if kind is EntryType.SYMLINK or kind is EntryType.HARDLINK else ""
        )
        return TarEntry(
            unsafe_name, kind, mode, uid, gid, mtime_ns, 0, 0, unsafe_linkname, devmajor, devminor, (), None
        )

    def _names(self, header: bytes, records: dict[str, bytes], meta: _Meta) -> tuple[bytes, bytes]:
        name = _cstr(header[0:100])
        if header[257:263] == b"ustar\0":  # POSIX ustar: the prefix field holds the leading directories
            prefix = _cstr(header[345:500])
            if prefix:
                name = prefix + b"/" + name
        if meta.long_name is not None:
            name = meta.long_name
        if "path" in records:
            name = records["path"]
        if "GNU.sparse.name" in records:
            name = records["GNU.sparse.name"]
        link = meta.long_link if meta.long_link is not None else _cstr(header[157:257])
        if "linkpath" in records:
            link = records["linkpath"]
        self._check_name(name, "name")
        self._check_name(link, "link name")
        return name, link

    def _checked_mtime_ns(self, mtime_ns: int) -> int:
        # SECURITY: a base-256 mtime can be 2**90 s; os.utime would raise OverflowError mid-unpack.
        if not -_MTIME_NS_BOUND <= mtime_ns < _MTIME_NS_BOUND:
            raise self._error("mtime is outside the range of a 64-bit time in nanoseconds (years 1678 to 2262)")
        return mtime_ns

    def _xattrs(self, records: dict[str, bytes]) -> tuple[tuple[str, bytes], ...]:
        """The ``SCHILY.xattr.*`` records; a NUL in a name is refused (``setxattr`` takes a C string)."""
        xattrs: list[tuple[str, bytes]] = []
        for key, value in records.items():
            if key.startswith(_XATTR_PREFIX) and len(key) > len(_XATTR_PREFIX):
                untrusted_name = key.removeprefix(_XATTR_PREFIX)
                if "\0" in untrusted_name:
                    raise self._error(f"xattr name {untrusted_name[:64]!r} contains a NUL byte")
                xattrs.append((untrusted_name, value))
        return tuple(xattrs)

    def _check_owner(self, uid: int, gid: int) -> None:
        for label, value in (("uid", uid), ("gid", gid)):
            # SECURITY: 2**32-1 is chown's "leave unchanged"; refuse it and anything out of range.
            if not 0 <= value < 0xFFFFFFFF:
                raise self._error(f"{label} {value} out of range")

    def _owner(self, header: bytes, records: dict[str, bytes]) -> tuple[int, int]:
        uid = self._pax_int(records["uid"], "uid") if "uid" in records else self._octal(header, 108, 116, "uid")
        gid = self._pax_int(records["gid"], "gid") if "gid" in records else self._octal(header, 116, 124, "gid")
        self._check_owner(uid, gid)
        return uid, gid

    def _device_numbers(self, header: bytes) -> tuple[int, int]:
        devmajor = self._octal(header, 329, 337, "devmajor")
        devminor = self._octal(header, 337, 345, "devminor")
        if not (0 <= devmajor < 1 << 32 and 0 <= devminor < 1 << 32):
            raise self._error("device number out of range")
        return devmajor, devminor

    def _sparse(
        self, header: bytes, typeflag: bytes, size: int, records: dict[str, bytes], meta: _Meta
    ) -> tuple[list[tuple[int, int]] | None, int, int]:
        """The sparse map, real size and stored data size of an entry (the map for a dense file is None)."""
        sparse_map: list[tuple[int, int]] | None = None
        real_size = stored = size
        if typeflag == b"S":
            sparse_map, real_size = self._old_gnu_sparse(header)
        elif records.get("GNU.sparse.major") == b"1" and records.get("GNU.sparse.minor") == b"0":
            sparse_map, used = self._sparse_1_0_map(size)  # the map is part of the data
            stored = size - used
            real_size = self._pax_int(records.get("GNU.sparse.realsize", b""), "GNU.sparse.realsize")
        elif "GNU.sparse.map" in records:  # PAX 0.1
            text = records["GNU.sparse.map"]
            numbers = [self._pax_int(v, "GNU.sparse.map") for v in text.split(b",")] if text else []
            sparse_map = self._sparse_pairs(numbers, "PAX 0.1")
            real_size = self._pax_int(records.get("GNU.sparse.size", b""), "GNU.sparse.size")
        elif meta.pax_sparse:  # PAX 0.0
            sparse_map = self._sparse_pairs(meta.pax_sparse, "PAX 0.0")
            real_size = self._pax_int(records.get("GNU.sparse.size", b""), "GNU.sparse.size")
        if sparse_map is not None:
            self._check_sparse(sparse_map, real_size, stored)
        return sparse_map, real_size, stored

    def _entry(self, header: bytes, kind: EntryType, typeflag: bytes, size: int, meta: _Meta) -> TarEntry:
        records = {**self._global_pax, **meta.pax} if self._global_pax else meta.pax
        name, link = self._names(header, records, meta)
        self._current = _decode(name)
        if "size" in records:
            size = self._pax_int(records["size"], "size")
            if size < 0:
                raise self._error("negative size")
        uid, gid = self._owner(header, records)
        if "mtime" in records:
            mtime_ns = self._checked_mtime_ns(self._pax_mtime_ns(records["mtime"]))
        else:
            mtime_ns = self._checked_mtime_ns(self._octal(header, 136, 148, "mtime") * 1_000_000_000)
        xattrs = self._xattrs(records)
        devmajor = devminor = 0
        if kind is EntryType.CHAR or kind is EntryType.BLOCK:
            devmajor, devminor = self._device_numbers(header)
        sparse_map, real_size, stored = self._sparse(header, typeflag, size, records, meta)
        self._remaining = stored
        self._padding = -size % BLOCK
        is_file = kind is EntryType.FILE
        return TarEntry(
            unsafe_name=self._current,
            type=kind,
            mode=self._octal(header, 100, 108, "mode") & 0o7777,
            uid=uid,
            gid=gid,
            mtime_ns=mtime_ns,
            size=real_size if is_file else 0,
            stored_size=stored if is_file else 0,
            unsafe_linkname=_decode(link) if kind in (EntryType.SYMLINK, EntryType.HARDLINK) else "",
            devmajor=devmajor,
            devminor=devminor,
            untrusted_xattrs=xattrs,
            sparse_map=None if sparse_map is None else tuple(sparse_map),
        )

    def _check_sparse(self, sparse_map: list[tuple[int, int]], real_size: int, stored: int) -> None:
        if not 0 <= real_size <= self._limits.max_tar_file_real_bytes:
            raise self._error(f"sparse real size {real_size} out of range")
        end = 0
        total = 0
        for offset, length in sparse_map:
            if offset < end or length < 0 or offset + length > real_size:
                raise self._error("sparse map segments overlap, are unordered or exceed the real size")
            end = offset + length
            total += length
        if total != stored:
            raise self._error(f"sparse map covers {total} bytes but {stored} are stored")

    def drain(self) -> int:
        """Skip the rest of the current entry, then read the underlying stream to EOF.

        Returns:
            The number of bytes after the end of the archive (end-of-archive blocks included).

        Raises:
            ProtocolError: called before the entries were exhausted and the archive is malformed there.
        """
        if not self._ended:
            for _ in self:
                pass
        start = self._offset
        while self._read(self._chunk_bytes):
            pass
        return self._offset - start

    @property
    def entries_seen(self) -> int:
        """Headers read so far (including PAX and GNU meta headers)."""
        return self._headers
