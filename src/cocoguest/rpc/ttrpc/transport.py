"""Sockets for ttrpc: listen on and connect to a parsed :mod:`~cocoguest.rpc.ttrpc.address`.

Invariants:
    * Every OS error is translated here into :class:`~cocoguest.errors.TransportError` naming the address.
    * A unix socket path is bound after removing a stale *socket* left by an earlier run (as the Rust AA and
      CDH do); any other file at that path is an error, never removed.
    * vsock needs ``AF_VSOCK`` in Python and a vsock transport in the kernel (``vhost_vsock`` on a host,
      ``vmw_vsock_virtio_transport`` in a guest, ``vsock_loopback`` for local tests).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

from cocoguest.errors import ConfigError, TransportError, UnsupportedError
from cocoguest.rpc.ttrpc.address import Address, UnixAddress, VsockAddress


def _new_socket(address: Address) -> socket.socket:
    if isinstance(address, UnixAddress):
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        msg = f"ttrpc address {address}: this Python has no AF_VSOCK"
        raise UnsupportedError(msg)
    try:
        return socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        msg = f"ttrpc address {address}: the kernel has no vsock transport ({e.strerror})"
        raise UnsupportedError(msg) from e


def _remove_stale_socket(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        msg = f"ttrpc address unix://{path}: the path exists and is not a socket"
        raise ConfigError(msg)
    os.unlink(path)


def bind_listener(address: Address, *, backlog: int = 128) -> socket.socket:
    """Return a non-blocking listening socket bound to ``address``.

    Raises:
        TransportError: the bind or listen failed.
        UnsupportedError: vsock is not available.
        ConfigError: a non-socket file occupies the unix socket path.
    """
    sock = _new_socket(address)
    try:
        if isinstance(address, UnixAddress):
            if not address.abstract:
                Path(address.path).parent.mkdir(parents=True, exist_ok=True)
                _remove_stale_socket(address.path)
            sock.bind(address.sockaddr)
        else:
            sock.bind((address.cid, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        msg = f"cannot listen on ttrpc address {address}: {e.strerror or e}"
        raise TransportError(msg) from e
    except BaseException:
        sock.close()
        raise
    return sock


def bound_address(address: Address, sock: socket.socket) -> Address:
    """The address ``sock`` is actually bound to (the kernel's port for a vsock "any port" bind)."""
    if isinstance(address, VsockAddress):
        port = sock.getsockname()[1]
        return VsockAddress(cid=address.cid, port=int(port))
    return address


async def open_connection(
    address: Address, *, timeout_s: float, read_limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address`` within ``timeout_s``.

    Raises:
        TransportError: refused, unreachable or timed out (retryable).
        UnsupportedError: vsock is not available.
    """
    sock = _new_socket(address)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(address, UnixAddress):
                await loop.sock_connect(sock, address.sockaddr)
            else:
                await loop.sock_connect(sock, (address.cid, address.port))
            return await asyncio.open_connection(sock=sock, limit=read_limit)
    except TimeoutError as e:
        sock.close()
        msg = f"cannot connect to ttrpc address {address}: no answer within {timeout_s:g}s"
        raise TransportError(msg, retryable=True) from e
    except OSError as e:
        sock.close()
        msg = f"cannot connect to ttrpc address {address}: {e.strerror or e}"
        raise TransportError(msg, retryable=True) from e
    except BaseException:
        sock.close()
        raise
