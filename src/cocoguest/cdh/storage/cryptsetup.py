"""cryptsetup(8) for LUKS2: format, check, open, close. Each call is one subprocess with a deadline.

Invariants:
    * SECURITY: keys go to cryptsetup on stdin (``--key-file -``), never on a command line or on disk.
    * Arguments are passed as a list (no shell); values were validated by ``request`` before.
    * Every command runs under ``Limits.secure_mount_command_timeout_s``; a failure is a
      :class:`SecureMountError` naming the command, the device and cryptsetup's own message (stderr).
    * ``luksFormat`` parameters follow upstream: LUKS2, aes-xts-plain64, 4096-byte sectors; with integrity
      ``--integrity hmac-sha256 --integrity-no-wipe``. The PBKDF is cryptsetup's default unless a caller
      chooses one (tests use pbkdf2 with the minimum iterations to stay fast).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Final

from cocoguest import jsonutil
from cocoguest.errors import SecureMountError
from cocoguest.limits import DEFAULT_LIMITS, Limits

CIPHER: Final = "aes-xts-plain64"
SECTOR_SIZE: Final = 4096
INTEGRITY: Final = "hmac-sha256"
_ERROR_CHARS: Final = 300


@dataclass(frozen=True)
class Pbkdf:
    """``--pbkdf`` settings; ``None`` fields keep cryptsetup's defaults (argon2id, benchmarked)."""

    kind: str | None = None
    force_iterations: int | None = None


@dataclass(frozen=True)
class LuksHeader:
    """What a LUKS2 header says about its data segment (from ``luksDump --dump-json-metadata``)."""

    cipher: str
    sector_size: int
    integrity: str | None
    keyslots: int


class Cryptsetup:
    """Runs ``binary``; see the module docstring."""

    def __init__(
        self, binary: str = "cryptsetup", *, pbkdf: Pbkdf | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        """Use ``binary`` with ``pbkdf`` for new key slots."""
        self._binary = binary
        self._pbkdf = pbkdf or Pbkdf()
        self._limits = limits

    def _run(self, what: str, args: list[str], key: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self._binary, *args],
                input=key if key is not None else b"",
                capture_output=True,
                timeout=self._limits.secure_mount_command_timeout_s,
                check=False,
            )
        except FileNotFoundError as e:
            msg = f"{what}: {self._binary} not found (install cryptsetup)"
            raise SecureMountError(msg) from e
        except subprocess.TimeoutExpired as e:
            msg = f"{what}: cryptsetup did not finish in {self._limits.secure_mount_command_timeout_s} s"
            raise SecureMountError(msg) from e

    def _check(self, what: str, result: subprocess.CompletedProcess[bytes]) -> None:
        if result.returncode != 0:
            text = " ".join(result.stderr.decode("utf-8", "replace").split())[:_ERROR_CHARS]
            msg = f"{what}: cryptsetup failed (status {result.returncode}): {text}"
            raise SecureMountError(msg)

    def format(self, device: str, key: bytes, *, integrity: bool, header: str | None = None) -> None:
        """``luksFormat`` ``device`` as LUKS2 with ``key`` in slot 0 (optional detached ``header`` file)."""
        args = ["luksFormat", "--batch-mode", "--type", "luks2", "--cipher", CIPHER, "--sector-size", str(SECTOR_SIZE)]
        if integrity:
            args += ["--integrity", INTEGRITY, "--integrity-no-wipe"]
        if self._pbkdf.kind is not None:
            args += ["--pbkdf", self._pbkdf.kind]
        if self._pbkdf.force_iterations is not None:
            args += ["--pbkdf-force-iterations", str(self._pbkdf.force_iterations)]
        if header is not None:
            args += ["--header", header]
        args += ["--key-file", "-", device]
        self._check(f"luksFormat {device}", self._run(f"luksFormat {device}", args, key))

    def is_luks2(self, device: str, *, header: str | None = None) -> bool:
        """Whether ``device`` (or its detached ``header``) holds a LUKS2 header."""
        args = ["isLuks", "--type", "luks2", *(["--header", header] if header else []), device]
        return self._run(f"isLuks {device}", args).returncode == 0

    def header(self, device: str, *, header: str | None = None) -> LuksHeader:
        """The data segment's parameters, parsed from the (untrusted) JSON metadata of the header."""
        what = f"luksDump {device}"
        args = ["luksDump", "--dump-json-metadata", *(["--header", header] if header else []), device]
        result = self._run(what, args)
        self._check(what, result)
        untrusted = jsonutil.load_object(result.stdout, f"LUKS2 metadata of {device}", SecureMountError)
        segments = untrusted.get("segments")
        keyslots = untrusted.get("keyslots")
        if not isinstance(segments, dict) or len(segments) != 1 or not isinstance(keyslots, dict):
            msg = f"LUKS2 metadata of {device}: expected exactly one data segment"
            raise SecureMountError(msg)
        segment = next(iter(segments.values()))
        if not isinstance(segment, dict) or segment.get("type") != "crypt":
            msg = f"LUKS2 metadata of {device}: the data segment is not of type crypt"
            raise SecureMountError(msg)
        cipher, sector = segment.get("encryption"), segment.get("sector_size")
        integrity = segment.get("integrity")
        integrity_type = integrity.get("type") if isinstance(integrity, dict) else None
        if not isinstance(cipher, str) or not isinstance(sector, int):
            msg = f"LUKS2 metadata of {device}: the data segment has no cipher or sector size"
            raise SecureMountError(msg)
        return LuksHeader(cipher, sector, integrity_type if isinstance(integrity_type, str) else None, len(keyslots))

    def test_key(self, device: str, key: bytes, *, header: str | None = None) -> bool:
        """Whether ``key`` opens a key slot of ``device`` (``open --test-passphrase``; maps nothing)."""
        args = ["open", "--test-passphrase", *(["--header", header] if header else []), "--key-file", "-", device]
        return self._run(f"open --test-passphrase {device}", args, key).returncode == 0

    def open(self, device: str, name: str, key: bytes, *, header: str | None = None) -> str:
        """Map ``device`` as ``/dev/mapper/<name>`` (needs device-mapper); returns that path."""
        args = ["open", "--type", "luks2", *(["--header", header] if header else []), "--key-file", "-", device, name]
        self._check(f"open {device} as {name}", self._run(f"open {device}", args, key))
        return f"/dev/mapper/{name}"

    def close(self, name: str) -> None:
        """Unmap ``/dev/mapper/<name>``."""
        self._check(f"close {name}", self._run(f"close {name}", ["close", name]))
