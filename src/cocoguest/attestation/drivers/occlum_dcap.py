"""SGX DCAP quotes inside an Occlum enclave: the ``/dev/sgx`` ioctls of Occlum's LibOS.

What Occlum's ``occlum_dcap`` library (tools/toolchains/dcap_lib) does, and guest-components' SGX attester
through it:

1. Open ``/dev/sgx`` read-only.
2. ``SGXIOC_GET_DCAP_QUOTE_SIZE`` = ``_IOR('s', 7, u32)`` (0x80047307): the LibOS writes the quote size.
3. ``SGXIOC_GEN_DCAP_QUOTE`` = ``_IOWR('s', 8, struct)`` (0xc0187308) with
   ``struct { const sgx_report_data_t *report_data; u32 *quote_len; u8 *quote_buf; }``: the LibOS reads the
   64-byte report data and the buffer length through the pointers (``EINVAL`` if the buffer is smaller than the
   quote) and copies the quote into the buffer. It does not update ``*quote_len`` today; a smaller value
   written there is honoured.

Invariants:
    * The quote size the LibOS announces is capped by ``Limits.max_tee_report_bytes`` before anything is
      allocated; the pointers passed stay alive for the whole call.
    * Errors name ``/dev/sgx`` and the ioctl.

Verified here only against an emulated LibOS ``ioctl`` that decodes the argument with its own layout and reads
and writes the caller's memory through the three pointers (so a wrong struct layout fails the tests), answering
with Trustee's recorded Occlum quote or a synthetic one; never inside a real Occlum enclave.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Final

from cocoguest.attestation.attester import Tee, fit_report_data
from cocoguest.attestation.drivers.ioctl import DeviceSession, IoctlCall, ior, iowr, system_ioctl, with_device
from cocoguest.errors import TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_OCCLUM_SGX_DEVICE: Final = Path("/dev/sgx")
REPORT_DATA_SIZE: Final = 64


class _GenDcapQuoteArg(ctypes.Structure):
    """Occlum's ``IoctlGenDCAPQuoteArg`` (``#[repr(C)]``, three pointers)."""

    _fields_ = (("report_data", ctypes.c_void_p), ("quote_len", ctypes.c_void_p), ("quote_buf", ctypes.c_void_p))


SGXIOC_GET_DCAP_QUOTE_SIZE: Final = ior("s", 7, ctypes.sizeof(ctypes.c_uint32))
SGXIOC_GEN_DCAP_QUOTE: Final = iowr("s", 8, ctypes.sizeof(_GenDcapQuoteArg))


class OcclumDcapDevice:
    """A :class:`~cocoguest.attestation.drivers.sgx.DcapQuoteLibrary` over Occlum's ``/dev/sgx``."""

    def __init__(
        self,
        path: Path = DEFAULT_OCCLUM_SGX_DEVICE,
        *,
        ioctl: IoctlCall = system_ioctl,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.path = path
        self._ioctl = ioctl
        self._limits = limits

    def quote(self, report_data: bytes) -> bytes:
        """An SGX DCAP quote binding ``report_data`` (zero-padded to 64 bytes).

        Raises:
            AttestationRequestError: ``report_data`` is longer than 64 bytes.
            TeeDeviceError: ``/dev/sgx`` cannot be opened or an ioctl failed.
            TeeReportError: the announced quote size is 0 or above the cap, or the written length is invalid.
        """
        padded = fit_report_data(report_data, REPORT_DATA_SIZE, Tee.SGX)
        return with_device(
            self.path, "Occlum SGX device", self._ioctl, lambda d: self._quote(d, padded), flags=os.O_RDONLY
        )

    def _quote(self, device: DeviceSession, padded: bytes) -> bytes:
        size = ctypes.c_uint32(0)
        device.call("SGXIOC_GET_DCAP_QUOTE_SIZE", SGXIOC_GET_DCAP_QUOTE_SIZE, size)
        cap = self._limits.max_tee_report_bytes
        # SECURITY: the LibOS's size decides an allocation; cap it before allocating.
        if not 0 < size.value <= cap:
            msg = f"Occlum {self.path} announces a DCAP quote of {size.value} bytes (allowed: 1 to {cap})"
            raise TeeReportError(msg)
        report_data = (ctypes.c_uint8 * REPORT_DATA_SIZE).from_buffer_copy(padded)
        quote_len = ctypes.c_uint32(size.value)
        quote_buf = ctypes.create_string_buffer(size.value)
        arg = _GenDcapQuoteArg(ctypes.addressof(report_data), ctypes.addressof(quote_len), ctypes.addressof(quote_buf))
        device.call("SGXIOC_GEN_DCAP_QUOTE", SGXIOC_GEN_DCAP_QUOTE, arg)
        # SECURITY: never read past the buffer we own, whatever length the LibOS wrote back.
        if not 0 < quote_len.value <= size.value:
            msg = f"Occlum {self.path} wrote a quote length of {quote_len.value} (buffer: {size.value} bytes)"
            raise TeeReportError(msg)
        return quote_buf.raw[: quote_len.value]
