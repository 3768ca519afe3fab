"""Key provider wrapper, protocol JSON, config file, cmd and gRPC transports (ocicrypt.md §5.5).

The peers in tests/keyprovider_peers implement the provider side independently (AES-256-GCM under a key
file) and check the request strictly against Go's form.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cocoguest.errors import (
    ConfigError,
    KeyUnwrapError,
    ProtocolError,
    TransportError,
    UnsupportedError,
)
from cocoguest.limits import Limits
from cocoguest.ocicrypt.keyprovider import protocol
from cocoguest.ocicrypt.keyprovider.cmd import CommandTransport
from cocoguest.ocicrypt.keyprovider.config import KeyProviderEntry, load_keyprovider_config
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport, Operation, ProviderFailedError
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.keywrap.keyprovider import KeyProviderUnwrapper, KeyProviderWrapper
from cocoguest.rpc.keyprovider_client import GrpcTransport, transport_for
from tests.keyprovider_peers.grpc_provider import ProviderServicer, start_server

PEER = str(Path(__file__).resolve().parent.parent / "keyprovider_peers" / "cmd_provider.py")
VECTORS = Path(__file__).parents[1] / "vectors"
NAME = "kp"
ANNOTATION_KEY = "org.opencontainers.image.enc.keys.provider.kp"
OPTS = b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"aG1hYw==","cipheroptions":{"nonce":"bm9uY2U="}}'
LIMITS = Limits()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RecordingTransport:
    """A KeyProviderTransport that records requests and answers with a fixed reply or raises."""

    def __init__(self, answer: bytes = b"", error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.calls: list[tuple[Operation, bytes]] = []

    def call(self, op: Operation, request: bytes) -> bytes:
        self.calls.append((op, request))
        if self.error is not None:
            raise self.error
        return self.answer


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "kek.bin"
    path.write_bytes(os.urandom(32))
    return str(path)


@pytest.fixture
def other_key_file(tmp_path: Path) -> str:
    path = tmp_path / "other.bin"
    path.write_bytes(os.urandom(32))
    return str(path)


def cmd_config(tmp_path: Path, *extra: str, name: str = NAME) -> str:
    config = {"key-providers": {name: {"cmd": {"path": sys.executable, "args": [PEER, "--name", name, *extra]}}}}
    path = tmp_path / "ocicrypt_keyprovider.conf"
    path.write_text(json.dumps(config))
    return str(path)


def cmd_transport(tmp_path: Path, *extra: str, limits: Limits = LIMITS) -> KeyProviderTransport:
    entries = load_keyprovider_config(cmd_config(tmp_path, *extra))
    return transport_for(entries[NAME], limits)


def round_trip(transport: KeyProviderTransport, wrap_params: bytes | None, unwrap_params: bytes | None) -> bytes:
    wrapper = KeyProviderWrapper(NAME, wrap_params, transport)
    annotation = wrapper.wrap(OPTS)
    unwrapper = KeyProviderUnwrapper(NAME, unwrap_params, transport)
    assert unwrapper.unwrap(wrapper.annotation_key, annotation) == OPTS
    return annotation


@pytest.fixture
def grpc_provider(key_file: str) -> Iterator[Callable[[str], tuple[ProviderServicer, str]]]:
    servers = []

    def start(fmt: str) -> tuple[ProviderServicer, str]:
        servicer = ProviderServicer(NAME, fmt, key_file)
        server, port = start_server(servicer)
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


# --- protocol JSON -------------------------------------------------------------------------------------------


def test_wrap_request_is_go_form_byte_for_byte() -> None:
    transport = RecordingTransport(protocol.build_wrap_response(b"annotation"))
    KeyProviderWrapper(NAME, None, transport).wrap(OPTS)
    [(op, request)] = transport.calls
    assert op == "wrap"
    assert request.decode() == (
        '{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"kp":["RW5hYmxlZA=="]},'
        '"DecryptConfig":{"Parameters":{}}},"optsdata":"' + b64(OPTS) + '"},'
        '"keyunwrapparams":{"dc":null,"annotation":null}}'
    )


def test_unwrap_request_is_go_form_byte_for_byte() -> None:
    transport = RecordingTransport(protocol.build_unwrap_response(OPTS))
    KeyProviderUnwrapper(NAME, b"extra-params", transport).unwrap(ANNOTATION_KEY, b'{"kid":"k"}')
    [(op, request)] = transport.calls
    assert op == "unwrap"
    assert request.decode() == (
        '{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},'
        '"keyunwrapparams":{"dc":{"Parameters":{"kp":["ZXh0cmEtcGFyYW1z"]}},'
        '"annotation":"' + b64(b'{"kid":"k"}') + '"}}'
    )


def test_requests_carry_only_the_providers_own_parameter() -> None:
    # SECURITY: unlike Go, no other scheme's keys go to the provider.
    transport = RecordingTransport(protocol.build_wrap_response(b"a"))
    KeyProviderWrapper(NAME, b"p", transport).wrap(OPTS)
    request = json.loads(transport.calls[0][1])
    assert request["keywrapparams"]["ec"]["Parameters"] == {NAME: [b64(b"p")]}
    transport = RecordingTransport(protocol.build_unwrap_response(OPTS))
    KeyProviderUnwrapper(NAME, None, transport).unwrap(ANNOTATION_KEY, b"x")
    assert json.loads(transport.calls[0][1])["keyunwrapparams"]["dc"] == {"Parameters": {}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b'{"keywrapresults":{"annotation":"YWJj"}}', b"abc"),
        (b'{"keywrapresults":{"annotation":"YWJj"},"keyunwrapresults":{"optsdata":null}}', b"abc"),
        (b'{"keywrapresults":{"annotation":[97,98,99]}}', b"abc"),
        (b'{"keywrapresults":{"annotation":"YW\\nJj"},"other":1}', b"abc"),
    ],
)
def test_wrap_answer_is_parsed_leniently(answer: bytes, expected: bytes) -> None:
    assert protocol.parse_wrap_response(answer, NAME) == expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "missing 'keywrapresults'"),
        (b'{"keywrapresults":{"annotation":null}}', "missing or empty"),
        (b'{"keywrapresults":{"annotation":""}}', "missing or empty"),
        (b'{"keywrapresults":{"annotation":"!!!"}}', "not valid base64"),
        (b'{"keywrapresults":{"annotation":[256]}}', "array of byte values"),
        (b'{"keywrapresults":{"annotation":[true]}}', "array of byte values"),
        (b'{"keywrapresults":[]}', "must be an object"),
    ],
)
def test_bad_wrap_answer_is_protocol_error_naming_provider(answer: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as info:
        protocol.parse_wrap_response(answer, NAME)
    assert "'kp'" in str(info.value)


def test_unwrap_answer_forms() -> None:
    assert protocol.parse_unwrap_response(protocol.build_unwrap_response(OPTS), NAME) == OPTS
    assert protocol.parse_unwrap_response(protocol.build_unwrap_response(OPTS, number_array=True), NAME) == OPTS
    with pytest.raises(ProtocolError, match="keyunwrapresults"):
        protocol.parse_unwrap_response(protocol.build_wrap_response(b"a"), NAME)


def test_parse_request_go_and_cocoguest_form() -> None:
    wrap = protocol.parse_request(protocol.build_wrap_request({NAME: [b"Enabled"]}, OPTS))
    assert wrap == protocol.KeyProviderRequest("wrap", {NAME: [b"Enabled"]}, OPTS, None)
    unwrap = protocol.parse_request(protocol.build_unwrap_request({}, b"ann"))
    assert unwrap == protocol.KeyProviderRequest("unwrap", {}, None, b"ann")


def test_parse_request_ocicrypt_rs_form() -> None:
    # ocicrypt-rs: optsdata is the raw JSON string; Vec<u8> parameters serialise as number arrays.
    request = json.dumps(
        {
            "op": "keywrap",
            "keywrapparams": {
                "ec": {"Parameters": {NAME: [list(b"Enabled")]}, "DecryptConfig": None},
                "optsdata": OPTS.decode(),
            },
            "keyunwrapparams": {"dc": None, "annotation": None},
        }
    ).encode()
    assert protocol.parse_request(request) == protocol.KeyProviderRequest("wrap", {NAME: [b"Enabled"]}, OPTS, None)


@pytest.mark.parametrize(
    ("request_json", "reason"),
    [
        (b'{"op":"keydelete"}', "unknown op"),
        (b'{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"kp":"x"}},"optsdata":"YQ=="}}', "must be an array"),
        (b'{"op":"keyunwrap","keyunwrapparams":{"dc":null,"annotation":"%%"}}', "not valid base64"),
    ],
)
def test_parse_request_rejects_malformed(request_json: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.parse_request(request_json)


# --- wrapper / unwrapper -------------------------------------------------------------------------------------


def test_wrapper_and_unwrapper_identity() -> None:
    transport = RecordingTransport()
    wrapper = KeyProviderWrapper(NAME, None, transport)
    unwrapper = KeyProviderUnwrapper(NAME, None, transport)
    assert isinstance(wrapper, KeyWrapper)
    assert isinstance(unwrapper, KeyUnwrapper)
    assert wrapper.annotation_key == ANNOTATION_KEY
    assert unwrapper.scheme == "provider.kp"
    assert unwrapper.handles(ANNOTATION_KEY)
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.provider.kp2")
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe")
    with pytest.raises(ValueError, match="cannot unwrap"):
        unwrapper.unwrap("org.opencontainers.image.enc.keys.jwe", b"x")
    assert transport.calls == []


def test_provider_failure_on_unwrap_is_key_unwrap_error_with_cause() -> None:
    cause = ProviderFailedError("kp exited 1")
    transport = RecordingTransport(error=cause)
    with pytest.raises(KeyUnwrapError, match="'kp'") as info:
        KeyProviderUnwrapper(NAME, None, transport).unwrap(ANNOTATION_KEY, b"x")
    assert info.value.__cause__ is cause


def test_unreachable_provider_on_unwrap_stays_transport_error() -> None:
    transport = RecordingTransport(error=TransportError("connection refused", retryable=True))
    with pytest.raises(TransportError) as info:
        KeyProviderUnwrapper(NAME, None, transport).unwrap(ANNOTATION_KEY, b"x")
    assert not isinstance(info.value, KeyUnwrapError)


# --- cmd transport -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["go", "array"])
def test_cmd_round_trip(tmp_path: Path, key_file: str, fmt: str) -> None:
    transport = cmd_transport(tmp_path, "--format", fmt)
    assert isinstance(transport, CommandTransport)
    params = f"keyfile={key_file}".encode()
    annotation = round_trip(transport, params, params)
    assert json.loads(annotation)["wrap_type"] == "A256GCM"


def test_cmd_round_trip_key_from_provider_args(tmp_path: Path, key_file: str) -> None:
    # No params: "Enabled" on wrap, empty Parameters on unwrap (Go tries the provider without a key spec).
    record = tmp_path / "request.json"
    transport = cmd_transport(tmp_path, "--key-file", key_file, "--record", str(record))
    round_trip(transport, None, None)
    assert json.loads(record.read_bytes())["keyunwrapparams"]["dc"] == {"Parameters": {}}


def test_cmd_unwrap_with_wrong_key_is_key_unwrap_error(tmp_path: Path, key_file: str, other_key_file: str) -> None:
    transport = cmd_transport(tmp_path)
    annotation = KeyProviderWrapper(NAME, f"keyfile={key_file}".encode(), transport).wrap(OPTS)
    unwrapper = KeyProviderUnwrapper(NAME, f"keyfile={other_key_file}".encode(), transport)
    with pytest.raises(KeyUnwrapError, match="'kp'") as info:
        unwrapper.unwrap(ANNOTATION_KEY, annotation)
    assert isinstance(info.value.__cause__, ProviderFailedError)
    assert "wrong key or tampered annotation" in str(info.value.__cause__)


def test_cmd_nonzero_exit_carries_name_and_last_stderr_line(tmp_path: Path) -> None:
    transport = cmd_transport(tmp_path, "--fault", "exit1")
    with pytest.raises(ProviderFailedError) as info:
        KeyProviderWrapper(NAME, None, transport).wrap(OPTS)
    message = str(info.value)
    assert "'kp'" in message
    assert "status 1" in message
    assert message.endswith("refusing: test fault exit1")
    assert isinstance(info.value, TransportError)


@pytest.mark.parametrize(("fault", "reason"), [("badjson", "not valid JSON"), ("empty", "missing or empty")])
def test_cmd_bad_answer_is_protocol_error(tmp_path: Path, fault: str, reason: str) -> None:
    transport = cmd_transport(tmp_path, "--fault", fault)
    with pytest.raises(ProtocolError, match=reason) as info:
        KeyProviderWrapper(NAME, None, transport).wrap(OPTS)
    assert "'kp'" in str(info.value)


def test_cmd_timeout_kills_the_provider(tmp_path: Path) -> None:
    transport = cmd_transport(tmp_path, "--fault", "sleep", limits=Limits(keyprovider_timeout_s=0.5))
    with pytest.raises(TransportError, match="no answer within") as info:
        KeyProviderWrapper(NAME, None, transport).wrap(OPTS)
    assert info.value.retryable


def test_cmd_answer_is_capped(tmp_path: Path) -> None:
    transport = cmd_transport(tmp_path, "--fault", "huge", limits=Limits(keyprovider_max_response_bytes=1024))
    with pytest.raises(ProtocolError, match="larger than 1024 bytes"):
        KeyProviderWrapper(NAME, None, transport).wrap(OPTS)


def test_cmd_missing_program_is_config_error(tmp_path: Path) -> None:
    transport = CommandTransport(NAME, str(tmp_path / "no-such-provider"))
    with pytest.raises(ConfigError, match=r"'kp'.*cannot execute"):
        transport.call("wrap", b"{}")


# --- gRPC transport ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["go", "array"])
def test_grpc_round_trip(grpc_provider: Callable[[str], tuple[ProviderServicer, str]], fmt: str) -> None:
    servicer, target = grpc_provider(fmt)
    config = json.dumps({"key-providers": {NAME: {"grpc": target}}}).encode()
    transport = transport_for(load_keyprovider_config("inline.json", config)[NAME], LIMITS)
    assert isinstance(transport, GrpcTransport)
    round_trip(transport, None, None)
    assert [method for method, _ in servicer.requests] == ["WrapKey", "UnWrapKey"]
    assert json.loads(servicer.requests[0][1])["op"] == "keywrap"


def test_grpc_target_with_http_scheme(grpc_provider: Callable[[str], tuple[ProviderServicer, str]]) -> None:
    _, target = grpc_provider("go")
    round_trip(GrpcTransport(NAME, "http://" + target, LIMITS), None, None)


def test_grpc_unwrap_refused_is_key_unwrap_error(
    grpc_provider: Callable[[str], tuple[ProviderServicer, str]], other_key_file: str
) -> None:
    _, target = grpc_provider("go")
    transport = GrpcTransport(NAME, target, LIMITS)
    annotation = KeyProviderWrapper(NAME, None, transport).wrap(OPTS)
    unwrapper = KeyProviderUnwrapper(NAME, f"keyfile={other_key_file}".encode(), transport)
    with pytest.raises(KeyUnwrapError, match="'kp'") as info:
        unwrapper.unwrap(ANNOTATION_KEY, annotation)
    assert isinstance(info.value.__cause__, ProviderFailedError)
    assert "PERMISSION_DENIED" in str(info.value.__cause__)


def test_grpc_closed_port_is_retryable_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = GrpcTransport(NAME, f"127.0.0.1:{port}", LIMITS)
    with pytest.raises(TransportError, match=r"'kp'.*UNAVAILABLE") as info:
        KeyProviderUnwrapper(NAME, None, transport).unwrap(ANNOTATION_KEY, b"x")
    assert info.value.retryable
    assert not isinstance(info.value, (KeyUnwrapError, ProviderFailedError))


def test_grpc_answer_is_capped(grpc_provider: Callable[[str], tuple[ProviderServicer, str]]) -> None:
    _, target = grpc_provider("array")
    transport = GrpcTransport(NAME, target, Limits(keyprovider_max_response_bytes=64))
    with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED"):
        KeyProviderWrapper(NAME, None, transport).wrap(OPTS)


def test_grpc_https_target_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="'kp'"):
        GrpcTransport(NAME, "https://kp.example:443", LIMITS)


# --- config file ---------------------------------------------------------------------------------------------


def test_config_cmd_wins_over_grpc() -> None:
    data = b'{"key-providers":{"kp":{"grpc":"127.0.0.1:1","cmd":{"path":"/bin/kp","args":["-v"]}}}}'
    assert load_keyprovider_config("c.json", data) == {
        NAME: KeyProviderEntry(NAME, "/bin/kp", ("-v",), None, None, None)
    }


def test_config_reads_the_file(tmp_path: Path) -> None:
    entries = load_keyprovider_config(cmd_config(tmp_path))
    assert entries[NAME].cmd_path == sys.executable
    assert entries[NAME].cmd_args == (PEER, "--name", NAME)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"key-providers":[]}', "'key-providers' must be an object"),
        (b'{"key-providers":{"kp":{}}}', "provider 'kp' has no cmd, grpc, ttrpc or native"),
        (b'{"key-providers":{"kp":{"path":"/bin/kp"}}}', "'path' belongs under 'cmd'"),
        (b'{"key-providers":{"kp":{"http":"x"}}}', "provider 'kp' has no cmd"),
        (b'{"key-providers":{"kp":"x"}}', "provider 'kp' must be an object"),
        (b'{"key-providers":{"kp":{"cmd":"/bin/kp"}}}', "provider 'kp': 'cmd' must be an object"),
        (b'{"key-providers":{"kp":{"cmd":{"args":[]}}}}', "provider 'kp': 'cmd.path'"),
        (b'{"key-providers":{"kp":{"cmd":{"path":"/x","args":[1]}}}}', "provider 'kp': 'cmd.args'"),
        (b'{"key-providers":{"kp":{"grpc":5}}}', "provider 'kp': 'grpc' must be a non-empty string"),
    ],
)
def test_config_malformed_is_config_error_naming_file_and_provider(data: bytes, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        load_keyprovider_config("/etc/kp.json", data)
    assert str(info.value).startswith("key provider config /etc/kp.json:")


def test_config_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_keyprovider_config(str(tmp_path / "absent.json"))


def test_config_without_providers_is_empty() -> None:
    assert load_keyprovider_config("c.json", b"{}") == {}


def test_config_grpc_tls_is_refused() -> None:
    data = b'{"key-providers":{"kp":{"grpc":"kp:443","grpc-tls":{"root-ca-file":"ca.pem"}}}}'
    with pytest.raises(UnsupportedError, match="provider 'kp': 'grpc-tls'"):
        load_keyprovider_config("c.json", data)


def test_vector_image_rs_grpc_config() -> None:
    entries = load_keyprovider_config(str(VECTORS / "image-rs" / "ocicrypt_keyprovider_grpc.conf"))
    entry = KeyProviderEntry("attestation-agent", None, (), "127.0.0.1:50000", None, None)
    assert entries == {"attestation-agent": entry}
    assert isinstance(transport_for(entry, LIMITS), GrpcTransport)


def test_vector_image_rs_ttrpc_config() -> None:
    entries = load_keyprovider_config(str(VECTORS / "image-rs" / "ocicrypt_keyprovider_ttrpc.conf"))
    entry = KeyProviderEntry("attestation-agent", None, (), None, "unix:///run/confidential-containers/cdh.sock", None)
    assert entries == {"attestation-agent": entry}
    with pytest.raises(UnsupportedError, match="ttrpc transport arrives with the ttrpc work"):
        transport_for(entry, LIMITS)


def test_vector_ocicrypt_rs_config() -> None:
    entries = load_keyprovider_config(str(VECTORS / "ocicrypt-rs" / "ocicrypt_config.json"))
    assert entries == {
        "keyprovider1": KeyProviderEntry("keyprovider1", "/usr/lib/keyprovider-wrapkey", (), None, None, None),
        "keyprovider2": KeyProviderEntry("keyprovider2", None, (), "localhost:32223", None, None),
        "keyprovider3": KeyProviderEntry("keyprovider3", None, (), None, None, "attestation_agent"),
        "keyprovider4": KeyProviderEntry("keyprovider4", None, (), None, "unix:///tmp/keyprovider.sock", None),
    }
    assert isinstance(transport_for(entries["keyprovider1"], LIMITS), CommandTransport)
    with pytest.raises(UnsupportedError, match="native transport"):
        transport_for(entries["keyprovider3"], LIMITS)


# --- end to end through the CLI ------------------------------------------------------------------------------


def test_cli_copy_encrypts_and_decrypts_with_a_cmd_provider(tmp_path: Path, key_file: str) -> None:
    from cocoguest.cli.main import main  # noqa: PLC0415 - the CLI is only needed here
    from cocoguest.image.build import build_layout  # noqa: PLC0415

    plain, enc, dec = tmp_path / "plain", tmp_path / "enc", tmp_path / "dec"
    build_layout(plain, sorted((Path(__file__).parents[2] / "demo" / "layers").iterdir()))
    config = cmd_config(tmp_path, "--key-file", key_file)
    copy = ["copy", "--quiet", "--keyprovider-config", config]
    assert main([*copy, "--encryption-key", f"provider:{NAME}", f"oci:{plain}", f"oci:{enc}"]) == 0

    def manifest(layout: Path) -> dict[str, list[dict[str, object]]]:
        digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].split(":", 1)[1]
        return json.loads((layout / "blobs" / "sha256" / digest).read_text())  # type: ignore[no-any-return]

    for layer in manifest(enc)["layers"]:
        annotations = layer["annotations"]
        assert isinstance(annotations, dict)
        packet = json.loads(base64.b64decode(annotations[ANNOTATION_KEY]))
        assert packet["kid"] == Path(key_file).name
    assert main([*copy, "--decryption-key", f"provider:{NAME}", f"oci:{enc}", f"oci:{dec}"]) == 0
    assert manifest(dec)["layers"] == manifest(plain)["layers"]
