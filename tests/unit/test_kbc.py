"""KBCs, aa_kbc_params, AnnotationPacket v1/v2 and the UnWrapKey core.

The sample_kbc vector is upstream's ``ocicrypt-rs/data/sample_kbc_annotation.json`` (tests/vectors/README.md);
cc_kbc runs against the test KBS on loopback (tests/fixtures/test_kbs.py).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.errors import (
    ConfigError,
    DecryptionIntegrityError,
    KbsDeniedError,
    ProtocolError,
    ResourceNotFoundError,
    UnsupportedError,
)
from cocoguest.kbs.annotation_packet import parse_annotation_packet
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.kbc import CcKbc, OfflineFsKbcClient, SampleKbc, parse_aa_kbc_params, resolve_aa_kbc_params
from cocoguest.kbs.kbc.factory import build_kbc
from cocoguest.kbs.kbc.params import AaKbcParams, from_kernel_cmdline
from cocoguest.kbs.key_unwrap import unwrap_key
from cocoguest.kbs.locations import LocationReader
from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.kbs.resource_uri import ResourceUri
from tests.fixtures.test_kbs import SampleEvidence, TestKbs

VECTORS = Path(__file__).parent.parent / "vectors"
SAMPLE_ANNOTATION = VECTORS / "ocicrypt-rs" / "sample_kbc_annotation.json"
OFFLINE_KEYS = VECTORS / "image-rs" / "offline-fs-kbc" / "aa-offline_fs_kbc-keys.json"
OPTIONS = b'{"symkey":"c2VjcmV0","cipheroptions":{}}'


def _packet(kek: bytes, kid: str, *, v2: bool = False, wrap_type: str = "A256GCM", **extra: object) -> bytes:
    """An AnnotationPacket made with pyca directly (independent of the code under test)."""
    if wrap_type == "A256GCM":
        iv = os.urandom(12)
        wrapped = AESGCM(kek).encrypt(iv, OPTIONS, None)
    else:
        iv = os.urandom(16)
        enc = Cipher(algorithms.AES(kek), modes.CTR(iv)).encryptor()
        wrapped = enc.update(OPTIONS) + enc.finalize()
    doc: dict[str, object] = {
        "kid": kid,
        "wrapped_data": base64.b64encode(wrapped).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": wrap_type,
    }
    if v2:
        doc.update({"version": "0.1.0", "provider": "kbs", "provider_settings": {}, "annotations": {}})
    doc.update(extra)
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------------- sample_kbc


def test_sample_kbc_decrypts_upstream_vector(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        options = unwrap_key(SAMPLE_ANNOTATION.read_bytes(), SampleKbc())
    assert json.loads(options)["symkey"] == "1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs="
    assert "insecure" in caplog.text


def test_sample_kbc_refuses_altered_vector() -> None:
    doc = json.loads(SAMPLE_ANNOTATION.read_bytes())
    data = bytearray(base64.b64decode(doc["wrapped_data"]))
    data[-1] ^= 1
    doc["wrapped_data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(DecryptionIntegrityError, match="tag check failed"):
        unwrap_key(json.dumps(doc).encode(), SampleKbc())


def test_sample_kbc_resources_by_type(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_bytes(b'{"default":[{"type":"reject"}]}')
    kbc = SampleKbc.from_directory(tmp_path)
    assert kbc.get_resource(ResourceUri.parse("kbs:///any/security-policy/x")) == b'{"default":[{"type":"reject"}]}'
    with pytest.raises(ResourceNotFoundError, match="no 'credential' resource"):
        kbc.get_resource(ResourceUri.parse("kbs:///any/credential/x"))
    with pytest.raises(ConfigError, match="unknown resource types"):
        SampleKbc({"key": b""})


# ------------------------------------------------------------------------------------------- offline_fs_kbc


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("wrap_type", ["A256GCM", "A256CTR"])
def test_offline_fs_kbc_unwraps_with_upstream_key_file(v2: bool, wrap_type: str) -> None:
    kek = base64.b64decode(json.loads(OFFLINE_KEYS.read_bytes())["default/key/key_id1"])
    kbc = OfflineFsKbcClient(OfflineFsKbc.load([OFFLINE_KEYS]))
    packet = _packet(kek, "kbs:///default/key/key_id1", v2=v2, wrap_type=wrap_type)
    assert unwrap_key(packet, kbc) == OPTIONS


def test_offline_fs_kbc_wrong_key_is_refused() -> None:
    kbc = OfflineFsKbcClient(OfflineFsKbc.load([OFFLINE_KEYS]))
    with pytest.raises(DecryptionIntegrityError):
        unwrap_key(_packet(os.urandom(32), "kbs:///default/key/key_id1"), kbc)
    with pytest.raises(ResourceNotFoundError):
        unwrap_key(_packet(os.urandom(32), "kbs:///default/key/absent"), kbc)


# ------------------------------------------------------------------------------------------- cc_kbc


@pytest.fixture
def kbs() -> Iterator[TestKbs]:
    kek = os.urandom(32)
    resources = {"default/key/kek": kek, "default/security-policy/p": b'{"default":[{"type":"reject"}]}'}
    with TestKbs(resources=resources).running() as server:
        yield server


def test_cc_kbc_unwraps_through_the_kbs(kbs: TestKbs) -> None:
    kbc = CcKbc(KbsClient(kbs.url, SampleEvidence()))
    kek = kbs.resources["default/key/kek"]
    assert unwrap_key(_packet(kek, "kbs:///default/key/kek", v2=True), kbc) == OPTIONS
    assert unwrap_key(_packet(kek, "kbs://kbs.example:8080/default/key/kek"), kbc) == OPTIONS
    assert kbs.attestations == 1


def test_cc_kbc_serves_kbs_policies_through_the_resource_provider(kbs: TestKbs, tmp_path: Path) -> None:
    kbc = build_kbc(parse_aa_kbc_params(f"cc_kbc::{kbs.url}", "test"), evidence=SampleEvidence())
    reader = LocationReader(tmp_path, kbc)
    assert reader.read("kbs:///default/security-policy/p") == b'{"default":[{"type":"reject"}]}'
    kbs.deny_status = 401
    with pytest.raises(KbsDeniedError, match="PolicyDeny"):
        reader.read("kbs:///default/security-policy/p")


def test_unwrap_refuses_other_providers_and_malformed_packets() -> None:
    with pytest.raises(UnsupportedError, match="provider 'aliyun'"):
        unwrap_key(_packet(os.urandom(32), "some-kms-key", v2=True, provider="aliyun"), SampleKbc())
    with pytest.raises(ProtocolError, match="kid is not a KBS resource URI"):
        parse_annotation_packet(_packet(os.urandom(32), "not-a-uri"))
    doc = json.loads(_packet(os.urandom(32), "kbs:///a/b/c"))
    for member, value, message in (
        ("wrap_type", "A128CBC", "wrap_type 'A128CBC' is not supported"),
        ("iv", base64.b64encode(b"short").decode(), "needs a 12-byte iv"),
        ("iv", "3PQMqtjbR4hxCr8", "'iv' is not standard padded base64"),
        ("wrapped_data", 7, "'wrapped_data' must be a base64 string"),
        ("provider_settings", [], "'provider_settings' must be an object"),
    ):
        with pytest.raises(ProtocolError, match=message):
            parse_annotation_packet(json.dumps({**doc, member: value}).encode())


# ------------------------------------------------------------------------------------------- aa_kbc_params


def test_aa_kbc_params_parsing() -> None:
    assert parse_aa_kbc_params("cc_kbc::http://1.2.3.4:8080", "env") == AaKbcParams(
        "cc_kbc", "http://1.2.3.4:8080", "env"
    )
    assert parse_aa_kbc_params("offline_fs_kbc::null", "x").kbc_name == "offline_fs_kbc"
    for bad, message in (
        ("cc_kbc", "is not <kbc_name>::<kbs_uri>"),
        ("eaa_kbc::1.2.3.4:1", "unknown KBC 'eaa_kbc'"),
        ("cc_kbc::1.2.3.4:8080", "needs an http"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_aa_kbc_params(bad, "AA_KBC_PARAMS")


def test_aa_kbc_params_sources_and_precedence() -> None:
    cmdline = "console=ttyS0 agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080 agent.log=debug"
    assert from_kernel_cmdline(cmdline) == "cc_kbc::http://10.0.0.1:8080"
    assert from_kernel_cmdline("quiet") is None
    assert resolve_aa_kbc_params() == AaKbcParams("offline_fs_kbc", "null", "the default")
    assert resolve_aa_kbc_params(config="sample_kbc::null").source == "the config file"
    assert resolve_aa_kbc_params(cmdline=cmdline, config="sample_kbc::null").kbs_uri == "http://10.0.0.1:8080"
    chosen = resolve_aa_kbc_params(env="cc_kbc::https://kbs:8443", cmdline=cmdline)
    assert (chosen.kbs_uri, chosen.source) == ("https://kbs:8443", "AA_KBC_PARAMS")
    assert resolve_aa_kbc_params(flag="sample_kbc::x", env="cc_kbc::https://kbs").kbc_name == "sample_kbc"
    with pytest.raises(ConfigError, match="from AA_KBC_PARAMS"):
        resolve_aa_kbc_params(env="bogus", cmdline=cmdline)


def test_build_kbc_needs_an_attester_for_cc_kbc() -> None:
    with pytest.raises(ConfigError, match="needs an attester"):
        build_kbc(parse_aa_kbc_params("cc_kbc::http://127.0.0.1:1", "test"))
    assert isinstance(build_kbc(parse_aa_kbc_params("sample_kbc::null", "test")), SampleKbc)
