"""The checked-in generated protobuf code matches protos/ (scripts/gen_protos.py --check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from cocoguest.rpc._generated import keyprovider_pb2, keyprovider_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_keyprovider_wire_names_match_ocicrypt() -> None:
    # /keyprovider.KeyProviderService/{WrapKey,UnWrapKey}; one bytes field, number 1 (ocicrypt.md §5.5).
    service = keyprovider_pb2.DESCRIPTOR.services_by_name["KeyProviderService"]
    assert service.full_name == "keyprovider.KeyProviderService"
    assert sorted(service.methods_by_name) == ["UnWrapKey", "WrapKey"]
    for message, field in [
        ("keyProviderKeyWrapProtocolInput", "KeyProviderKeyWrapProtocolInput"),
        ("keyProviderKeyWrapProtocolOutput", "KeyProviderKeyWrapProtocolOutput"),
    ]:
        descriptor = keyprovider_pb2.DESCRIPTOR.message_types_by_name[message]
        assert [(f.name, f.number, f.type) for f in descriptor.fields] == [(field, 1, FieldDescriptor.TYPE_BYTES)]
    assert hasattr(keyprovider_pb2_grpc, "KeyProviderServiceStub")
