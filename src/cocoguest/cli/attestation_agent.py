"""The ``attestation-agent`` binary: the AA service on ttrpc (``unix://``, ``vsock://``) or gRPC (``HOST:PORT``).

Flags (upstream ``ttrpc-aa``/``grpc-aa``, guest-components.md §2)::

    attestation-agent [-a/--attestation_sock ADDR] [-c/--config-file FILE] [-i/--initdata-digest B64]
                      [-t/--initdata-toml FILE] [--allow-sample-attester]

``ADDR`` defaults to ``unix:///run/confidential-containers/attestation-agent/attestation-agent.sock`` (the
directory is created, a stale socket replaced); ``HOST:PORT`` (e.g. ``127.0.0.1:50002``) serves gRPC instead.

Environment read here (and only here), as upstream: ``AA_KBC_PARAMS`` (then ``agent.aa_kbc_params=`` on
``/proc/cmdline``) for ``token_configs.kbs`` when there is no config file; ``AAEL_PATH`` (the event log, default
``/run/attestation-agent/eventlog``; its WAL ``.wal_event_entry`` sits next to it); ``OCCLUM`` and
``ENABLE_SAMPLE_DEVICE`` (TEE detection); ``AA_TPM_DEVICE``, ``AA_TPM_AK_HANDLE``, ``COCOGUEST_TPM_TCTI``,
``COCOGUEST_AZURE_IMDS_URL`` (TPM and Azure vTPM backends); ``COCOGUEST_LIMITS`` (tighter limits).

Invariants:
    * SECURITY: with no TEE found the agent refuses to start unless ``--allow-sample-attester`` (or
      ``allow_sample_attester = true`` in the config) was given; the error names every probe.
    * SECURITY: an init-data digest that does not bind stops start-up before anything is served.
    * SIGTERM and SIGINT stop the server cleanly: in-flight calls get ``Limits.aa_shutdown_grace_s`` (gRPC) or
      are cancelled (ttrpc), the unix socket file is removed, the event log released; the exit status is 0.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import click

from cocoguest.attestation.agent import AttestationAgent, InitDataInput, start_agent
from cocoguest.attestation.ccel import DEFAULT_AAEL_PATH
from cocoguest.attestation.config import AaConfig, default_aa_config, load_aa_config
from cocoguest.cli.attester_source import backends_from_env, probes_from_env
from cocoguest.cli.main import run_command
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.errors import ConfigError
from cocoguest.kbs.kbc.params import AaKbcParams, resolve_aa_kbc_params
from cocoguest.limits import Limits
from cocoguest.rpc.services.attestation_agent import register_ttrpc, start_grpc_server
from cocoguest.rpc.services.attestation_agent_client import DEFAULT_AA_TTRPC_ADDRESS, is_ttrpc_address
from cocoguest.rpc.ttrpc.address import UnixAddress
from cocoguest.rpc.ttrpc.server import TtrpcServer

_logger = logging.getLogger("cocoguest.attestation_agent")

WAL_NAME: Final = ".wal_event_entry"
_CMDLINE: Final = Path("/proc/cmdline")
_LOG_LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 1,
}


def _aa_kbc_params(env: Mapping[str, str]) -> AaKbcParams | None:
    try:
        cmdline: str | None = _CMDLINE.read_text(encoding="utf-8", errors="replace")
    except OSError:
        cmdline = None
    params = resolve_aa_kbc_params(env=env.get("AA_KBC_PARAMS"), cmdline=cmdline)
    return params if params.source != "the default" else None


def _read_initdata(path: Path, limits: Limits) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_initdata_bytes + 1)
    except OSError as e:
        msg = f"init-data TOML {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_initdata_bytes:
        msg = f"init-data TOML {path}: larger than {limits.max_initdata_bytes} bytes"
        raise ConfigError(msg)
    return data


async def serve(agent: AttestationAgent, address: str, limits: Limits, stop: asyncio.Event) -> None:
    """Serve ``agent`` on ``address`` until ``stop`` is set; then stop cleanly (see the module docstring).

    Raises:
        ConfigError, TransportError, UnsupportedError: the address cannot be served.
    """
    if is_ttrpc_address(address):
        server = TtrpcServer(limits)
        register_ttrpc(server, agent)
        bound = await server.listen(address)
        _logger.info("attestation-agent: serving ttrpc on %s", bound)
        try:
            await stop.wait()
        finally:
            await server.close()
            if isinstance(bound, UnixAddress) and not bound.abstract:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(bound.path)
        return
    grpc_server, port = await start_grpc_server(agent, address, limits=limits)
    _logger.info("attestation-agent: serving gRPC on %s (port %d)", address, port)
    try:
        await stop.wait()
    finally:
        await grpc_server.stop(limits.aa_shutdown_grace_s)


async def _run(agent: AttestationAgent, address: str, limits: Limits) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(agent, address, limits, stop)
    _logger.info("attestation-agent: stopped")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-a",
    "--attestation_sock",
    "address",
    default=DEFAULT_AA_TTRPC_ADDRESS,
    show_default=True,
    help="unix:///path or vsock://CID:PORT serves ttrpc; HOST:PORT serves gRPC.",
)
@click.option("-c", "--config-file", type=click.Path(path_type=Path, dir_okay=False), help="AA config (TOML/JSON).")
@click.option("-i", "--initdata-digest", help="Init-data digest to bind (base64 standard).")
@click.option(
    "-t",
    "--initdata-toml",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Init-data TOML: its digest is bound and it is sent to the KBS (wins over -i).",
)
@click.option(
    "--allow-sample-attester",
    is_flag=True,
    help="DEVELOPMENT ONLY: use the sample attester (no security) when no TEE is found.",
)
def command(
    address: str,
    config_file: Path | None,
    initdata_digest: str | None,
    initdata_toml: Path | None,
    allow_sample_attester: bool,
) -> None:
    """Attestation agent: TEE evidence, KBS tokens, runtime measurement, init-data binding."""
    env = environment()
    limits = limits_from_env(env)
    config: AaConfig = (
        load_aa_config(config_file, limits=limits)
        if config_file is not None
        else default_aa_config(_aa_kbc_params(env))
    )
    logging.getLogger().setLevel(_LOG_LEVELS[config.log_level])
    aael_path = Path(env["AAEL_PATH"]) if env.get("AAEL_PATH") else DEFAULT_AAEL_PATH
    probes = probes_from_env(env)
    init_data = InitDataInput(
        toml=_read_initdata(initdata_toml, limits) if initdata_toml is not None else None,
        digest_b64=initdata_digest,
    )
    agent = start_agent(
        config,
        allow_sample_attester=allow_sample_attester,
        init_data=init_data,
        probes=probes,
        backends=backends_from_env(env),
        aael_path=aael_path,
        wal_path=aael_path.parent / WAL_NAME,
        limits=limits,
    )
    try:
        asyncio.run(_run(agent, address, limits))
    finally:
        agent.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the binary; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_command(command, argv, "attestation-agent")


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
