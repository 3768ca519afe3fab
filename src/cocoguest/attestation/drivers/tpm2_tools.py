"""A :class:`TpmDevice` over tpm2-tools (``tpm2_quote``, ``tpm2_pcrextend``, ``tpm2_pcrread``, ``tpm2_readpublic``).

The TCTI is explicit on every command (``-T``; default the kernel resource manager ``device:/dev/tpmrm0``), so
nothing depends on the environment. The attestation key must already be persistent at ``ak_handle`` (upstream's
default ``0x81010002``, ``AA_TPM_AK_HANDLE``; the Azure vTPM's ``0x81000003``); provisioning it is the platform's
job: like upstream's tpm attester, nothing here creates a missing AK (:meth:`Tpm2ToolsTpm.ak_public_der` names the
handle and how to provision it).

The quote signature is a marshalled TPMT_SIGNATURE (upstream's ``tpm`` attester) or, with
``raw_signature=True``, the bare RSA signature (upstream's Azure vTPM attesters). The NV methods (owner auth)
serve the Azure HCL report request.

Invariants:
    * Every command has a timeout (``Limits.tpm_command_timeout_s``); a failure is a :class:`TeeDeviceError`
      carrying the tool's last stderr line.
    * Outputs are read from a private temporary directory with size caps.
    * Tested against a real software TPM (swtpm) in ``tests/unit/test_attest_swtpm.py`` and
      ``tests/unit/test_attest_azure_swtpm.py``.
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
        self,
        tcti: str = DEFAULT_TCTI,
        ak_handle: int = DEFAULT_AK_HANDLE,
        *,
        raw_signature: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.tcti = tcti
        self.ak_handle = ak_handle
        self._signature_format = "plain" if raw_signature else "tss"
        self._limits = limits

    def _run(self, tool: str, *args: str) -> bytes:
        """The tool's stdout (its output files are read separately, capped)."""
        try:
            done = subprocess.run(
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
        return done.stdout[: self._limits.max_tee_report_bytes]

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
                "-f", self._signature_format,
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
        """The AK public key as DER SubjectPublicKeyInfo (the ``ak_public`` evidence field).

        Raises:
            TeeDeviceError: no key at the AK handle (it is never created here), or the TPM failed.
        """
        if self.ak_handle not in self._handles("handles-persistent"):
            msg = (
                f"no attestation key at persistent handle {self.ak_handle:#x} of TPM {self.tcti}: provision one "
                "(tpm2_createak, then tpm2_evictcontrol to that handle) or set AA_TPM_AK_HANDLE"
            )
            raise TeeDeviceError(msg)
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            out = Path(scratch) / "ak.der"
            self._run("tpm2_readpublic", "-c", hex(self.ak_handle), "-f", "der", "-o", str(out))
            return self._read(out, "TPM AK public key")

    def _handles(self, capability: str) -> set[int]:
        """The handles ``tpm2_getcap`` lists for ``capability`` (a YAML list of hex numbers)."""
        listing = self._run("tpm2_getcap", capability).decode("ascii", "replace")
        handles: set[int] = set()
        for line in listing.splitlines():
            item = line.strip().removeprefix("- ")
            try:
                handles.add(int(item, 16))
            except ValueError:
                continue
        return handles

    def nv_size(self, index: int) -> int | None:
        """The data size of NV index ``index``, or ``None`` when it is not defined."""
        if index not in self._handles("handles-nv-index"):
            return None
        for line in self._run("tpm2_nvreadpublic", hex(index)).decode("ascii", "replace").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "size" and value.strip().isdigit():
                return int(value)
        msg = f"tpm2_nvreadpublic on TPM {self.tcti} gave no size for NV index {index:#x}"
        raise TeeReportError(msg)

    def nv_define(self, index: int, size: int) -> None:
        """Define NV index ``index`` of ``size`` bytes, owner read/write (as upstream's Azure report request)."""
        self._run("tpm2_nvdefine", "-C", "o", "-s", str(size), "-a", "ownerread|ownerwrite", hex(index))

    def nv_undefine(self, index: int) -> None:
        """Remove NV index ``index``."""
        self._run("tpm2_nvundefine", "-C", "o", hex(index))

    def nv_write(self, index: int, data: bytes) -> None:
        """Write ``data`` at offset 0 of NV index ``index`` (owner auth)."""
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            source = Path(scratch) / "data"
            source.write_bytes(data)
            self._run("tpm2_nvwrite", "-C", "o", "-i", str(source), hex(index))

    def nv_read(self, index: int, what: str) -> bytes:
        """The whole content of NV index ``index`` (owner auth; at most ``Limits.max_tee_report_bytes``)."""
        with tempfile.TemporaryDirectory(prefix="cocoguest-tpm-") as scratch:
            out = Path(scratch) / "nv"
            self._run("tpm2_nvread", "-C", "o", "-o", str(out), hex(index))
            return self._read(out, what)
