"""The pieces that join the KBCs to the pull and the CLI: the native attestation-agent layer-key unwrapper, the
``aa_kbc_params`` sources the CLI reads (flag, environment, a kernel command line file), the pull's KBC choice,
the attester adapter and ``--path`` parsing. CLI-level runs are in tests/e2e/test_kbs_cli.py.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.attestation.detect import Probes, detect_tee
from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.cli.attester_source import AttesterEvidence
from cocoguest.cli.kbc_settings import pull_kbc, read_kernel_cmdline, resolve_params
from cocoguest.cli.kbs_commands import TEE_KEY_ALGORITHMS, parse_resource_path
from cocoguest.errors import ConfigError, KeyUnwrapError, ResourceNotFoundError, TeeNotFoundError
from cocoguest.kbs.kbc import OfflineFsKbcClient, SampleKbc
from cocoguest.kbs.kbc.layer_unwrapper import ANNOTATION_KEY, KbcLayerKeyUnwrapper
from cocoguest.kbs.offline_fs import DEFAULT_PATHS, OfflineFsKbc
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.kbs.tee_key import TeeKeyAlgorithm
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.ocicrypt.keywrap import KeyUnwrapper

OPTIONS = b'{"symkey":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=","cipheroptions":{}}'
KEK = bytes(range(32))


def _packet(kek: bytes, kid: str, **extra: object) -> bytes:
    iv = os.urandom(12)
    doc = {
        "kid": kid,
        "wrapped_data": base64.b64encode(AESGCM(kek).encrypt(iv, OPTIONS, None)).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": "A256GCM",
        **extra,
    }
    return json.dumps(doc).encode()


def _offline(**resources: bytes) -> OfflineFsKbcClient:
    return OfflineFsKbcClient(OfflineFsKbc({name.replace("__", "/"): value for name, value in resources.items()}))


# ------------------------------------------------------------------------------------------- layer unwrapper


def test_layer_unwrapper_is_an_ocicrypt_unwrapper_for_the_aa_annotation_only() -> None:
    unwrapper = KbcLayerKeyUnwrapper(_offline())
    assert isinstance(unwrapper, KeyUnwrapper)
    assert unwrapper.scheme == "provider.attestation-agent"
    assert ANNOTATION_KEY == "org.opencontainers.image.enc.keys.provider.attestation-agent"
    assert unwrapper.handles(ANNOTATION_KEY)
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.provider.other")
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe")
    with pytest.raises(ValueError, match="cannot unwrap"):
        unwrapper.unwrap("org.opencontainers.image.enc.keys.jwe", b"{}")


def test_layer_unwrapper_opens_a_packet_with_the_kek_of_its_kid() -> None:
    unwrapper = KbcLayerKeyUnwrapper(_offline(default__image_kek__k1=KEK))
    assert unwrapper.unwrap(ANNOTATION_KEY, _packet(KEK, "kbs:///default/image_kek/k1")) == OPTIONS


@pytest.mark.parametrize(
    ("packet", "fragment"),
    [
        (_packet(bytes(32), "kbs:///default/image_kek/k1"), "kbs:///default/image_kek/k1"),  # wrong KEK
        (b"not json", "not valid JSON"),
        (_packet(KEK, "kms-key", provider="aliyun"), "provider 'aliyun'"),
        (_packet(KEK, "not a uri"), "kid is not a KBS resource URI"),
    ],
)
def test_layer_unwrapper_turns_packet_failures_into_key_unwrap_errors(packet: bytes, fragment: str) -> None:
    unwrapper = KbcLayerKeyUnwrapper(_offline(default__image_kek__k1=KEK))
    with pytest.raises(KeyUnwrapError, match=r"provider\.attestation-agent") as raised:
        unwrapper.unwrap(ANNOTATION_KEY, packet)
    assert fragment in str(raised.value)


def test_layer_unwrapper_lets_a_missing_kek_through_naming_it() -> None:
    with pytest.raises(ResourceNotFoundError, match="kbs:///default/image_kek/absent"):
        KbcLayerKeyUnwrapper(_offline()).unwrap(ANNOTATION_KEY, _packet(KEK, "kbs:///default/image_kek/absent"))


def test_layer_unwrapper_over_the_sample_kbc_uses_the_public_sample_key() -> None:
    from cocoguest.kbs.kbc.sample_kbc import SAMPLE_KEY  # noqa: PLC0415

    assert KbcLayerKeyUnwrapper(SampleKbc()).unwrap(ANNOTATION_KEY, _packet(SAMPLE_KEY, "kbs:///a/b/c")) == OPTIONS


# ------------------------------------------------------------------------------------------- aa_kbc_params sources


def test_params_from_a_kernel_command_line_file(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=hvc0 agent.aa_kbc_params=cc_kbc::http://10.0.0.2:8080 quiet\n")
    params = resolve_params(None, {}, cmdline)
    assert (params.kbc_name, params.kbs_uri, params.source) == (
        "cc_kbc",
        "http://10.0.0.2:8080",
        "the kernel command line",
    )
    from_env = resolve_params(None, {"AA_KBC_PARAMS": "cc_kbc::http://env:1"}, cmdline)
    assert (from_env.kbs_uri, from_env.source) == ("http://env:1", "AA_KBC_PARAMS")
    from_flag = resolve_params("sample_kbc::null", {"AA_KBC_PARAMS": "cc_kbc::http://env:1"}, cmdline)
    assert (from_flag.kbc_name, from_flag.source) == ("sample_kbc", "--aa-kbc-params")
    assert resolve_params(None, {}, tmp_path / "absent").source == "the default"
    assert read_kernel_cmdline(tmp_path / "absent") is None
    with pytest.raises(ConfigError, match="from AA_KBC_PARAMS"):
        resolve_params(None, {"AA_KBC_PARAMS": "cc_kbc::ftp://x"}, cmdline)


# ------------------------------------------------------------------------------------------- the pull's KBC


def _pull_kbc(text: str | None, **kwargs: object) -> object:
    arguments: dict[str, object] = {
        "allow_sample_attester": False,
        "kbs_cert_file": None,
        "offline_fs_resources": [],
        "env": {},
        "limits": DEFAULT_LIMITS,
        **kwargs,
    }
    return pull_kbc(resolve_params(text, {}, Path("/nonexistent")), **arguments)  # type: ignore[arg-type]


@pytest.mark.skipif(any(p.exists() for p in DEFAULT_PATHS), reason="offline_fs files installed on this machine")
def test_no_kbc_when_nothing_is_configured() -> None:
    assert _pull_kbc(None) is None


def test_offline_fs_kbc_serves_the_given_files(tmp_path: Path) -> None:
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"default/image_kek/k1": base64.b64encode(KEK).decode()}))
    kbc = _pull_kbc(None, offline_fs_resources=[resources])
    assert isinstance(kbc, OfflineFsKbcClient)
    assert kbc.get_resource(ResourceUri.parse("kbs:///default/image_kek/k1")) == KEK
    assert KbcLayerKeyUnwrapper(kbc).unwrap(ANNOTATION_KEY, _packet(KEK, "kbs:///default/image_kek/k1")) == OPTIONS


def test_options_that_do_not_fit_the_kbc_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--offline-fs-resources serves offline_fs_kbc"):
        _pull_kbc("cc_kbc::http://127.0.0.1:1", offline_fs_resources=[tmp_path / "r.json"], allow_sample_attester=True)
    with pytest.raises(ConfigError, match="--kbs-cert-file is for cc_kbc"):
        _pull_kbc("offline_fs_kbc::null", kbs_cert_file=tmp_path / "ca.pem")


@pytest.mark.skipif(detect_tee(Probes()).tee is not None, reason="this machine has a TEE")
def test_cc_kbc_without_a_tee_needs_the_explicit_sample_switch() -> None:
    with pytest.raises(TeeNotFoundError, match="no TEE found"):
        _pull_kbc("cc_kbc::http://127.0.0.1:1")
    assert _pull_kbc("cc_kbc::http://127.0.0.1:1", allow_sample_attester=True) is not None  # nothing sent yet


# ------------------------------------------------------------------------------------------- attester adapter, CLI args


def test_attester_evidence_is_the_compact_evidence_json() -> None:
    source = AttesterEvidence(SampleAttester())
    assert source.tee == "sample"
    evidence = source.get_evidence(b"\x01" * 48)
    assert evidence == b'{"svn":"1","report_data":"' + base64.b64encode(b"\x01" * 48) + b'"}'


def test_resource_path_forms() -> None:
    expected = ResourceUri.parse("kbs:///default/key/k1")
    assert parse_resource_path("default/key/k1") == expected
    assert parse_resource_path("/default/key/k1") == expected
    assert parse_resource_path("kbs:///default/key/k1") == expected
    for bad in ("default/key", "default/../k1", "http://x/a/b/c", "a/b/c/d"):
        with pytest.raises(ResourceUriError):
            parse_resource_path(bad)


def test_tee_key_algorithm_names() -> None:
    assert TEE_KEY_ALGORITHMS["ec256"] is TeeKeyAlgorithm.EC_P256
    assert TEE_KEY_ALGORITHMS["ec521"] is TeeKeyAlgorithm.EC_P521
    assert TEE_KEY_ALGORITHMS["rsa"] is TeeKeyAlgorithm.RSA_OAEP_256
    assert TEE_KEY_ALGORITHMS["RSA1_5"] is TeeKeyAlgorithm.RSA1_5
