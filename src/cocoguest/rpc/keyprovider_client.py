"""The gRPC key provider transport (``keyprovider.KeyProviderService``, ocicrypt.md §5.5) and transport_for().

The request and answer JSON travel in the single ``bytes`` field (number 1) of
``keyProviderKeyWrapProtocolInput`` / ``keyProviderKeyWrapProtocolOutput``; ``wrap`` calls ``WrapKey`` and
``unwrap`` calls ``UnWrapKey``.

Invariants:
    * One insecure channel per call (as Go), closed afterwards; every call has a deadline
      (``Limits.keyprovider_timeout_s``; Go has none) and the answer is capped at
      ``Limits.keyprovider_max_response_bytes``.
    * gRPC failures are translated here: ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` are retryable
      :class:`~cocoguest.errors.TransportError`; an oversized answer is a
      :class:`~cocoguest.errors.ProtocolError`; any other status came from the provider's handler and is a
      :class:`~cocoguest.ocicrypt.keyprovider.protocol.ProviderFailedError`.
    * SECURITY: the channel is plaintext, and the answer to ``UnWrapKey`` is a layer key. Go's ``grpc-tls``
      is refused by the config loader; a target that is neither loopback nor a unix socket is logged as a
      warning.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Final

import grpc

from cocoguest.errors import ProtocolError, TransportError, UnsupportedError
from cocoguest.limits import Limits
from cocoguest.ocicrypt.keyprovider.cmd import CommandTransport
from cocoguest.ocicrypt.keyprovider.config import KeyProviderEntry
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport, Operation, ProviderFailedError
from cocoguest.rpc._generated import keyprovider_pb2, keyprovider_pb2_grpc

_logger = logging.getLogger(__name__)

_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_NOT_FROM_HANDLER: Final = frozenset({grpc.StatusCode.CANCELLED}) | _RETRYABLE
# ocicrypt-rs prefixes "http://" to grpc addresses that lack a scheme and accepts "tcp://".
_PLAIN_SCHEMES: Final = ("http://", "tcp://")


def _normalise_target(name: str, target: str) -> str:
    for scheme in _PLAIN_SCHEMES:
        if target.startswith(scheme):
            target = target.removeprefix(scheme)
    if target.startswith("https://"):
        msg = f"key provider {name!r}: TLS gRPC ({target}) is not supported"
        raise UnsupportedError(msg)
    return target


def _is_local(target: str) -> bool:
    if target.startswith("unix:"):
        return True
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GrpcTransport:
    """A :class:`~cocoguest.ocicrypt.keyprovider.protocol.KeyProviderTransport` over plaintext gRPC."""

    def __init__(self, name: str, target: str, limits: Limits) -> None:
        """Prepare calls to provider ``name`` at ``target``.

        Args:
            name: the provider name, for messages.
            target: ``host:port``, ``unix:PATH`` or ``unix:///PATH``; ``http://`` and ``tcp://`` are
                stripped.
            limits: deadline and answer size.

        Raises:
            UnsupportedError: an ``https://`` target.
        """
        self._name = name
        self._target = _normalise_target(name, target)
        self._limits = limits
        if not _is_local(self._target):
            # SECURITY: plaintext gRPC carries layer keys; only a local provider keeps them on this host.
            _logger.warning("key provider %r: plaintext gRPC to non-local %s", name, self._target)

    def call(self, op: Operation, request: bytes) -> bytes:
        """Call ``WrapKey`` or ``UnWrapKey`` with ``request``; return the answer bytes.

        Raises:
            TransportError: the provider is unreachable or timed out (retryable).
            ProviderFailedError: the provider's handler returned an error status.
            ProtocolError: the answer is larger than the limit.
        """
        what = f"key provider {self._name!r} (grpc {self._target})"
        options = [("grpc.max_receive_message_length", self._limits.keyprovider_max_response_bytes)]
        message = keyprovider_pb2.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=request)
        try:
            with grpc.insecure_channel(self._target, options=options) as channel:
                stub = keyprovider_pb2_grpc.KeyProviderServiceStub(channel)  # type: ignore[no-untyped-call]
                method = stub.WrapKey if op == "wrap" else stub.UnWrapKey
                answer: keyprovider_pb2.keyProviderKeyWrapProtocolOutput = method(
                    message, timeout=self._limits.keyprovider_timeout_s
                )
        except grpc.RpcError as e:
            raise _translate(e, what, op) from e
        return answer.KeyProviderKeyWrapProtocolOutput


def _translate(error: grpc.RpcError, what: str, op: Operation) -> Exception:
    # The raised object is also a grpc.Call (code(), details()); grpc-stubs cannot express the mix.
    code_of, details_of = getattr(error, "code", None), getattr(error, "details", None)
    code: grpc.StatusCode = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details: str = (details_of() if callable(details_of) else None) or "no details"
    msg = f"{what} ({op}): {code.name}: {details}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ProtocolError(msg)
    if code in _NOT_FROM_HANDLER:
        return TransportError(msg, retryable=code in _RETRYABLE)
    return ProviderFailedError(msg)


def transport_for(entry: KeyProviderEntry, limits: Limits) -> KeyProviderTransport:
    """The transport for a configured provider.

    Raises:
        UnsupportedError: ``ttrpc`` and ``native`` providers (not yet available), or an ``https://`` target.
    """
    if entry.cmd_path is not None:
        return CommandTransport(entry.name, entry.cmd_path, entry.cmd_args, limits)
    if entry.grpc is not None:
        return GrpcTransport(entry.name, entry.grpc, limits)
    kind = "ttrpc" if entry.ttrpc is not None else "native"
    msg = f"key provider {entry.name!r}: the {kind} transport arrives with the ttrpc work"
    raise UnsupportedError(msg)
