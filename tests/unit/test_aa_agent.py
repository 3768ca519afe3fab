"""The AA core (attestation/agent.py) and its service (rpc/services) in-process, on synthetic TDX devices.

The TDX attester runs its production code against a fake configfs-tsm tree (tests/fixtures/tee_devices.py) and
sysfs-like measurement files (``rtmr3:sha384``, ``mrconfigid``); a plain file stands in for the RTMR, so the
test checks what was written to it, not the hardware's extend arithmetic. The service is served by our ttrpc
server and called by our client, the same code the binary runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cocoguest.attestation.agent import (
    AttestationAgent,
    InitDataInput,
    RuntimeMeasurementResult,
    start_agent,
)
from cocoguest.attestation.attester import BindResult, HashAlgorithm
from cocoguest.attestation.config import AaConfig, EventLogConfig, KbsTokenConfig
from cocoguest.attestation.configfs_tsm import PROVIDER_TDX, ConfigfsTsm
from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.attestation.drivers.tdx import TdxAttester
from cocoguest.attestation.drivers.tdx_structs import parse_td_quote
from cocoguest.attestation.eventlog import encode_entry, parse_entries
from cocoguest.errors import (
    AttestationRequestError,
    ConfigError,
    InitDataMismatchError,
    RpcStatusError,
)
from cocoguest.rpc.services.attestation_agent import register_ttrpc
from cocoguest.rpc.services.attestation_agent_client import AaClient
from cocoguest.rpc.ttrpc.codes import Code
from cocoguest.rpc.ttrpc.server import TtrpcServer
from tests.fixtures.tee_devices import FakeTsmKernel, td_quote_v4
from tests.fixtures.test_kbs import TOKEN_LIFETIME_S, TestKbs

T = TypeVar("T")
INITDATA = b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = "x"\n'


class Tdx:
    """A synthetic TDX guest: configfs-tsm kernel, RTMR and MRCONFIGID files, event log paths."""

    def __init__(self, root: Path, mrconfigid: bytes = bytes(48)) -> None:
        self.kernel = FakeTsmKernel(root / "tsm", PROVIDER_TDX, td_quote_v4)
        self.measurements = root / "measurements"
        self.measurements.mkdir()
        self.rtmr3 = self.measurements / "rtmr3:sha384"
        self.rtmr3.write_bytes(bytes(48))
        (self.measurements / "mrconfigid").write_bytes(mrconfigid)
        self.aael = root / "run" / "eventlog"
        self.wal = root / "run" / ".wal_event_entry"
        tsm = ConfigfsTsm(
            self.kernel.root, create_entry=self.kernel.create_entry, remove_entry=self.kernel.remove_entry
        )
        self.attester = TdxAttester(
            tsm=tsm, measurements_dir=self.measurements, ccel_path=root / "CCEL", aael_path=self.aael
        )

    def start(self, config: AaConfig | None = None, init_data: InitDataInput | None = None) -> AttestationAgent:
        config = config if config is not None else AaConfig()
        init_data = init_data if init_data is not None else InitDataInput()
        return start_agent(config, init_data=init_data, attester=self.attester, aael_path=self.aael, wal_path=self.wal)


def served(agent: AttestationAgent, sock: Path, call: Callable[[AaClient], Awaitable[T]]) -> T:
    """Serve ``agent`` on ``sock`` with our ttrpc server and run ``call`` with our client."""

    async def run() -> T:
        async with TtrpcServer() as server:
            register_ttrpc(server, agent)
            await server.listen(f"unix://{sock}")
            async with await AaClient.connect(f"unix://{sock}") as client:
                return await call(client)

    return asyncio.run(run())


def test_tdx_evidence_binds_runtime_data_padded(tmp_path: Path) -> None:
    tdx = Tdx(tmp_path)
    agent = tdx.start()
    evidence = json.loads(served(agent, tmp_path / "aa.sock", lambda c: c.get_evidence(b"nonce")))
    assert tdx.kernel.inblobs == [b"nonce".ljust(64, b"\0")]
    assert parse_td_quote(base64.b64decode(evidence["quote"])).report_data == b"nonce".ljust(64, b"\0")
    assert served(agent, tmp_path / "aa.sock", lambda c: c.get_tee_type()) == "tdx"


def test_tdx_runtime_data_too_long_is_internal_status(tmp_path: Path) -> None:
    agent = Tdx(tmp_path).start()
    with pytest.raises(RpcStatusError) as caught:
        served(agent, tmp_path / "aa.sock", lambda c: c.get_evidence(bytes(65)))
    assert caught.value.code == Code.INTERNAL
    assert caught.value.status_message.startswith("[ERROR:attestation-agent] AA-KBC get evidence failed: tdx: ")


def test_extend_runtime_measurement_writes_the_event_log(tmp_path: Path) -> None:
    tdx = Tdx(tmp_path)
    agent = tdx.start(AaConfig(eventlog=EventLogConfig(enable_eventlog=True)))
    result = served(
        agent,
        tmp_path / "aa.sock",
        lambda c: c.extend_runtime_measurement("github.com/confidential-containers", "PullImage", '{"image":"x"}'),
    )
    assert result == "OK"
    agent.close()
    text = b'github.com/confidential-containers PullImage {"image":"x"}'
    raw = tdx.aael.read_bytes()
    assert raw == encode_entry(4, HashAlgorithm.SHA384, text)  # PCR 17 -> CC MR 4 (RTMR3)
    entries, _ = parse_entries(raw)
    assert [(e.event.domain, e.event.operation, e.event.content) for e in entries] == [
        ("github.com/confidential-containers", "PullImage", '{"image":"x"}')
    ]
    assert tdx.rtmr3.read_bytes() == entries[0].digest
    assert not tdx.wal.exists()


def test_extend_not_enabled_not_supported_and_bad_register(tmp_path: Path) -> None:
    tdx = Tdx(tmp_path)
    assert tdx.start().extend_runtime_measurement("d", "o", "c") is RuntimeMeasurementResult.NOT_ENABLED
    assert not tdx.aael.exists()
    sample = start_agent(
        AaConfig(eventlog=EventLogConfig(enable_eventlog=True)), attester=SampleAttester(), aael_path=tdx.aael
    )
    assert sample.extend_runtime_measurement("d", "o", "c") is RuntimeMeasurementResult.NOT_SUPPORTED
    enabled = Tdx(tmp_path / "2").start(AaConfig(eventlog=EventLogConfig(enable_eventlog=True)))
    with pytest.raises(AttestationRequestError, match="register index 24"):
        enabled.extend_runtime_measurement("d", "o", "c", 24)
    with pytest.raises(AttestationRequestError, match="domain"):
        enabled.extend_runtime_measurement("two words", "o", "c")


def test_init_data_digest_binding_right_and_wrong(tmp_path: Path) -> None:
    digest = hashlib.sha384(INITDATA).digest()
    tdx = Tdx(tmp_path, mrconfigid=digest)
    agent = tdx.start(init_data=InitDataInput(digest_b64=base64.b64encode(digest).decode()))
    assert agent.bind_init_data(digest) is BindResult.BOUND
    wrong = hashlib.sha384(INITDATA + b"#").digest()
    # At start-up a wrong digest stops the agent ...
    with pytest.raises(InitDataMismatchError, match="MRCONFIGID"):
        tdx.start(init_data=InitDataInput(digest_b64=base64.b64encode(wrong).decode()))
    # ... and over the service BindInitData answers INTERNAL naming the mismatch.
    served(agent, tmp_path / "aa.sock", lambda c: c.bind_init_data(digest))
    with pytest.raises(RpcStatusError) as caught:
        served(agent, tmp_path / "aa.sock", lambda c: c.bind_init_data(wrong))
    assert caught.value.code == Code.INTERNAL
    assert "AA bind init data failed: init-data digest" in caught.value.status_message


def test_init_data_toml_wins_over_the_digest(tmp_path: Path) -> None:
    digest = hashlib.sha384(INITDATA).digest()
    tdx = Tdx(tmp_path, mrconfigid=digest)
    wrong = base64.b64encode(bytes(48)).decode()
    tdx.start(init_data=InitDataInput(toml=INITDATA, digest_b64=wrong))
    with pytest.raises(InitDataMismatchError):
        tdx.start(init_data=InitDataInput(toml=INITDATA + b"\n"))


def test_get_token_cached_then_renewed_after_expiry(tmp_path: Path) -> None:
    now = [1_700_000_000.0]

    def clock() -> float:
        return now[0]

    with TestKbs(clock=clock).running() as kbs:
        agent = AttestationAgent(SampleAttester(), config=AaConfig(kbs=KbsTokenConfig(kbs.url)), clock=clock)
        tokens = {agent.get_token("kbs") for _ in range(10)}
        assert (kbs.attestations, len(tokens), agent.kbs_attestations) == (1, 1, 1)
        now[0] += TOKEN_LIFETIME_S
        agent.get_token("kbs")
        assert kbs.attestations == 2
        agent.close()


def test_get_token_errors() -> None:
    agent = AttestationAgent(SampleAttester())
    with pytest.raises(ConfigError, match=r"no \[token_configs.kbs\]"):
        agent.get_token("kbs")
    with pytest.raises(ConfigError, match=r"no \[token_configs.coco_as\]"):
        agent.get_token("coco_as")
    with pytest.raises(ConfigError, match="unknown token type 'x'"):
        agent.get_token("x")
