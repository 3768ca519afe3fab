"""A client of the CDH services over ttrpc (``unix://``, ``vsock://``) or gRPC (``HOST:PORT``), like upstream's
``ttrpc-cdh-tool``/``grpc-cdh-tool``.

Invariants:
    * Every call has a deadline (``timeout_s``; upstream's tool uses 50 s).
    * A non-OK status raises :class:`RpcStatusError` carrying the CDH's code and message on both transports; a
      gRPC connection failure is a retryable :class:`TransportError`.
    * Answers are untrusted: parsed only by the generated protobuf code, within the transport's size cap.
"""

from __future__ import annotations

import json
from typing import Final, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rpc._generated import api_pb2 as pb
from cocoguest.rpc._generated import keyprovider_pb2 as kp
from cocoguest.rpc.services.attestation_agent_client import is_ttrpc_address
from cocoguest.rpc.services.cdh import (
    GET_RESOURCE_SERVICE,
    IMAGE_PULL_SERVICE,
    KEY_PROVIDER_SERVICE,
    SEALED_SECRET_SERVICE,
    SECURE_MOUNT_SERVICE,
)
from cocoguest.rpc.services.grpc_bytes import grpc_unary_bytes
from cocoguest.rpc.ttrpc.client import TtrpcClient

DEFAULT_CDH_TTRPC_ADDRESS: Final = "unix:///run/confidential-containers/cdh.sock"
_M = TypeVar("_M", bound=Message)


class CdhClient:
    """One connection to a confidential data hub; see the module docstring."""

    def __init__(
        self, address: str, *, ttrpc: TtrpcClient | None, channel: grpc.aio.Channel | None, timeout_s: float
    ) -> None:
        """Wrap an open transport (use :meth:`connect`)."""
        self._address = address
        self._ttrpc = ttrpc
        self._channel = channel
        self._timeout_s = timeout_s

    @classmethod
    async def connect(cls, address: str, *, timeout_s: float | None = None, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Connect to the CDH at ``address``.

        Raises:
            ConfigError: a malformed ttrpc address.
            TransportError: the ttrpc connection failed (gRPC connects lazily, on the first call).
        """
        timeout = timeout_s if timeout_s is not None else limits.ttrpc_call_timeout_s
        if is_ttrpc_address(address):
            client = await TtrpcClient.connect(address, limits=limits)
            return cls(address, ttrpc=client, channel=None, timeout_s=timeout)
        channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", limits.cdh_grpc_max_message_bytes),
                ("grpc.max_send_message_length", limits.cdh_grpc_max_message_bytes),
            ],
        )
        return cls(address, ttrpc=None, channel=channel, timeout_s=timeout)

    async def _call(self, service: str, method: str, request: Message, answer_type: type[_M]) -> _M:
        payload = request.SerializeToString()
        if self._ttrpc is not None:
            untrusted = await self._ttrpc.call(service, method, payload, timeout_s=self._timeout_s)
        else:
            untrusted = await self._grpc_call(service, method, payload)
        answer = answer_type()
        try:
            answer.ParseFromString(untrusted)
        except DecodeError as e:
            msg = f"confidential data hub {self._address} /{service}/{method}: malformed answer ({e})"
            raise ProtocolError(msg) from e
        return answer

    async def _grpc_call(self, service: str, method: str, payload: bytes) -> bytes:
        assert self._channel is not None  # noqa: S101  (set by connect() when ttrpc is not)
        return await grpc_unary_bytes(
            self._channel, service, method, payload, timeout_s=self._timeout_s, address=self._address
        )

    async def get_resource(self, resource_uri: str) -> bytes:
        """GetResource: the resource's bytes."""
        request = pb.GetResourceRequest(ResourcePath=resource_uri)
        answer = await self._call(GET_RESOURCE_SERVICE, "GetResource", request, pb.GetResourceResponse)
        return answer.Resource

    async def unseal_secret(self, secret: bytes) -> bytes:
        """UnsealSecret: the plaintext of a ``sealed.`` secret."""
        request = pb.UnsealSecretInput(secret=secret)
        answer = await self._call(SEALED_SECRET_SERVICE, "UnsealSecret", request, pb.UnsealSecretOutput)
        return answer.plaintext

    async def unwrap_key(self, annotation_b64: str) -> bytes:
        """UnWrapKey of an ``org.opencontainers.image.enc.keys.provider.attestation-agent`` annotation value
        (base64 of the AnnotationPacket JSON), sent as Go ocicrypt does; the key provider's answer JSON."""
        protocol = {
            "op": "keyunwrap",
            "keywrapparams": {"ec": None, "optsdata": None},
            "keyunwrapparams": {"dc": None, "annotation": annotation_b64},
        }
        request = kp.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=json.dumps(protocol).encode())
        answer = await self._call(KEY_PROVIDER_SERVICE, "UnWrapKey", request, kp.keyProviderKeyWrapProtocolOutput)
        return answer.KeyProviderKeyWrapProtocolOutput

    async def secure_mount(self, volume_type: str, options: dict[str, str], flags: list[str], mount_point: str) -> None:
        """SecureMount: mount ``volume_type`` at ``mount_point``."""
        request = pb.SecureMountRequest(volume_type=volume_type, options=options, flags=flags, mount_point=mount_point)
        await self._call(SECURE_MOUNT_SERVICE, "SecureMount", request, pb.SecureMountResponse)

    async def pull_image(self, image_url: str, bundle_path: str) -> str:
        """PullImage into ``bundle_path``; the manifest digest."""
        request = pb.ImagePullRequest(image_url=image_url, bundle_path=bundle_path)
        answer = await self._call(IMAGE_PULL_SERVICE, "PullImage", request, pb.ImagePullResponse)
        return answer.manifest_digest

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
