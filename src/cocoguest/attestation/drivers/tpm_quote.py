"""TPM 2.0 quote values shared by the ``tpm``, ``az-snp-vtpm`` and ``az-tdx-vtpm`` attesters.

:class:`TpmDevice` is the interface to a (v)TPM: quote with the attestation key over the 24 SHA-256 PCRs, extend
and read a PCR. The built-in implementations run tpm2-tools (``tpm2_tools.py``, ``azure_vtpm_device.py``); unit
tests also pass a software model that computes real PCR extends.

Invariant: SECURITY: :func:`check_quote_nonce` refuses a quote whose TPMS_ATTEST ``extraData`` is not our nonce.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Final, Protocol

from cocoguest.errors import TeeReportError

PCR_COUNT: Final = 24
PCR_SIZE: Final = 32
INIT_DATA_PCR: Final = 8
_TPM_GENERATED_VALUE: Final = 0xFF544347
_TPM_ST_ATTEST_QUOTE: Final = 0x8018


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """A quote: the AK signature, the signed TPMS_ATTEST message, and the 24 SHA-256 PCR values."""

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]


class TpmDevice(Protocol):
    """A TPM 2.0 with an attestation key (see the module docstring)."""

    def quote(self, nonce: bytes) -> TpmQuote:
        """A quote over all 24 SHA-256 PCRs with ``nonce`` as qualifying data.

        Raises:
            TeeDeviceError: the TPM failed.
        """
        ...

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Extend SHA-256 PCR ``index`` with the 32-byte ``digest``.

        Raises:
            TeeDeviceError: the TPM failed.
        """
        ...

    def read_pcr(self, index: int) -> bytes:
        """The SHA-256 PCR ``index``.

        Raises:
            TeeDeviceError: the TPM failed.
        """
        ...


def check_quote_nonce(quote: TpmQuote, nonce: bytes) -> None:
    """Refuse a quote that is not a TPM quote over ``nonce`` or does not list 24 PCRs.

    Raises:
        TeeReportError: wrong magic or type, truncated, another nonce, or a wrong PCR list.
    """
    message = quote.message
    try:
        magic, kind, signer_size = struct.unpack_from(">IHH", message, 0)
        at = 8 + signer_size
        (extra_size,) = struct.unpack_from(">H", message, at)
    except struct.error as e:
        msg = "TPM quote message (TPMS_ATTEST) is truncated"
        raise TeeReportError(msg) from e
    if magic != _TPM_GENERATED_VALUE or kind != _TPM_ST_ATTEST_QUOTE:
        msg = f"TPM quote message has magic 0x{magic:08x} type 0x{kind:04x}, not a TPM-generated quote"
        raise TeeReportError(msg)
    extra = message[at + 2 : at + 2 + extra_size]
    if len(extra) != extra_size or not hmac.compare_digest(extra, nonce):
        msg = "TPM quote does not carry the requested nonce"
        raise TeeReportError(msg)
    if len(quote.pcrs) != PCR_COUNT or any(len(p) != PCR_SIZE for p in quote.pcrs):
        msg = f"TPM quote lists {len(quote.pcrs)} PCR values (expected {PCR_COUNT} of {PCR_SIZE} bytes)"
        raise TeeReportError(msg)
