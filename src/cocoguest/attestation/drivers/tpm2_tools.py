"""A :class:`TpmDevice` over tpm2-tools (``tpm2_quote``, ``tpm2_pcrextend``, ``tpm2_pcrread``, ``tpm2_readpublic``).

The TCTI is explicit on every command (``-T``; default the kernel resource manager ``device:/dev/tpmrm0``), so
nothing depends on the environment. The attestation key must already be persistent at ``ak_handle`` (upstream's
default ``0x81010002``, ``AA_TPM_AK_HANDLE``); provisioning it is the platform's job.

Invariants:
    * Every command has a timeout (``Limits.tpm_command_timeout_s``); a failure is a :class:`TeeDeviceError`
      carrying the tool's last stderr line.
    * Outputs are read from a private temporary directory with size caps.
    * Tested against a real software TPM (swtpm) in ``tests/unit/test_attest_swtpm.py``.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Final

from cocoguest.attestation.devfs import read_capped
from cocoguest.attestation.drivers.tpm_quote import PCR_COUNT, PCR_SIZE, TpmQuote
from cocoguest.errors import TeeDeviceError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_TCTI: Final = "device:/dev/tpmrm0"
DEFAULT_AK_HANDLE: Final = 0x81010002


class Tpm2ToolsTpm:
    """A TPM reached through tpm2-tools (see the module docstring)."""

    def __init__(
        self, tcti: str = DEFAULT_TCTI, ak_handle: int = DEFAULT_AK_HANDLE, *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.tcti = tcti
        self.ak_handle = ak_handle
        self._limits = limits

    def _run(self, tool: str, *args: str) -> None:
        try:
            subprocess.run(
                [tool, "-T", self.tcti, *args],
                capture_output=True,
                check=True,
                timeout=self._limits.tpm_command_timeout_s,
            )
        except FileNotFoundError as e:
            msg = f"{tool} is not installed (tpm2-tools)"
            raise TeeDeviceError(msg) from e
        except subprocess.TimeoutExpired as e:
            msg = f"{tool} on TPM {self.tcti} timed out after {self._limits.tpm_command_timeout_s} s"
            raise TeeDeviceError(msg) from e
        except subprocess.CalledProcessError as e:
            lines = e.stderr.decode("utf-8", "replace").strip().splitlines()
            msg = f"{tool} on TPM {self.tcti} failed: {lines[-1][:200] if lines else f'exit status {e.returncode}'}"
            raise TeeDeviceError(msg) from e

    def _read(self, path: Path, what: str) -> bytes:
        return read_capped(path, self._limits.max_tee_report_bytes, what)

    def quote(self, nonce: bytes) -> TpmQuote:
        """A quote with the AK over all 24 SHA-256 PCRs, ``nonce`` as qualifying data."""
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            out = Path(scratch)
            self._run(
                "tpm2_quote",
                "-c", hex(self.ak_handle),
                "-l", "sha256:all",
                "-q", nonce.hex(),
                "-g", "sha256",
                "-m", str(out / "message"),
                "-s", str(out / "signature"),
                "-o", str(out / "pcrs"),
                "-F", "values",
            )  # fmt: skip
            pcrs = self._read(out / "pcrs", "TPM quote PCR values")
            if len(pcrs) != PCR_COUNT * PCR_SIZE:
                msg = f"tpm2_quote returned {len(pcrs)} bytes of PCR values (expected {PCR_COUNT * PCR_SIZE})"
                raise TeeReportError(msg)
            return TpmQuote(
                signature=self._read(out / "signature", "TPM quote signature"),
                message=self._read(out / "message", "TPM quote message"),
                pcrs=tuple(pcrs[i : i + PCR_SIZE] for i in range(0, len(pcrs), PCR_SIZE)),
            )

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Extend SHA-256 PCR ``index``."""
        if len(digest) != PCR_SIZE:
            msg = f"a SHA-256 PCR extend needs 32 bytes, got {len(digest)}"
            raise TeeDeviceError(msg)
        self._run("tpm2_pcrextend", f"{index}:sha256={digest.hex()}")

    def read_pcr(self, index: int) -> bytes:
        """SHA-256 PCR ``index``."""
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            out = Path(scratch) / "pcr"
            self._run("tpm2_pcrread", f"sha256:{index}", "-o", str(out))
            value = self._read(out, "TPM PCR value")
        if len(value) != PCR_SIZE:
            msg = f"tpm2_pcrread returned {len(value)} bytes for PCR {index}"
            raise TeeReportError(msg)
        return value

    def ak_public_der(self) -> bytes:
        """The AK public key as DER SubjectPublicKeyInfo (the ``ak_public`` evidence field)."""
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            out = Path(scratch) / "ak.der"
            self._run("tpm2_readpublic", "-c", hex(self.ak_handle), "-f", "der", "-o", str(out))
            return self._read(out, "TPM AK public key")
