"""A client of the AA service over ttrpc (``unix://``, ``vsock://``) or gRPC (``HOST:PORT``), like ttrpc-aa-client.

Invariants:
    * Every call has a deadline (``timeout_s``, default ``Limits.ttrpc_call_timeout_s``; upstream's
      ttrpc-aa-client uses 5 s, the CDH 50 s).
    * A non-OK status raises :class:`RpcStatusError` with the server's code and message on both transports; gRPC
      connection failures are a retryable :class:`TransportError`.
    * Answers are untrusted: parsed only by the generated protobuf code, within the transport's size cap.
"""

from __future__ import annotations

from typing import Final, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import attestation_agent_pb2 as pb
from cocoguest.rpc.services.attestation_agent import SERVICE
from cocoguest.rpc.services.grpc_bytes import grpc_unary_bytes
from cocoguest.rpc.ttrpc.client import TtrpcClient

DEFAULT_AA_TTRPC_ADDRESS: Final = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
DEFAULT_AA_GRPC_ADDRESS: Final = "127.0.0.1:50002"
_TTRPC_SCHEMES: Final = ("unix://", "vsock://")
_M = TypeVar("_M", bound=Message)


def is_ttrpc_address(address: str) -> bool:
    """Whether ``address`` names a ttrpc endpoint (``unix://``, ``vsock://``); otherwise it is gRPC ``HOST:PORT``."""
    return address.startswith(_TTRPC_SCHEMES)


class AaClient:
    """One connection to an attestation agent; see the module docstring."""

    def __init__(
        self,
        address: str,
        *,
        ttrpc: TtrpcClient | None,
        channel: grpc.aio.Channel | None,
        timeout_s: float,
    ) -> None:
        """Wrap an open transport (use :meth:`connect`)."""
        self._address = address
        self._ttrpc = ttrpc
        self._channel = channel
        self._timeout_s = timeout_s

    @classmethod
    async def connect(cls, address: str, *, timeout_s: float | None = None, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Connect to the AA at ``address``.

        Raises:
            ConfigError: a malformed ttrpc address.
            TransportError: the ttrpc connection failed (gRPC connects lazily, on the first call).
        """
        timeout = timeout_s if timeout_s is not None else limits.ttrpc_call_timeout_s
        if is_ttrpc_address(address):
            return cls(
                address, ttrpc=await TtrpcClient.connect(address, limits=limits), channel=None, timeout_s=timeout
            )
        channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", limits.aa_grpc_max_message_bytes),
                ("grpc.max_send_message_length", limits.aa_grpc_max_message_bytes),
            ],
        )
        return cls(address, ttrpc=None, channel=channel, timeout_s=timeout)

    async def _call(self, method: str, request: Message, answer_type: type[_M]) -> _M:
        payload = request.SerializeToString()
        if self._ttrpc is not None:
            untrusted = await self._ttrpc.call(SERVICE, method, payload, timeout_s=self._timeout_s)
        else:
            untrusted = await self._grpc_call(method, payload)
        answer = answer_type()
        try:
            answer.ParseFromString(untrusted)
        except DecodeError as e:
            msg = f"attestation agent {self._address} /{SERVICE}/{method}: malformed answer ({e})"
            raise ProtocolError(msg) from e
        return answer

    async def _grpc_call(self, method: str, payload: bytes) -> bytes:
        assert self._channel is not None  # noqa: S101  (set by connect() when ttrpc is not)
        return await grpc_unary_bytes(
            self._channel, SERVICE, method, payload, timeout_s=self._timeout_s, address=self._address
        )

    async def get_evidence(self, runtime_data: bytes) -> bytes:
        """GetEvidence: the primary TEE's evidence JSON bytes for ``runtime_data``."""
        answer = await self._call(
            "GetEvidence", pb.GetEvidenceRequest(RuntimeData=runtime_data), pb.GetEvidenceResponse
        )
        return answer.Evidence

    async def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        """GetAdditionalEvidence: ``{"<tee>": evidence}`` JSON bytes, or empty bytes."""
        request = pb.GetAdditionalEvidenceRequest(RuntimeData=runtime_data)
        return (await self._call("GetAdditionalEvidence", request, pb.GetEvidenceResponse)).Evidence

    async def get_token(self, token_type: str) -> bytes:
        """GetToken: the token bytes (``kbs``: ``{"token","tee_keypair"}`` JSON)."""
        answer = await self._call("GetToken", pb.GetTokenRequest(TokenType=token_type), pb.GetTokenResponse)
        return answer.Token

    async def extend_runtime_measurement(
        self, domain: str, operation: str, content: str, register_index: int | None = None
    ) -> str:
        """ExtendRuntimeMeasurement: the result name (``OK``, ``NOT_SUPPORTED``, ``NOT_ENABLED``)."""
        request = pb.ExtendRuntimeMeasurementRequest(Domain=domain, Operation=operation, Content=content)
        if register_index is not None:
            request.RegisterIndex = register_index
        answer = await self._call("ExtendRuntimeMeasurement", request, pb.ExtendRuntimeMeasurementResponse)
        return pb.RuntimeMeasurementResult.Name(answer.Result)

    async def bind_init_data(self, digest: bytes) -> None:
        """BindInitData: succeeds when the TEE's init-data field matches ``digest`` (or cannot hold one)."""
        await self._call("BindInitData", pb.BindInitDataRequest(Digest=digest), pb.BindInitDataResponse)

    async def get_tee_type(self) -> str:
        """GetTeeType: the primary TEE's name."""
        return (await self._call("GetTeeType", pb.GetTeeTypeRequest(), pb.GetTeeTypeResponse)).tee

    async def get_additional_tees(self) -> list[str]:
        """GetAdditionalTees: the additional devices' names."""
        answer = await self._call("GetAdditionalTees", pb.GetAdditionalTeesRequest(), pb.GetAdditionalTeesResponse)
        return list(answer.additional_tees)

    async def close(self) -> None:
        """Close the connection."""
        if self._ttrpc is not None:
            await self._ttrpc.close()
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
