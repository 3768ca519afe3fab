"""The AA event log: upstream's entry format and vectors, register extends, crash safety (WAL, torn tail)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from cocoguest.attestation.attester import HashAlgorithm, fit_register
from cocoguest.attestation.eventlog import AaelEvent, EventLog, encode_entry, parse_entries, tagged_event
from cocoguest.errors import AttestationRequestError, EventLogError, TeeDeviceError

# guest-components.md §6.5 test vector for ("domain", "operation", "content")
TAGGED_HEX = "4c45414118000000646f6d61696e206f7065726174696f6e20636f6e74656e74"
DIGESTS = {
    HashAlgorithm.SHA256: "46df8dacf00a07d34a83cdf56d7978697790787cf2ba1432ef7c38f22cd96351",
    HashAlgorithm.SHA384: "dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440"
    "fb00f3aa0609db7e49cd8d793f670d02",
    HashAlgorithm.SHA512: "b708d222ca8bd44dfe6ba0c4ca2cbb72379276fba8091025217064be45a813e5"
    "d6124ccf073219edb617d1faf007d55061465bdf34b7437dbdc9a7405bd4e9c0",
}
EVENT = AaelEvent("domain", "operation", "content")


class SoftwareRegisters:
    """A RuntimeMeasurer model: registers with real extend semantics; optional failure points.

    ``crash_*`` raise (an in-process device failure); ``die_*`` end the process with ``os._exit`` (a real crash,
    used in a forked child; the registers then live in ``directory`` so the parent sees them).
    """

    def __init__(
        self, algorithm: HashAlgorithm = HashAlgorithm.SHA384, *, readable: bool = True, directory: Path | None = None
    ) -> None:
        self.algorithm = algorithm
        self.readable = readable
        self.directory = directory
        self._registers: dict[int, bytes] = {}
        self.crash_before_extend = False
        self.crash_after_extend = False
        self.die_after_extend = False
        self.extends = 0

    @property
    def registers(self) -> dict[int, bytes]:
        if self.directory is None:
            return self._registers
        return {int(p.name): p.read_bytes() for p in self.directory.iterdir()}

    def _store(self, index: int, value: bytes) -> None:
        if self.directory is None:
            self._registers[index] = value
        else:
            (self.directory / str(index)).write_bytes(value)

    @property
    def measurement_hash(self) -> HashAlgorithm:
        return self.algorithm

    def register_for_pcr(self, pcr: int) -> int:
        return 4 if pcr >= 16 else pcr // 4

    def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        if self.crash_before_extend:
            raise TeeDeviceError("simulated crash before extend")
        index = self.register_for_pcr(pcr)
        current = self.registers.get(index, bytes(self.algorithm.digest_size))
        self._store(index, self.algorithm.digest(current + fit_register(event_digest, len(current))))
        self.extends += 1
        if self.die_after_extend:
            os._exit(17)
        if self.crash_after_extend:
            raise TeeDeviceError("simulated crash after extend")

    def read_runtime_measurement(self, pcr: int) -> bytes | None:
        if not self.readable:
            return None
        return self.registers.get(self.register_for_pcr(pcr), bytes(self.algorithm.digest_size))


def _log(tmp_path: Path, measurer: SoftwareRegisters) -> EventLog:
    log = EventLog(measurer, path=tmp_path / "run" / "eventlog", wal_path=tmp_path / "run" / ".wal_event_entry")
    log.open()
    return log


def test_tagged_event_vector() -> None:
    assert tagged_event(EVENT.text()).hex() == TAGGED_HEX


@pytest.mark.parametrize("algorithm", list(DIGESTS))
def test_entry_layout_and_digest_vectors(algorithm: HashAlgorithm) -> None:
    entry = encode_entry(4, algorithm, EVENT.text())
    target, event_type, count, alg_id = struct.unpack_from("<IIIH", entry)
    assert (target, event_type, count, alg_id) == (4, 6, 1, algorithm.tcg_alg_id)
    digest = entry[14 : 14 + algorithm.digest_size]
    assert digest.hex() == DIGESTS[algorithm]
    (size,) = struct.unpack_from("<I", entry, 14 + algorithm.digest_size)
    assert entry[18 + algorithm.digest_size :].hex() == TAGGED_HEX
    assert size == 32


@pytest.mark.parametrize(
    "event",
    [
        AaelEvent("dom ain", "op", "c"),
        AaelEvent("", "op", "c"),
        AaelEvent("d", "o p", "c"),
        AaelEvent("d", "op", "line\nbreak"),
        AaelEvent("d", "op", "x" * 70_000),
    ],
)
def test_bad_events_refused(event: AaelEvent) -> None:
    with pytest.raises(AttestationRequestError):
        event.text()


def test_extend_appends_and_extends_the_register(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    pull = AaelEvent("github.com/confidential-containers", "PullImage", '{"image":"a", "digest":"sha256:b"}')
    log.extend(EVENT)
    log.extend(pull)
    entries = log.entries()
    assert [e.event for e in entries] == [EVENT, pull]
    assert all(e.target_mr == 4 for e in entries)  # default init_pcr 17
    expected = bytes(48)
    for event in (EVENT, pull):
        expected = hashlib.sha384(expected + hashlib.sha384(tagged_event(event.text())).digest()).digest()
    assert measurer.registers[4] == expected
    assert not log.wal_path.exists()
    log.extend(EVENT, pcr=8)  # target_mr and the extended register agree (upstream quirk not copied)
    assert log.entries()[-1].target_mr == 2
    assert 2 in measurer.registers
    log.close()


def test_content_may_contain_spaces_round_trip(tmp_path: Path) -> None:
    log = _log(tmp_path, SoftwareRegisters(HashAlgorithm.SHA256))
    log.extend(AaelEvent("d", "o", "a b  c"))
    assert log.entries()[0].event.content == "a b  c"
    log.close()


def test_torn_last_entry_is_cut_on_open(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    log.close()
    complete = log.path.read_bytes()
    for cut in (1, 13, 40, len(complete) - 1):
        log.path.write_bytes(complete + complete[:cut])
        reopened = _log(tmp_path, measurer)
        assert log.path.read_bytes() == complete
        assert len(reopened.entries()) == 1
        reopened.close()


def test_failure_after_extend_is_settled_in_process(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    measurer.crash_after_extend = True
    second = AaelEvent("d", "o", "second")
    with pytest.raises(TeeDeviceError):
        log.extend(second)
    # the register moved, so the event is logged at once and the WAL is gone
    assert [e.event for e in log.entries()] == [EVENT, second]
    assert not log.wal_path.exists()
    measurer.crash_after_extend = False
    log.extend(EVENT)
    log.close()
    assert len(_log(tmp_path, measurer).entries()) == 3


def test_process_death_after_extend_is_completed_on_restart(tmp_path: Path) -> None:
    registers = tmp_path / "registers"
    registers.mkdir()
    measurer = SoftwareRegisters(directory=registers)
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    log.close()
    second = AaelEvent("d", "o", "second")
    pid = os.fork()
    if pid == 0:  # the child: an AA that dies between the register extend and the log append
        try:
            dying = SoftwareRegisters(directory=registers)
            child = _log(tmp_path, dying)
            dying.die_after_extend = True
            child.extend(second)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 17
    assert log.wal_path.exists()
    assert len(parse_entries(log.path.read_bytes())[0]) == 1  # the crash left the log one entry short
    reopened = _log(tmp_path, SoftwareRegisters(directory=registers))
    assert [e.event for e in reopened.entries()] == [EVENT, second]
    assert not log.wal_path.exists()
    # the log replays to the register value
    expected = bytes(48)
    for entry in reopened.entries():
        expected = hashlib.sha384(expected + entry.digest).digest()
    assert measurer.registers[4] == expected
    reopened.close()


def test_process_death_with_torn_append(tmp_path: Path) -> None:
    registers = tmp_path / "registers"
    registers.mkdir()
    pid = os.fork()
    if pid == 0:
        try:
            dying = SoftwareRegisters(directory=registers)
            child = _log(tmp_path, dying)
            dying.die_after_extend = True
            child.extend(EVENT)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 17
    # the append had started when the guest died: part of an entry is on disk
    path = tmp_path / "run" / "eventlog"
    with path.open("ab") as f:
        f.write(encode_entry(4, HashAlgorithm.SHA384, EVENT.text())[:30])
    reopened = _log(tmp_path, SoftwareRegisters(directory=registers))
    assert [e.event for e in reopened.entries()] == [EVENT]
    reopened.close()


def test_failure_before_extend_drops_the_event(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    measurer.crash_before_extend = True
    with pytest.raises(TeeDeviceError):
        log.extend(AaelEvent("d", "o", "never measured"))
    assert [e.event for e in log.entries()] == [EVENT]
    assert not log.wal_path.exists()
    log.close()


def test_wal_of_an_extend_that_never_happened_is_dropped_on_open(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    log.close()
    # a WAL as step (1) writes it (u64 BE offset, u32 BE pcr, expected value, text); the register never moved
    offset = log.path.stat().st_size
    current = measurer.registers[4]
    lost = hashlib.sha384(tagged_event(b"d o lost")).digest()
    expected = hashlib.sha384(current + lost).digest()
    log.wal_path.write_bytes(struct.pack(">QI", offset, 17) + expected + b"d o lost")
    reopened = _log(tmp_path, measurer)
    assert [e.event for e in reopened.entries()] == [EVENT]
    assert not log.wal_path.exists()
    reopened.close()


def test_register_moved_by_someone_else_stops_recovery(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.close()
    log.wal_path.write_bytes(struct.pack(">QI", 0, 17) + b"\x01" * 48 + b"d o lost")
    with pytest.raises(EventLogError, match="extended by something else"):
        _log(tmp_path, measurer)
    assert log.wal_path.exists()


def test_unreadable_register_keeps_the_event(tmp_path: Path) -> None:
    measurer = SoftwareRegisters(HashAlgorithm.SHA256, readable=False)
    log = _log(tmp_path, measurer)
    measurer.crash_after_extend = True
    with pytest.raises(TeeDeviceError):
        log.extend(EVENT)
    assert [e.event for e in log.entries()] == [EVENT]
    log.close()


def test_incomplete_wal_is_discarded(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.close()
    log.wal_path.write_bytes(b"\x00" * 10)
    reopened = _log(tmp_path, measurer)
    assert reopened.entries() == []
    assert not log.wal_path.exists()
    reopened.close()


def test_corrupt_middle_entry_is_an_error(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    log.extend(EVENT)
    log.extend(EVENT)
    log.close()
    data = bytearray(log.path.read_bytes())
    data[20] ^= 0x01  # a digest bit of the first entry
    log.path.write_bytes(bytes(data))
    with pytest.raises(EventLogError, match="digest does not match"):
        _log(tmp_path, measurer)
    data[20] ^= 0x01
    data[4] = 0x07  # event type
    log.path.write_bytes(bytes(data))
    with pytest.raises(EventLogError, match="type 0x7"):
        _log(tmp_path, measurer)


def test_second_owner_refused(tmp_path: Path) -> None:
    measurer = SoftwareRegisters()
    log = _log(tmp_path, measurer)
    with pytest.raises(EventLogError, match="in use"):
        _log(tmp_path, measurer)
    log.close()


def test_extend_on_closed_log(tmp_path: Path) -> None:
    log = EventLog(SoftwareRegisters(), path=tmp_path / "e", wal_path=tmp_path / "w")
    with pytest.raises(EventLogError, match="not open"):
        log.extend(EVENT)


def test_parse_entries_reports_torn_length() -> None:
    entry = encode_entry(1, HashAlgorithm.SM3, b"a b c")
    entries, length = parse_entries(entry + entry[:-1])
    assert len(entries) == 1
    assert length == len(entry)
    assert entries[0].algorithm is HashAlgorithm.SM3
