"""TD quotes on kernels without configfs-tsm: the TD report goes to Intel's Quote Generation Service (QGS).

As ``libtdx_attest`` (Intel DCAP ``tdx_attest.c``) does it, minus its configfs step (the attester already tried
configfs-tsm):

1. If ``/etc/tdx-attest.conf`` names a vsock port (``port = 4050``; parsed by :func:`read_qgs_port` with
   libtdx_attest's rules), send the framed ``GET_QUOTE_REQ`` to the QGS on the host (vsock CID 2, that port)
   and read the framed ``GET_QUOTE_RESP`` (:class:`QgsClient`).
2. Otherwise hand the same framed request to the VMM in a GetQuote shared buffer through the
   ``TDX_CMD_GET_QUOTE`` ioctl of ``/dev/tdx_guest`` (:class:`TdxGetQuoteIoctl`; only Intel's pre-configfs
   kernels have it, mainline answers ``ENOTTY``).

The byte layouts are in :mod:`~cocoguest.attestation.drivers.tdx_qgs_msg`.

Invariants:
    * A QGS answer is read with a cap (``Limits.tdx_quote_buffer_bytes`` less the GetQuote headers, the
      buffer libtdx_attest uses) and one deadline for the whole exchange (``Limits.tdx_qgs_timeout_s``).
    * Errors name the QGS endpoint or the device, and carry the QGS error code or VMM status
      (:class:`QuoteServiceError`).
    * The transport is a :class:`QgsEndpoint` (address family + address): production uses vsock; tests use TCP or
      unix sockets through the same client code, and an emulated ioctl for the GetQuote path.

Verified here only against a fake QGS written from the protocol description (tests/fixtures/fake_qgs.py) over
TCP, and an emulated ``/dev/tdx_guest`` that reads and writes the GetQuote buffer through the pointer in the ioctl
argument; never against a real QGS, a real vsock or a TDX kernel.
"""

from __future__ import annotations

import ctypes
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.attestation.devfs import read_capped
from cocoguest.attestation.drivers.ioctl import IoctlCall, ior, system_ioctl, with_device
from cocoguest.attestation.drivers.tdx_qgs_msg import (
    GET_QUOTE_OVERHEAD,
    LENGTH_PREFIX,
    decode_get_quote_buffer,
    decode_get_quote_response,
    encode_get_quote_buffer,
    encode_get_quote_request,
    frame,
    frame_length,
)
from cocoguest.errors import ConfigError, TeeDeviceError, TeeReportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_TDX_ATTEST_CONF: Final = Path("/etc/tdx-attest.conf")
VMADDR_CID_HOST: Final = 2
_WS: Final = rb"[ \t\n\v\f\r]*"
_COMMENT: Final = re.compile(_WS + rb"#")
_PORT_LINE: Final = re.compile(_WS + rb"port" + _WS + rb"=" + _WS + rb"([0-9]{1,10})" + _WS)
_U32_MAX: Final = 0xFFFF_FFFF


class _QuoteRequest(ctypes.Structure):
    """``struct tdx_quote_req { __u64 buf; __u64 len; }`` (libtdx_attest)."""

    _fields_ = (("buf", ctypes.c_uint64), ("len", ctypes.c_uint64))


TDX_CMD_GET_QUOTE: Final = ior("T", 4, ctypes.sizeof(_QuoteRequest))
"""``_IOR('T', 4, struct tdx_quote_req)``: libtdx_attest's default (its ``V3_DRIVER`` build uses ``_IOWR``)."""


def read_qgs_port(path: Path = DEFAULT_TDX_ATTEST_CONF, *, limits: Limits = DEFAULT_LIMITS) -> int | None:
    """The QGS vsock port ``path`` names, or ``None`` (no file, no usable ``port`` line), as libtdx_attest reads it.

    Lines whose first non-blank character is ``#`` are comments; the first line that is exactly
    ``port = <1-10 digits>`` (blanks allowed around each token) decides; ``0`` or a value above 2**32-1 there
    means "no port", as upstream. Other lines are ignored.

    Raises:
        TeeDeviceError: the file exists but cannot be read.
        TeeReportError: the file is larger than ``Limits.max_aa_config_bytes``.
    """
    if not path.exists():
        return None
    for line in read_capped(path, limits.max_aa_config_bytes, "TDX attest config").split(b"\n"):
        if _COMMENT.match(line):
            continue
        found = _PORT_LINE.fullmatch(line)
        if found is not None:
            port = int(found.group(1))
            return port if 0 < port <= _U32_MAX else None
    return None


@dataclass(frozen=True, slots=True)
class QgsEndpoint:
    """Where the QGS listens: a socket address family and an address for it."""

    family: int
    address: tuple[int, int] | tuple[str, int] | str

    @classmethod
    def vsock(cls, port: int, cid: int = VMADDR_CID_HOST) -> QgsEndpoint:
        """The QGS on the host (libtdx_attest: ``AF_VSOCK``, ``VMADDR_CID_HOST``)."""
        return cls(socket.AF_VSOCK, (cid, port))

    @classmethod
    def tcp(cls, host: str, port: int) -> QgsEndpoint:
        """A QGS on TCP (tests; also a QGS proxied to TCP)."""
        return cls(socket.AF_INET, (host, port))

    @classmethod
    def unix(cls, path: Path) -> QgsEndpoint:
        """A QGS on a unix socket (tests)."""
        return cls(socket.AF_UNIX, str(path))

    def __str__(self) -> str:
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        scheme = "vsock" if self.family == socket.AF_VSOCK else "tcp"
        return f"{scheme}:{self.address[0]}:{self.address[1]}"


class QgsClient:
    """A :class:`~cocoguest.attestation.drivers.tdx.TdQuoteGenerator` talking to the QGS at one endpoint."""

    def __init__(self, endpoint: QgsEndpoint, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.endpoint = endpoint
        self._limits = limits

    def quote(self, td_report: bytes) -> bytes:
        """A TD quote for ``td_report`` from the QGS (one connection per quote, as libtdx_attest).

        Raises:
            TeeDeviceError: the QGS cannot be reached, times out or closes without answering.
            QuoteServiceError: the QGS answered with an error code.
            TeeReportError: the answer is oversized, truncated or malformed.
        """
        max_message = self._limits.tdx_quote_buffer_bytes - GET_QUOTE_OVERHEAD
        request = frame(encode_get_quote_request(td_report))
        if len(request) - LENGTH_PREFIX.size > max_message:
            msg = f"Limits.tdx_quote_buffer_bytes cannot hold a {len(request)}-byte QGS request"
            raise ConfigError(msg)
        # SECURITY: one deadline for the whole exchange, and the answer's length is capped before it is read, so
        # a host-side QGS cannot stall the agent or make it allocate without bound.
        deadline = time.monotonic() + self._limits.tdx_qgs_timeout_s
        try:
            with socket.socket(self.endpoint.family, socket.SOCK_STREAM) as sock:
                sock.settimeout(_remaining(deadline))
                sock.connect(self.endpoint.address)
                sock.settimeout(_remaining(deadline))
                sock.sendall(request)
                prefix = self._receive(sock, LENGTH_PREFIX.size, deadline, answer_started=False)
                message = self._receive(sock, frame_length(prefix, max_message), deadline, answer_started=True)
        except TimeoutError as e:
            msg = f"TDX QGS at {self.endpoint} did not answer within {self._limits.tdx_qgs_timeout_s} s"
            raise TeeDeviceError(msg, retryable=True) from e
        except OSError as e:
            msg = f"cannot get a quote from the TDX QGS at {self.endpoint}: {e.strerror or e}"
            raise TeeDeviceError(msg, retryable=True) from e
        return decode_get_quote_response(message)

    def _receive(self, sock: socket.socket, count: int, deadline: float, *, answer_started: bool) -> bytes:
        received = bytearray()
        while len(received) < count:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(count - len(received))
            if not chunk:
                if not received and not answer_started:
                    msg = f"TDX QGS at {self.endpoint} closed the connection without answering"
                    raise TeeDeviceError(msg)
                msg = f"TDX QGS answer from {self.endpoint} is truncated: {len(received)} of {count} bytes"
                raise TeeReportError(msg)
            received += chunk
        return bytes(received)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


class TdxGetQuoteIoctl:
    """A TdQuoteGenerator through ``TDX_CMD_GET_QUOTE`` on ``/dev/tdx_guest`` (TDVMCALL GetQuote; see above)."""

    def __init__(self, device: Path, *, ioctl: IoctlCall = system_ioctl, limits: Limits = DEFAULT_LIMITS) -> None:
        self.device = device
        self._ioctl = ioctl
        self._limits = limits

    def quote(self, td_report: bytes) -> bytes:
        """A TD quote for ``td_report`` from the VMM's quote service.

        Raises:
            TeeDeviceError: the device cannot be opened or the ioctl failed (``ENOTTY`` on mainline kernels).
            QuoteServiceError: the VMM's status or the QGS's error code says it failed.
            TeeReportError: the answer in the buffer is malformed.
        """
        size = self._limits.tdx_quote_buffer_bytes
        buffer = (ctypes.c_char * size).from_buffer_copy(encode_get_quote_buffer(td_report, size))
        request = _QuoteRequest(ctypes.addressof(buffer), size)
        with_device(
            self.device,
            "TDX guest device",
            self._ioctl,
            lambda device: device.call("TDX_CMD_GET_QUOTE", TDX_CMD_GET_QUOTE, request),
        )
        return decode_get_quote_response(decode_get_quote_buffer(buffer.raw))


class TdxAttestQuoteGenerator:
    """libtdx_attest's choice without configfs: the QGS over vsock when a port is configured, else the ioctl.

    The config file is read on every quote, as upstream does.
    """

    def __init__(
        self,
        *,
        device: Path,
        conf_path: Path = DEFAULT_TDX_ATTEST_CONF,
        endpoint_for_port: Callable[[int], QgsEndpoint] = QgsEndpoint.vsock,
        ioctl: IoctlCall = system_ioctl,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._conf_path = conf_path
        self._endpoint_for_port = endpoint_for_port
        self._ioctl_generator = TdxGetQuoteIoctl(device, ioctl=ioctl, limits=limits)
        self._limits = limits

    def quote(self, td_report: bytes) -> bytes:
        """See :class:`QgsClient` and :class:`TdxGetQuoteIoctl`."""
        port = read_qgs_port(self._conf_path, limits=self._limits)
        if port is not None:
            return QgsClient(self._endpoint_for_port(port), limits=self._limits).quote(td_report)
        return self._ioctl_generator.quote(td_report)
