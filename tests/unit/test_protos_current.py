"""The checked-in generated protobuf code matches protos/ (scripts/gen_protos.py --check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from cocoguest.rpc._generated import api_pb2, attestation_agent_pb2, keyprovider_pb2, keyprovider_pb2_grpc, ttrpc_pb2

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


F = FieldDescriptor


def fields(module: object, message: str) -> list[tuple[str, int, int, bool]]:
    descriptor = module.DESCRIPTOR.message_types_by_name[message]  # type: ignore[attr-defined]
    return [(f.name, f.number, f.type, f.is_repeated) for f in descriptor.fields]


def methods(module: object, service: str) -> dict[str, tuple[str, str]]:
    descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    return {m.name: (m.input_type.name, m.output_type.name) for m in descriptor.methods}


def test_attestation_agent_proto_matches_upstream() -> None:
    # guest-components.md §4.2: package, service, methods and field numbers as upstream HEAD.
    service = attestation_agent_pb2.DESCRIPTOR.services_by_name["AttestationAgentService"]
    assert service.full_name == "attestation_agent.AttestationAgentService"
    assert methods(attestation_agent_pb2, "AttestationAgentService") == {
        "GetEvidence": ("GetEvidenceRequest", "GetEvidenceResponse"),
        "GetAdditionalEvidence": ("GetAdditionalEvidenceRequest", "GetEvidenceResponse"),
        "GetToken": ("GetTokenRequest", "GetTokenResponse"),
        "ExtendRuntimeMeasurement": ("ExtendRuntimeMeasurementRequest", "ExtendRuntimeMeasurementResponse"),
        "BindInitData": ("BindInitDataRequest", "BindInitDataResponse"),
        "GetTeeType": ("GetTeeTypeRequest", "GetTeeTypeResponse"),
        "GetAdditionalTees": ("GetAdditionalTeesRequest", "GetAdditionalTeesResponse"),
    }
    aa = attestation_agent_pb2
    assert fields(aa, "GetEvidenceRequest") == [("RuntimeData", 1, F.TYPE_BYTES, False)]
    assert fields(aa, "GetAdditionalEvidenceRequest") == [("RuntimeData", 1, F.TYPE_BYTES, False)]
    assert fields(aa, "GetEvidenceResponse") == [("Evidence", 1, F.TYPE_BYTES, False)]
    assert fields(aa, "GetTokenRequest") == [("TokenType", 1, F.TYPE_STRING, False)]
    assert fields(aa, "GetTokenResponse") == [("Token", 1, F.TYPE_BYTES, False)]
    assert fields(aa, "ExtendRuntimeMeasurementRequest") == [
        ("Domain", 1, F.TYPE_STRING, False),
        ("Operation", 2, F.TYPE_STRING, False),
        ("Content", 3, F.TYPE_STRING, False),
        ("RegisterIndex", 4, F.TYPE_UINT64, False),
    ]
    register = aa.DESCRIPTOR.message_types_by_name["ExtendRuntimeMeasurementRequest"].fields_by_name["RegisterIndex"]
    assert register.has_presence  # proto3 `optional`: "absent" differs from 0
    assert fields(aa, "ExtendRuntimeMeasurementResponse") == [("Result", 1, F.TYPE_ENUM, False)]
    result = aa.DESCRIPTOR.enum_types_by_name["RuntimeMeasurementResult"]
    assert [(v.name, v.number) for v in result.values] == [("OK", 0), ("NOT_SUPPORTED", 1), ("NOT_ENABLED", 2)]
    assert fields(aa, "BindInitDataRequest") == [("Digest", 1, F.TYPE_BYTES, False)]
    assert fields(aa, "BindInitDataResponse") == []
    assert fields(aa, "GetTeeTypeRequest") == []
    assert fields(aa, "GetTeeTypeResponse") == [("tee", 1, F.TYPE_STRING, False)]
    assert fields(aa, "GetAdditionalTeesResponse") == [("additional_tees", 1, F.TYPE_STRING, True)]


def test_cdh_api_proto_matches_upstream() -> None:
    # guest-components.md §8.1 (protos/confidential-data-hub/api.proto).
    assert {s.full_name for s in api_pb2.DESCRIPTOR.services_by_name.values()} == {
        "api.SealedSecretService",
        "api.GetResourceService",
        "api.SecureMountService",
        "api.ImagePullService",
    }
    assert methods(api_pb2, "SealedSecretService") == {"UnsealSecret": ("UnsealSecretInput", "UnsealSecretOutput")}
    assert methods(api_pb2, "GetResourceService") == {"GetResource": ("GetResourceRequest", "GetResourceResponse")}
    assert methods(api_pb2, "SecureMountService") == {"SecureMount": ("SecureMountRequest", "SecureMountResponse")}
    assert methods(api_pb2, "ImagePullService") == {"PullImage": ("ImagePullRequest", "ImagePullResponse")}
    assert fields(api_pb2, "UnsealSecretInput") == [("secret", 1, F.TYPE_BYTES, False)]
    assert fields(api_pb2, "UnsealSecretOutput") == [("plaintext", 1, F.TYPE_BYTES, False)]
    assert fields(api_pb2, "GetResourceRequest") == [("ResourcePath", 1, F.TYPE_STRING, False)]
    assert fields(api_pb2, "GetResourceResponse") == [("Resource", 1, F.TYPE_BYTES, False)]
    assert fields(api_pb2, "SecureMountRequest") == [
        ("volume_type", 1, F.TYPE_STRING, False),
        ("options", 2, F.TYPE_MESSAGE, True),  # map<string, string>
        ("flags", 3, F.TYPE_STRING, True),
        ("mount_point", 4, F.TYPE_STRING, False),
    ]
    options = api_pb2.DESCRIPTOR.message_types_by_name["SecureMountRequest"].fields_by_name["options"]
    assert options.message_type.GetOptions().map_entry
    assert fields(api_pb2, "SecureMountResponse") == []
    assert fields(api_pb2, "ImagePullRequest") == [
        ("image_url", 1, F.TYPE_STRING, False),
        ("bundle_path", 2, F.TYPE_STRING, False),
    ]
    assert fields(api_pb2, "ImagePullResponse") == [("manifest_digest", 1, F.TYPE_STRING, False)]


def test_ttrpc_envelope_field_numbers() -> None:
    # specs/ttrpc.md §5.
    assert fields(ttrpc_pb2, "Request") == [
        ("service", 1, F.TYPE_STRING, False),
        ("method", 2, F.TYPE_STRING, False),
        ("payload", 3, F.TYPE_BYTES, False),
        ("timeout_nano", 4, F.TYPE_INT64, False),
        ("metadata", 5, F.TYPE_MESSAGE, True),
    ]
    assert fields(ttrpc_pb2, "KeyValue") == [("key", 1, F.TYPE_STRING, False), ("value", 2, F.TYPE_STRING, False)]
    assert fields(ttrpc_pb2, "Response") == [("status", 1, F.TYPE_MESSAGE, False), ("payload", 2, F.TYPE_BYTES, False)]
    assert fields(ttrpc_pb2, "Status") == [
        ("code", 1, F.TYPE_INT32, False),
        ("message", 2, F.TYPE_STRING, False),
        ("details", 3, F.TYPE_MESSAGE, True),
    ]


def test_proto_files_are_verbatim_upstream_text() -> None:
    # The .proto files are the spec's verbatim copies (guest-components.md §4.2 and §8.1): spot-check the text.
    aa = (ROOT / "protos" / "attestation-agent.proto").read_text(encoding="utf-8")
    assert "package attestation_agent;" in aa
    assert "    optional uint64 RegisterIndex = 4;" in aa
    api = (ROOT / "protos" / "api.proto").read_text(encoding="utf-8")
    assert "package api;" in api
    assert "    map<string, string> options = 2;" in api
