"""The ``attestation-agent`` binary as a subprocess: every AA method over ttrpc (our client and the Go
containerd/ttrpc peer) and over gRPC, GetToken against the test KBS, start-up refusals, clean shutdown.

The sample attester is explicitly allowed (this machine has no TEE); the hardware attesters behind the same
service code are exercised in tests/unit/test_aa_agent.py against synthetic devices.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.cli.main import main as cocoguest_main
from cocoguest.errors import RpcStatusError
from cocoguest.kbs.client import PassportKbsClient, credentials_from_aa_json
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.token_cache import Credentials
from cocoguest.rpc._generated import attestation_agent_pb2 as pb
from cocoguest.rpc.services.attestation_agent import SERVICE
from cocoguest.rpc.services.attestation_agent_client import AaClient
from cocoguest.rpc.ttrpc.codes import Code
from tests.fixtures.aa_binary import READY_TIMEOUT_S, aa_command, aa_env, free_tcp_port, running_aa
from tests.fixtures.test_kbs import TestKbs, sample_evidence

pytestmark = pytest.mark.interop

RUNTIME_DATA = bytes(range(48))


@pytest.fixture(scope="module")
def kbs() -> Iterator[TestKbs]:
    with TestKbs(resources={"default/key/one": b"resource one"}).running() as server:
        yield server


def _config(tmp_path: Path, kbs_url: str, *, eventlog: bool = False) -> Path:
    path = tmp_path / "aa.toml"
    path.write_text(
        f'[token_configs.kbs]\nurl = "{kbs_url}"\n\n[eventlog_config]\nenable_eventlog = {str(eventlog).lower()}\n'
    )
    return path


async def _client_calls(address: str) -> dict[str, object]:
    async with await AaClient.connect(address) as client:
        return {
            "tee": await client.get_tee_type(),
            "tees": await client.get_additional_tees(),
            "evidence": await client.get_evidence(RUNTIME_DATA),
            "additional": await client.get_additional_evidence(RUNTIME_DATA),
            "extend": await client.extend_runtime_measurement("github.com/test", "Op", "content with spaces"),
            "bind": await client.bind_init_data(bytes(32)),
            "token": await client.get_token("kbs"),
        }


def _check_answers(answers: dict[str, object], kbs: TestKbs) -> None:
    assert answers["tee"] == "sample"
    assert answers["tees"] == ["sampledevice"]
    assert answers["evidence"] == sample_evidence(RUNTIME_DATA)
    sample_device = {"svn": "2", "report_data": base64.b64encode(RUNTIME_DATA).decode()}
    assert json.loads(answers["additional"]) == {"sampledevice": sample_device}  # type: ignore[arg-type]
    assert answers["extend"] == "NOT_ENABLED"
    assert answers["bind"] is None
    token = answers["token"]
    assert isinstance(token, bytes)
    _check_token(token, kbs)


def _check_token(token: bytes, kbs: TestKbs) -> Credentials:
    document = json.loads(token)
    assert set(document) == {"token", "tee_keypair"}
    assert document["tee_keypair"].startswith("-----BEGIN PRIVATE KEY-----")
    credentials = credentials_from_aa_json(token, "test AA")

    class Provider:
        def get_kbs_credentials(self) -> Credentials:
            return credentials

    # The key pair the AA handed over is the one the KBS encrypts to: a passport client can fetch with it.
    client = PassportKbsClient(kbs.url, Provider())
    try:
        assert client.get_resource(ResourceUri.parse("kbs:///default/key/one")) == b"resource one"
    finally:
        client.close()
    return credentials


def test_every_method_over_ttrpc_with_our_client(tmp_path: Path, kbs: TestKbs) -> None:
    address = f"unix://{tmp_path}/aa.sock"
    config = _config(tmp_path, kbs.url)
    with running_aa(address, "-c", str(config), "--allow-sample-attester", env={"ENABLE_SAMPLE_DEVICE": "1"}) as aa:
        _check_answers(asyncio.run(_client_calls(address)), kbs)
        status, err = aa.stop()
    assert status == 0, err
    assert not (tmp_path / "aa.sock").exists(), "the socket file is removed on SIGTERM"
    assert "sample attester in use" in err


def test_every_method_over_grpc(tmp_path: Path, kbs: TestKbs) -> None:
    address = f"127.0.0.1:{free_tcp_port()}"
    config = _config(tmp_path, kbs.url)
    with running_aa(address, "-c", str(config), "--allow-sample-attester", env={"ENABLE_SAMPLE_DEVICE": "1"}) as aa:
        _check_answers(asyncio.run(_client_calls(address)), kbs)
        status, err = aa.stop()
    assert status == 0, err


def _go_call(go_peer: Path, sock: Path, method: str, request: bytes) -> tuple[int, str, bytes]:
    args = [str(go_peer), "-mode", "client", "-addr", str(sock), "-service", SERVICE, "-method", method]
    args += ["-payload-hex", request.hex(), "-timeout", "30s"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(result.stdout)
    return answer["code"], answer["message"], bytes.fromhex(answer["payload_hex"])


def test_every_method_from_the_go_ttrpc_peer(tmp_path: Path, kbs: TestKbs, go_peer: Path) -> None:
    sock = tmp_path / "aa.sock"
    config = _config(tmp_path, kbs.url)
    calls = {
        "GetTeeType": (pb.GetTeeTypeRequest(), pb.GetTeeTypeResponse),
        "GetAdditionalTees": (pb.GetAdditionalTeesRequest(), pb.GetAdditionalTeesResponse),
        "GetEvidence": (pb.GetEvidenceRequest(RuntimeData=RUNTIME_DATA), pb.GetEvidenceResponse),
        "GetAdditionalEvidence": (pb.GetAdditionalEvidenceRequest(RuntimeData=RUNTIME_DATA), pb.GetEvidenceResponse),
        "ExtendRuntimeMeasurement": (
            pb.ExtendRuntimeMeasurementRequest(Domain="d", Operation="o", Content="c", RegisterIndex=17),
            pb.ExtendRuntimeMeasurementResponse,
        ),
        "BindInitData": (pb.BindInitDataRequest(Digest=bytes(48)), pb.BindInitDataResponse),
        "GetToken": (pb.GetTokenRequest(TokenType="kbs"), pb.GetTokenResponse),
    }
    answers: dict[str, object] = {}
    with running_aa(f"unix://{sock}", "-c", str(config), "--allow-sample-attester", env={"ENABLE_SAMPLE_DEVICE": "1"}):
        for method, (request, answer_type) in calls.items():
            code, message, payload = _go_call(go_peer, sock, method, request.SerializeToString())
            assert (code, message) == (0, ""), method
            answers[method] = answer_type.FromString(payload)
        # An error travels as upstream's INTERNAL status with the AA's message prefix.
        code, message, _ = _go_call(go_peer, sock, "GetToken", pb.GetTokenRequest(TokenType="nope").SerializeToString())
        assert code == Code.INTERNAL
        assert message.startswith("[ERROR:attestation-agent] AA-KBC get token failed: GetToken: unknown token type")
        # A request that is not the method's message: INVALID_ARGUMENT.
        code, message, _ = _go_call(go_peer, sock, "GetEvidence", b"\xff\xff\xff")
        assert code == Code.INVALID_ARGUMENT
    assert answers["GetTeeType"].tee == "sample"  # type: ignore[attr-defined]
    assert list(answers["GetAdditionalTees"].additional_tees) == ["sampledevice"]  # type: ignore[attr-defined]
    assert answers["GetEvidence"].Evidence == sample_evidence(RUNTIME_DATA)  # type: ignore[attr-defined]
    assert b'"sampledevice"' in answers["GetAdditionalEvidence"].Evidence  # type: ignore[attr-defined]
    assert answers["ExtendRuntimeMeasurement"].Result == pb.NOT_ENABLED  # type: ignore[attr-defined]
    _check_token(answers["GetToken"].Token, kbs)  # type: ignore[attr-defined]


def test_ten_get_token_calls_attest_once(tmp_path: Path) -> None:
    with TestKbs(resources={"default/key/one": b"resource one"}).running() as kbs:
        address = f"unix://{tmp_path}/aa.sock"
        with running_aa(address, "-c", str(_config(tmp_path, kbs.url)), "--allow-sample-attester"):

            async def ten() -> list[bytes]:
                async with await AaClient.connect(address) as client:
                    sequential = [await client.get_token("kbs") for _ in range(5)]
                    concurrent = await asyncio.gather(*(client.get_token("kbs") for _ in range(5)))
                    return sequential + list(concurrent)

            tokens = asyncio.run(ten())
        assert kbs.attestations == 1
        assert kbs.auths == 1
        assert len(set(tokens)) == 1


def test_without_allow_sample_attester_the_binary_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        aa_command("-a", f"unix://{tmp_path}/aa.sock"),
        env=aa_env(),
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        check=False,
    )
    if "no TEE found" not in result.stderr:
        pytest.skip(f"this machine has a TEE or a TEE-like device: {result.stderr[-300:]}")
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    # The error names what was probed and how to allow the sample attester.
    for probed in ("/sys/kernel/config/tsm/report", "/dev/tdx_guest", "sev-guest", "/dev/tpm0"):
        assert probed in error_lines[0]
    assert "--allow-sample-attester" in error_lines[0]
    assert not (tmp_path / "aa.sock").exists()


def test_allow_sample_attester_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "aa.json"
    config.write_text('{"allow_sample_attester": true}')
    with running_aa(f"unix://{tmp_path}/aa.sock", "-c", str(config)) as aa:
        assert aa.stop()[0] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-i", "not base64!"], "init-data digest is not valid base64"),
        (["-t", "/nonexistent/initdata.toml"], "init-data TOML /nonexistent/initdata.toml: cannot read"),
        (["-c", "/nonexistent/aa.toml"], "AA config /nonexistent/aa.toml: cannot read"),
    ],
)
def test_bad_start_up_input_is_one_error_line(tmp_path: Path, args: list[str], expected: str) -> None:
    command = aa_command("-a", f"unix://{tmp_path}/aa.sock", "--allow-sample-attester", *args)
    result = subprocess.run(command, env=aa_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"error: {expected}" in result.stderr
    assert result.stdout == ""


def test_initdata_toml_is_sent_to_the_kbs(tmp_path: Path) -> None:
    initdata = tmp_path / "initdata.toml"
    initdata.write_text('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"policy.rego" = "package x"\n')
    with TestKbs().running() as kbs:
        address = f"unix://{tmp_path}/aa.sock"
        args = ("-c", str(_config(tmp_path, kbs.url)), "--allow-sample-attester", "-t", str(initdata))
        with running_aa(address, *args):
            asyncio.run(_get_token(address))
        assert kbs.last_init_data == {"format": "toml", "body": initdata.read_text()}


async def _get_token(address: str) -> bytes:
    async with await AaClient.connect(address) as client:
        return await client.get_token("kbs")


def test_cocoguest_aa_verbs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"unix://{tmp_path}/aa.sock"
    with running_aa(address, "--allow-sample-attester"):
        assert cocoguest_main(["aa", "-a", address, "get-tee"]) == 0
        assert capsys.readouterr().out == "sample\n"
        runtime = base64.b64encode(b"nonce").decode()
        assert cocoguest_main(["aa", "-a", address, "get-evidence", "--runtime-data", runtime]) == 0
        assert capsys.readouterr().out.strip() == sample_evidence(b"nonce").decode()
        assert cocoguest_main(["aa", "-a", address, "extend-runtime-measurement", "-d", "d", "-o", "o", "-c", "c"]) == 0
        assert capsys.readouterr().out == "NOT_ENABLED\n"
        digest = base64.b64encode(bytes(32)).decode()
        assert cocoguest_main(["aa", "-a", address, "bind-init-data", "--digest", digest]) == 0
        assert capsys.readouterr().out == "OK\n"
        # No [token_configs.kbs]: the AA's INTERNAL status is one error line, nothing on stdout.
        assert cocoguest_main(["aa", "-a", address, "get-token", "--token-type", "kbs"]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert "INTERNAL (13): [ERROR:attestation-agent] AA-KBC get token failed" in err
        assert "no [token_configs.kbs]" in err


def test_grpc_status_for_agent_errors(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_tcp_port()}"
    with running_aa(address, "--allow-sample-attester"):

        async def call() -> None:
            async with await AaClient.connect(address) as client:
                await client.get_token("coco_as")

        with pytest.raises(RpcStatusError) as caught:
            asyncio.run(call())
    assert caught.value.code == Code.INTERNAL
    assert caught.value.status_message.startswith(
        "[ERROR:attestation-agent] AA-KBC get token failed: GetToken(coco_as)"
    )
