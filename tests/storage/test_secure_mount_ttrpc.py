"""SecureMount over ttrpc: the CDH's handler (rpc/services/secure_mount.py) served by our ttrpc server and called
with the generated api.proto classes, on a real loop device with the real cryptsetup."""

from __future__ import annotations

import asyncio

import pytest

from cocoguest.cdh.storage.cryptsetup import Cryptsetup, Pbkdf
from cocoguest.cdh.storage.devmapper import device_mapper_missing
from cocoguest.errors import RpcStatusError
from cocoguest.rpc._generated import api_pb2
from cocoguest.rpc.services.secure_mount import SECURE_MOUNT_SERVICE, hub_key_fetcher, secure_mount_handler
from cocoguest.rpc.ttrpc.client import TtrpcClient
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.server import TtrpcServer

pytestmark = pytest.mark.interop
KEY = b"z" * 32


def _fetch(uri: str) -> bytes:
    assert uri == "kbs:///default/disk/key"
    return KEY


def _call(address: str, request: api_pb2.SecureMountRequest) -> bytes:
    async def run() -> bytes:
        async with TtrpcServer() as server:
            server.register(
                SECURE_MOUNT_SERVICE,
                {"SecureMount": secure_mount_handler(_fetch, cryptsetup=Cryptsetup(pbkdf=Pbkdf("pbkdf2", 1000)))},
            )
            await server.listen(address)
            async with await TtrpcClient.connect(address) as client:
                return await client.call(SECURE_MOUNT_SERVICE, "SecureMount", request.SerializeToString())

    return asyncio.run(run())


def test_invalid_option_is_internal_naming_it(tmp_path: pytest.TempPathFactory) -> None:
    request = api_pb2.SecureMountRequest(
        volume_type="block-device", options={"devicePath": "/dev/vdb", "sourceType": "x"}, mount_point="/m"
    )
    with pytest.raises(RpcStatusError) as info:
        _call(f"unix://{tmp_path}/cdh.sock", request)
    assert info.value.code == Code.INTERNAL
    assert info.value.status_message.startswith("[CDH] [ERROR]: secure mount option 'sourceType'")


def test_secure_mount_formats_with_the_fetched_key(loop_device: str, tmp_path: pytest.TempPathFactory) -> None:
    request = api_pb2.SecureMountRequest(
        volume_type="block-device",
        options={"devicePath": loop_device, "sourceType": "empty", "key": "kbs:///default/disk/key"},
        mount_point=f"{tmp_path}/disk",
    )
    reason = device_mapper_missing()
    if reason is None:
        assert _call(f"unix://{tmp_path}/cdh.sock", request) == b""
    else:
        with pytest.raises(RpcStatusError) as info:
            _call(f"unix://{tmp_path}/cdh.sock", request)
        assert info.value.code == Code.INTERNAL
        assert "device-mapper not available" in info.value.status_message
    assert Cryptsetup().test_key(loop_device, KEY)  # formatted for real with the key the CDH fetched


def test_hub_key_fetcher_routes_sealed_and_kbs_keys() -> None:
    fetch = hub_key_fetcher(lambda uri: b"resource:" + uri.encode(), lambda secret: b"unsealed:" + secret)
    assert fetch("kbs:///a/b/c") == b"resource:kbs:///a/b/c"
    assert fetch("sealed.h.p.s") == b"unsealed:sealed.h.p.s"
