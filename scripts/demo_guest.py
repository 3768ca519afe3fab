"""The demo's guest services as separate processes: attestation-agent, confidential-data-hub, api-server-rest.

Used by scripts/demo.py (issue 11). Each service runs from its console script next to the running interpreter
(``<venv>/bin/attestation-agent`` ...) when present, else ``python -m`` of the same module; it inherits the
environment (so ``PYTHONPATH`` picks the same checkout) and writes its output to ``<name>.log`` in the demo's
temporary directory.

Invariants:
    * A service is only handed to the caller once it ANSWERS: the AA a GetTeeType call, the CDH a GetResource
      call (an invalid path, so no KBS traffic: any ttrpc status is an answer), api-server-rest ``GET /info``.
    * Every process started here is stopped when its ``with`` block ends, whatever ends it (an error, Ctrl-C,
      SIGTERM of the demo, which scripts/demo.py turns into ``SystemExit``): SIGTERM, then SIGKILL after
      ``STOP_TIMEOUT_S``, and always reaped.
    * SECURITY: the AA runs with the SAMPLE attester explicitly allowed (this machine has no TEE); its evidence
      proves nothing. Sockets live in the demo's private temporary directory; api-server-rest binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cocoguest.errors import CocoError
from cocoguest.rpc.services.attestation_agent_client import AaClient
from cocoguest.rpc.services.cdh_client import CdhClient

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1
CALL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class GuestService:
    """A started service: its name, process, address (ttrpc address or http URL) and log file."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    log: Path


def service_command(script: str, module: str) -> list[str]:
    """The console script ``script`` next to ``sys.executable`` when it exists, else ``python -m module``."""
    console = Path(sys.executable).parent / script
    if console.is_file() and os.access(console, os.X_OK):
        return [str(console)]
    return [sys.executable, "-m", module]


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(service: GuestService) -> None:
    """SIGTERM; SIGKILL if it has not exited after ``STOP_TIMEOUT_S``; always reap it."""
    process = service.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        print(
            f"   ({service.name} exited with status {process.returncode}; see its log below)\n" + _log_tail(service.log)
        )


@contextlib.contextmanager
def _service(
    name: str, module: str, args: list[str], address: str, work: Path, ready: Callable[[], bool]
) -> Iterator[GuestService]:
    """Start ``name``; wait until ``ready()`` (or fail naming the service and its log); stop it at the end."""
    log = work / f"{name}.log"
    env = {**os.environ, "AAEL_PATH": str(work / "aael" / "eventlog")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*service_command(name, module), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    service = GuestService(name, process, address, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with status {process.returncode}" if process.poll() is not None else "timed out"
                msg = f"{name} did not start ({state}); its log:\n{_log_tail(log)}"
                raise RuntimeError(msg)
            time.sleep(POLL_S)
        print(f"   {name} (pid {process.pid}) answering on {address}")
        yield service
    finally:
        _stop(service)


def _aa_answers(address: str) -> bool:
    async def call() -> bool:
        try:
            async with await AaClient.connect(address, timeout_s=CALL_TIMEOUT_S) as client:
                await client.get_tee_type()
        except CocoError:
            return False
        return True

    return asyncio.run(call())


def _cdh_answers(address: str) -> bool:
    async def call() -> bool:
        try:
            client = await CdhClient.connect(address, timeout_s=CALL_TIMEOUT_S)
        except CocoError:
            return False
        try:
            await client.get_resource("not-a-resource-uri")  # refused before any KBS traffic
        except CocoError as e:
            return "[CDH]" in str(e)  # the CDH's own refusal is an answer; a transport error is not
        finally:
            await client.close()
        return True

    return asyncio.run(call())


def _http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S).close()  # noqa: S310 (our loopback http:// URL)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def attestation_agent(work: Path, kbs_url: str) -> Iterator[GuestService]:
    """``attestation-agent -a unix://WORK/aa.sock -c WORK/aa.toml``: token_configs.kbs = the dev KBS."""
    address = f"unix://{work}/aa.sock"
    config = work / "aa.toml"
    # SECURITY: development only: no TEE here, so the sample attester must be allowed explicitly.
    config.write_text(
        f'allow_sample_attester = true\n\n[token_configs.kbs]\nurl = "{kbs_url}"\n\n'
        "[eventlog_config]\nenable_eventlog = false\n"
    )
    args = ["-a", address, "-c", str(config)]
    with _service("attestation-agent", "cocoguest.cli.attestation_agent", args, address, work,
                  lambda: _aa_answers(address)) as service:  # fmt: skip
        yield service


@dataclass(frozen=True)
class ImageSettings:
    """The CDH's ``[image]`` resources for PullImage (image-rs's ImageConfig keys), as ``kbs:///`` URIs."""

    policy_uri: str
    sigstore_config_uri: str
    registry_configuration_uri: str


@contextlib.contextmanager
def confidential_data_hub(work: Path, kbs_url: str, aa_address: str, image: ImageSettings) -> Iterator[GuestService]:
    """``confidential-data-hub -c WORK/cdh.toml``: cc_kbc against the dev KBS, tokens from the AA's socket, and
    an ``[image]`` section for PullImage (store under WORK/cdh-images)."""
    address = f"unix://{work}/cdh.sock"
    key_dir = work / "sealed-keys"
    key_dir.mkdir(exist_ok=True)
    config = work / "cdh.toml"
    config.write_text(
        f'socket = "{address}"\nsealed_secret_key_dir = "{key_dir}"\n\n'
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs_url}"\n\n[aa]\naa_socket = "{aa_address}"\n\n'
        f'[image]\nwork_dir = "{work / "cdh-images"}"\nimage_security_policy_uri = "{image.policy_uri}"\n'
        f'sigstore_config_uri = "{image.sigstore_config_uri}"\n'
        f'registry_configuration_uri = "{image.registry_configuration_uri}"\n'
    )
    with _service("confidential-data-hub", "cocoguest.cli.cdh_server", ["-c", str(config)], address, work,
                  lambda: _cdh_answers(address)) as service:  # fmt: skip
        yield service


@contextlib.contextmanager
def api_server_rest(work: Path, port: int, aa_address: str, cdh_address: str) -> Iterator[GuestService]:
    """``api-server-rest -b 127.0.0.1:PORT -a AA -c CDH -f all``."""
    url = f"http://127.0.0.1:{port}"
    args = ["-b", f"127.0.0.1:{port}", "-a", aa_address, "-c", cdh_address, "-f", "all"]
    with _service("api-server-rest", "cocoguest.cli.api_server_rest", args, url, work,
                  lambda: _http_answers(f"{url}/info")) as service:  # fmt: skip
        yield service
