"""The configfs-tsm report interface (Linux ``Documentation/ABI/testing/configfs-tsm``; guest-components.md §6.4).

Kernel ABI, as followed here for every report:
    1. ``mkdir <root>/<entry>``: the kernel creates the attribute files ``provider``, ``generation``, ``inblob``,
       ``outblob``, ``auxblob``, ``privlevel``, ... inside the new entry;
    2. read ``provider`` and refuse an entry served by another provider than the caller expects;
    3. write ``privlevel`` if asked (SNP VMPL), then read ``generation`` (g0);
    4. write ``inblob`` (the report data), read ``outblob`` (and ``auxblob`` if asked);
    5. read ``generation`` again: it must be g0 + 1, else another writer changed the entry between our write and
       our read, and the outblob may bind someone else's data: retry with a fresh entry, at most
       ``Limits.max_tsm_generation_retries`` times;
    6. ``rmdir`` the entry (always).

Invariants:
    * SECURITY: an outblob is returned only when the generation check proves it answers our inblob.
    * Entries are private (random names); every read is capped by ``Limits.max_tee_report_bytes``.

Only ``mkdir``/``rmdir`` are injectable (``create_entry``/``remove_entry``): on configfs, ``mkdir`` itself creates
the attribute files, which a plain directory cannot imitate. A synthetic tree passes a ``create_entry`` that
creates the directory and its attribute files the way the kernel does; every other step above runs unchanged.
This module is verified only against such synthetic trees here (no TEE on the build machine).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.attestation.devfs import read_capped, write_attribute
from cocoguest.errors import TeeDeviceError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

DEFAULT_TSM_REPORT_ROOT: Final = Path("/sys/kernel/config/tsm/report")

PROVIDER_TDX: Final = "tdx_guest"
PROVIDER_SNP: Final = "sev_guest"
PROVIDER_CCA: Final = "arm_cca_guest"


@dataclass(frozen=True, slots=True)
class TsmReport:
    """One report read from a configfs-tsm entry."""

    provider: str
    untrusted_outblob: bytes
    """The report or quote, as the provider returned it (parsed and checked by the driver)."""
    untrusted_auxblob: bytes | None
    """Auxiliary data (SNP: the certificate table), when asked for."""


class ConfigfsTsm:
    """A configfs-tsm report root (default ``/sys/kernel/config/tsm/report``)."""

    def __init__(
        self,
        root: Path = DEFAULT_TSM_REPORT_ROOT,
        *,
        create_entry: Callable[[Path], None] = os.mkdir,
        remove_entry: Callable[[Path], None] = os.rmdir,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.root = root
        self._create_entry = create_entry
        self._remove_entry = remove_entry
        self._limits = limits

    def available(self) -> bool:
        """Whether the report root exists (configfs mounted and the tsm module loaded)."""
        return self.root.is_dir()

    def provider(self) -> str | None:
        """The provider serving this root (by creating and removing a probe entry), or ``None`` if none."""
        if not self.available():
            return None
        try:
            entry = self._new_entry()
        except TeeDeviceError:
            return None
        try:
            return self._read_provider(entry)
        except (TeeDeviceError, TeeReportError):
            return None
        finally:
            self._drop_entry(entry)

    def report(
        self, inblob: bytes, *, expected_provider: str, privlevel: int | None = None, want_auxblob: bool = False
    ) -> TsmReport:
        """A report for ``inblob`` from a fresh entry (steps 1-6 of the module docstring).

        Raises:
            TeeDeviceError: configfs-tsm is unavailable, an attribute cannot be read or written, or the
                generation kept changing (``retryable``).
            TeeReportError: the entry is served by another provider, or an attribute is malformed or empty.
        """
        attempts = self._limits.max_tsm_generation_retries + 1
        for attempt in range(1, attempts + 1):
            entry = self._new_entry()
            try:
                result = self._report_once(entry, inblob, expected_provider, privlevel, want_auxblob)
            finally:
                self._drop_entry(entry)
            if result is not None:
                return result
            _logger.warning("configfs-tsm entry changed under us (attempt %d of %d); retrying", attempt, attempts)
        msg = f"configfs-tsm report under {self.root}: generation changed on every one of {attempts} attempts"
        raise TeeDeviceError(msg, retryable=True)

    def _report_once(
        self, entry: Path, inblob: bytes, expected_provider: str, privlevel: int | None, want_auxblob: bool
    ) -> TsmReport | None:
        """One report, or ``None`` when the generation check failed (steps 2-5)."""
        # (2) the provider
        provider = self._read_provider(entry)
        if provider != expected_provider:
            msg = f"configfs-tsm entry {entry} is served by {provider!r}, expected {expected_provider!r}"
            raise TeeReportError(msg)
        # (3) options, then the generation before our write
        if privlevel is not None:
            write_attribute(entry / "privlevel", str(privlevel).encode("ascii"), "configfs-tsm privlevel")
        before = self._read_generation(entry)
        # (4) our report data in, the report out
        write_attribute(entry / "inblob", inblob, "configfs-tsm inblob")
        cap = self._limits.max_tee_report_bytes
        outblob = read_capped(entry / "outblob", cap, "configfs-tsm outblob")
        auxblob = read_capped(entry / "auxblob", cap, "configfs-tsm auxblob") if want_auxblob else None
        # (5) SECURITY: the outblob answers our inblob only if nobody wrote the entry in between.
        after = self._read_generation(entry)
        if after != before + 1:
            return None
        if not outblob:
            msg = f"configfs-tsm entry {entry}: empty outblob"
            raise TeeReportError(msg)
        return TsmReport(provider=provider, untrusted_outblob=outblob, untrusted_auxblob=auxblob)

    def _new_entry(self) -> Path:
        """(1) A fresh, randomly named entry."""
        entry = self.root / f"cocoguest-{secrets.token_hex(8)}"
        try:
            self._create_entry(entry)
        except OSError as e:
            msg = f"cannot create a configfs-tsm report entry under {self.root}: {e.strerror}"
            raise TeeDeviceError(msg) from e
        return entry

    def _drop_entry(self, entry: Path) -> None:
        """(6) Remove ``entry``; a failure is logged, not raised (the report itself is already decided)."""
        try:
            self._remove_entry(entry)
        except OSError as e:
            _logger.warning("cannot remove configfs-tsm entry %s: %s", entry, e.strerror)

    def _read_provider(self, entry: Path) -> str:
        raw = read_capped(entry / "provider", self._limits.max_tee_register_bytes, "configfs-tsm provider")
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError as e:
            msg = f"configfs-tsm provider of {entry} is not ASCII"
            raise TeeReportError(msg) from e

    def _read_generation(self, entry: Path) -> int:
        raw = read_capped(entry / "generation", self._limits.max_tee_register_bytes, "configfs-tsm generation")
        text = raw.decode("ascii", errors="replace").strip()
        if not text.isdigit() or len(text) > 20:
            msg = f"configfs-tsm generation of {entry} is not a number: {text[:40]!r}"
            raise TeeReportError(msg)
        return int(text)
