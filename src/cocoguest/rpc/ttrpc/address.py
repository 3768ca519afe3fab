"""ttrpc addresses (specs/ttrpc.md §1): ``unix:///path``, abstract ``unix://@name``, ``vsock://CID:PORT``. Sans-IO.

Invariant: :func:`parse_address` returns a well-formed address or raises :class:`~cocoguest.errors.ConfigError`
naming the address; ``tcp://`` (ttrpc-rust only, never used by the guest components) is an
:class:`~cocoguest.errors.UnsupportedError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cocoguest.errors import ConfigError, UnsupportedError

VMADDR_CID_ANY: Final = 0xFFFF_FFFF
"""vsock "any CID" (``vsock://-1:PORT`` as kata-agent writes it)."""
VMADDR_PORT_ANY: Final = 0xFFFF_FFFF
"""vsock "any port": the kernel picks one."""
_MAX_UNIX_PATH: Final = 107  # sun_path is 108 bytes including the NUL (unix(7))


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix socket: a filesystem ``path``, or an abstract ``name`` when ``abstract`` is set."""

    path: str
    abstract: bool = False

    @property
    def sockaddr(self) -> str:
        """The address for ``bind``/``connect``: abstract names start with a NUL byte."""
        return "\0" + self.path if self.abstract else self.path

    def __str__(self) -> str:
        return f"unix://@{self.path}" if self.abstract else f"unix://{self.path}"


@dataclass(frozen=True, slots=True)
class VsockAddress:
    """A vsock endpoint: context id and port (u32 each)."""

    cid: int
    port: int

    def __str__(self) -> str:
        cid = "-1" if self.cid == VMADDR_CID_ANY else str(self.cid)
        return f"vsock://{cid}:{self.port}"


Address = UnixAddress | VsockAddress


def parse_address(text: str) -> Address:
    """Parse a ttrpc address.

    Raises:
        ConfigError: not a ``unix://`` or ``vsock://`` address, or a malformed one.
        UnsupportedError: a ``tcp://`` address.
    """
    if text.startswith("unix://"):
        rest = text.removeprefix("unix://")
        abstract = rest.startswith("@")
        path = rest[1:] if abstract else rest
        if not path or "\0" in path or len(path.encode()) > _MAX_UNIX_PATH:
            msg = f"ttrpc address {text!r}: the unix socket path is empty, contains NUL or is too long"
            raise ConfigError(msg)
        if not abstract and not path.startswith("/"):
            msg = f"ttrpc address {text!r}: a unix socket path must be absolute (unix:///path)"
            raise ConfigError(msg)
        return UnixAddress(path=path, abstract=abstract)
    if text.startswith("vsock://"):
        cid_text, sep, port_text = text.removeprefix("vsock://").partition(":")
        cid = _u32(text, cid_text, "CID")
        port = _u32(text, port_text, "port") if sep else None
        if port is None:
            msg = f"ttrpc address {text!r}: expected vsock://CID:PORT"
            raise ConfigError(msg)
        return VsockAddress(cid=cid, port=port)
    if text.startswith("tcp://"):
        msg = f"ttrpc address {text!r}: tcp transport is not supported (use unix:// or vsock://)"
        raise UnsupportedError(msg)
    msg = f"ttrpc address {text!r}: expected unix:///path, unix://@name or vsock://CID:PORT"
    raise ConfigError(msg)


def _u32(text: str, field: str, what: str) -> int:
    if field == "-1":
        return 0xFFFF_FFFF
    if not field.isascii() or not field.isdigit() or len(field) > 10 or int(field) > 0xFFFF_FFFF:
        msg = f"ttrpc address {text!r}: the vsock {what} {field!r} is not a u32 (or -1)"
        raise ConfigError(msg)
    return int(field)
