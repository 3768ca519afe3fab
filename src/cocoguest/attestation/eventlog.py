"""The AA event log (AAEL) and ExtendRuntimeMeasurement (guest-components.md §6.5, "Writing").

Each event ``"<domain> <operation> <content>"`` is one little-endian TCG2 crypto-agile entry::

    u32 target_mr | u32 event_type = 6 (EV_EVENT_TAG) | u32 digest_count = 1 | u16 alg_id | digest
    | u32 event_size | tagged event = (u32 0x4141454c "AAEL" | u32 size | event text)

with ``digest = H(tagged event)``, H the attester's measurement hash, and the register extended with that digest
(``expected = H(current || digest)``).

Crash safety (write-ahead, as upstream, plus torn-tail repair):
    1. write the WAL ``u64 BE log offset | u32 BE pcr | expected register value (or zeros if unreadable) | text``
       to a temporary file, fsync, rename over ``wal_path``, fsync the directory;
    2. extend the register through the attester;
    3. append the entry to the log with one ``write`` and fsync;
    4. delete the WAL and fsync the directory.
On :meth:`EventLog.open` (and at once when step 2 or 3 fails in-process): a torn last entry (the data ends
inside it) is cut off and the truncation fsynced; then a leftover WAL is resolved: the log is cut back to the
WAL's offset, and the entry is re-appended if the register shows the extend happened (or cannot be read back:
then with a warning), dropped if the register still holds the value before it; any other register value means
something else extended it, and is an :class:`EventLogError` (as upstream).

Deviation from upstream, on purpose: the WAL records the PCR (upstream's WAL cannot tell which register to check),
and the register extended is always the one ``target_mr`` names (upstream quirk, spec §14 item 11, not copied).

Invariants:
    * ``domain`` and ``operation`` are non-empty and contain no space or newline; ``content`` has no newline; the
      text is at most ``Limits.max_event_text_bytes``.
    * One process owns the log (``flock``); calls within a process are serialised by a lock.
    * Entries in the middle of the log that do not parse are an :class:`EventLogError`, never silently dropped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.attestation.attester import HashAlgorithm, RuntimeMeasurer, fit_register
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH
from cocoguest.errors import AttestationRequestError, EventLogError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

DEFAULT_WAL_PATH: Final = Path("/run/attestation-agent/.wal_event_entry")
DEFAULT_INIT_PCR: Final = 17
EV_EVENT_TAG: Final = 0x6
AAEL_TAG: Final = 0x4141454C
_ALGORITHMS: Final = {a.tcg_alg_id: a for a in HashAlgorithm}
_HEAD: Final = struct.Struct("<IIIH")
_WAL_HEAD: Final = struct.Struct(">QI")


@dataclass(frozen=True, slots=True)
class AaelEvent:
    """One runtime-measurement event."""

    domain: str
    operation: str
    content: str

    def text(self, limits: Limits = DEFAULT_LIMITS) -> bytes:
        """``"<domain> <operation> <content>"`` in UTF-8.

        Raises:
            AttestationRequestError: a field breaks the invariants of the module docstring.
        """
        for name, value in (("domain", self.domain), ("operation", self.operation)):
            if not value or any(c in value for c in " \n\r"):
                msg = f"event {name} {value[:64]!r} must be non-empty, without spaces or newlines"
                raise AttestationRequestError(msg)
        if "\n" in self.content:
            msg = "event content must not contain a newline"
            raise AttestationRequestError(msg)
        text = f"{self.domain} {self.operation} {self.content}".encode()
        if len(text) > limits.max_event_text_bytes:
            msg = f"event of {len(text)} bytes is longer than {limits.max_event_text_bytes}"
            raise AttestationRequestError(msg)
        return text

    @classmethod
    def parse(cls, text: bytes) -> AaelEvent:
        """The event of ``text`` (split on the first two spaces).

        Raises:
            EventLogError: not UTF-8 or fewer than three fields.
        """
        try:
            domain, operation, content = text.decode("utf-8").split(" ", 2)
        except (UnicodeDecodeError, ValueError) as e:
            msg = f"event text {text[:64]!r} is not '<domain> <operation> <content>'"
            raise EventLogError(msg) from e
        return cls(domain, operation, content)


def tagged_event(text: bytes) -> bytes:
    """The tagged event bytes: ``u32 0x4141454c | u32 len(text) | text``."""
    return struct.pack("<II", AAEL_TAG, len(text)) + text


def encode_entry(target_mr: int, algorithm: HashAlgorithm, text: bytes) -> bytes:
    """One AAEL entry (see the module docstring)."""
    tagged = tagged_event(text)
    digest = algorithm.digest(tagged)
    return (
        _HEAD.pack(target_mr, EV_EVENT_TAG, 1, algorithm.tcg_alg_id) + digest + struct.pack("<I", len(tagged)) + tagged
    )


@dataclass(frozen=True, slots=True)
class AaelEntry:
    """A parsed AAEL entry."""

    target_mr: int
    algorithm: HashAlgorithm
    digest: bytes
    event: AaelEvent


def parse_entries(untrusted: bytes) -> tuple[list[AaelEntry], int]:
    """The complete entries of a log and the length they span (anything after is a torn tail).

    Raises:
        EventLogError: a complete entry is malformed (wrong type, tag, algorithm or digest).
    """
    entries: list[AaelEntry] = []
    at = 0
    while at < len(untrusted):
        if at + _HEAD.size > len(untrusted):
            break
        target_mr, event_type, count, alg_id = _HEAD.unpack_from(untrusted, at)
        algorithm = _ALGORITHMS.get(alg_id)
        if event_type != EV_EVENT_TAG or count != 1 or algorithm is None:
            msg = f"AAEL entry at offset {at}: type 0x{event_type:x}, {count} digests, algorithm 0x{alg_id:x}"
            raise EventLogError(msg)
        digest_at = at + _HEAD.size
        size_at = digest_at + algorithm.digest_size
        if size_at + 4 > len(untrusted):
            break
        (size,) = struct.unpack_from("<I", untrusted, size_at)
        end = size_at + 4 + size
        if end > len(untrusted):
            break
        tagged = untrusted[size_at + 4 : end]
        if len(tagged) < 8 or struct.unpack_from("<II", tagged) != (AAEL_TAG, size - 8):
            msg = f"AAEL entry at offset {at}: bad tagged-event header"
            raise EventLogError(msg)
        digest = untrusted[digest_at:size_at]
        if algorithm.digest(tagged) != digest:
            msg = f"AAEL entry at offset {at}: digest does not match its event"
            raise EventLogError(msg)
        entries.append(AaelEntry(target_mr, algorithm, digest, AaelEvent.parse(tagged[8:])))
        at = end
    return entries, at


class EventLog:
    """The AAEL file of one attester (see the module docstring for the crash-safety protocol)."""

    def __init__(
        self,
        measurer: RuntimeMeasurer,
        *,
        path: Path = DEFAULT_AAEL_PATH,
        wal_path: Path = DEFAULT_WAL_PATH,
        init_pcr: int = DEFAULT_INIT_PCR,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._measurer = measurer
        self.path = path
        self.wal_path = wal_path
        self.init_pcr = init_pcr
        self._limits = limits
        self._lock = threading.Lock()
        self._fd: int | None = None

    def open(self) -> None:
        """Create or open the log, lock it, repair a torn tail and resolve a leftover WAL.

        Raises:
            EventLogError: the log cannot be opened, is locked by another process, is too large or malformed.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:
            msg = f"cannot open AA event log {self.path}: {e.strerror}"
            raise EventLogError(msg) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            msg = f"AA event log {self.path} is in use by another process"
            raise EventLogError(msg) from e
        self._fd = fd
        try:
            _entries, valid = parse_entries(self._read_all())
            self._truncate(valid, reason="torn last entry")
            self._recover_wal()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the log."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def entries(self) -> list[AaelEntry]:
        """The entries of the log."""
        return parse_entries(self._read_all())[0]

    def extend(self, event: AaelEvent, pcr: int | None = None) -> None:
        """ExtendRuntimeMeasurement: log ``event`` and extend the register of ``pcr`` (default ``init_pcr``).

        Raises:
            AttestationRequestError: the event breaks the text invariants.
            TeeDeviceError: the register could not be extended (the WAL is then resolved on the next open).
            EventLogError: the log or WAL cannot be written.
        """
        pcr = self.init_pcr if pcr is None else pcr
        text = event.text(self._limits)
        algorithm = self._measurer.measurement_hash
        entry = encode_entry(self._measurer.register_for_pcr(pcr), algorithm, text)
        digest = algorithm.digest(tagged_event(text))
        with self._lock:
            fd = self._require_open()
            # (1) write-ahead record
            current = self._measurer.read_runtime_measurement(pcr)
            expected = (
                bytes(algorithm.digest_size)
                if current is None
                else algorithm.digest(current + fit_register(digest, len(current)))
            )
            offset = os.fstat(fd).st_size
            self._write_wal(_WAL_HEAD.pack(offset, pcr) + expected + text)
            # (2) the register, (3) the log, (4) done
            try:
                self._measurer.extend_runtime_measurement(digest, pcr)
                self._append(entry)
            except BaseException:
                # The register may or may not have moved: settle it now, exactly as a restart would, so the
                # next extend cannot overwrite an unresolved WAL.
                self._recover_wal()
                raise
            self._remove_wal()

    def _require_open(self) -> int:
        if self._fd is None:
            msg = f"AA event log {self.path} is not open"
            raise EventLogError(msg)
        return self._fd

    def _read_all(self) -> bytes:
        fd = self._require_open()
        size = os.fstat(fd).st_size
        if size > self._limits.max_eventlog_bytes:
            msg = f"AA event log {self.path} is {size} bytes (at most {self._limits.max_eventlog_bytes})"
            raise EventLogError(msg)
        return os.pread(fd, size, 0)

    def _truncate(self, length: int, *, reason: str) -> None:
        fd = self._require_open()
        size = os.fstat(fd).st_size
        if size > length:
            _logger.warning(
                "AA event log %s: dropping %d bytes after offset %d (%s)", self.path, size - length, length, reason
            )
            os.ftruncate(fd, length)
            os.fsync(fd)

    def _append(self, entry: bytes) -> None:
        fd = self._require_open()
        try:
            written = os.write(fd, entry)
            os.fsync(fd)
        except OSError as e:
            msg = f"cannot append to AA event log {self.path}: {e.strerror}"
            raise EventLogError(msg) from e
        if written != len(entry):
            msg = f"short append to AA event log {self.path}"
            raise EventLogError(msg)

    def _write_wal(self, record: bytes) -> None:
        temporary = self.wal_path.with_name(self.wal_path.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, record)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.wal_path)
            _fsync_dir(self.wal_path.parent)
        except OSError as e:
            msg = f"cannot write AA event-log WAL {self.wal_path}: {e.strerror}"
            raise EventLogError(msg) from e

    def _remove_wal(self) -> None:
        try:
            self.wal_path.unlink()
            _fsync_dir(self.wal_path.parent)
        except OSError as e:
            msg = f"cannot remove AA event-log WAL {self.wal_path}: {e.strerror}"
            raise EventLogError(msg) from e

    def _recover_wal(self) -> None:
        try:
            record = self.wal_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            msg = f"cannot read AA event-log WAL {self.wal_path}: {e.strerror}"
            raise EventLogError(msg) from e
        algorithm = self._measurer.measurement_hash
        head = _WAL_HEAD.size
        if len(record) < head + algorithm.digest_size:
            # A WAL torn before its fsync: step (2) never ran.
            _logger.warning("AA event-log WAL %s is incomplete; discarding it", self.wal_path)
            self._remove_wal()
            return
        offset, pcr = _WAL_HEAD.unpack_from(record)
        expected = record[head : head + algorithm.digest_size]
        text = record[head + algorithm.digest_size :]
        event = AaelEvent.parse(text)
        digest = algorithm.digest(tagged_event(text))
        self._truncate(offset, reason="replaying the WAL")
        current = self._measurer.read_runtime_measurement(pcr)
        if current is None or expected == bytes(algorithm.digest_size):
            _logger.warning("AA event log: register of PCR %d cannot be read back; keeping event %r", pcr, event)
            self._append(encode_entry(self._measurer.register_for_pcr(pcr), algorithm, text))
        elif current == expected:
            self._append(encode_entry(self._measurer.register_for_pcr(pcr), algorithm, text))
        elif algorithm.digest(current + fit_register(digest, len(current))) == expected:
            _logger.warning("AA event log: register of PCR %d was not extended; dropping event %r", pcr, event)
        else:
            # SECURITY: the register moved, but not by this event: the log can no longer explain it. Stop, as
            # upstream does, rather than guess; the operator decides (remove the WAL, restart the guest).
            msg = (
                f"AA event log {self.path}: the register of PCR {pcr} was extended by something else while "
                f"{self.wal_path} was pending; the log no longer replays to it (remove the WAL to start anyway)"
            )
            raise EventLogError(msg)
        self._remove_wal()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
