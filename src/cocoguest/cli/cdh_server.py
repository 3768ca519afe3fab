"""The ``confidential-data-hub`` binary: the CDH services on ttrpc (``unix://``, ``vsock://``) or gRPC (``HOST:PORT``).

Flags (upstream ``ttrpc-cdh``/``grpc-cdh``, guest-components.md §2): ``confidential-data-hub [-c CONFIG]``.
Without ``-c``: the KBC from ``AA_KBC_PARAMS`` (then ``agent.aa_kbc_params=`` on ``/proc/cmdline``, then
``offline_fs_kbc``), credentials and image settings from the kernel command line. Environment read here only:
``AA_KBC_PARAMS``, ``COCOGUEST_LIMITS``; ``COCOGUEST_CMDLINE_FILE`` replaces ``/proc/cmdline`` (tests).

Invariants:
    * ``[[credentials]]`` are fetched before anything is served; a failure stops start-up naming the resource.
    * SIGTERM/SIGINT stop the server cleanly; the unix socket file is removed; exit status 0.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import click

from cocoguest.cdh.config import CdhConfig, default_cdh_config, load_cdh_config
from cocoguest.cdh.hub import Hub, build_hub_kbc
from cocoguest.cli.main import run_command
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.kbs.kbc.params import resolve_aa_kbc_params
from cocoguest.limits import Limits
from cocoguest.rpc.services.attestation_agent_client import is_ttrpc_address
from cocoguest.rpc.services.cdh import CdhServices, register_ttrpc, start_grpc_server
from cocoguest.rpc.services.cdh_agent_port import AaAgentPort
from cocoguest.rpc.services.secure_mount import hub_key_fetcher, secure_mount_hook
from cocoguest.rpc.ttrpc.address import UnixAddress
from cocoguest.rpc.ttrpc.server import TtrpcServer

_logger = logging.getLogger("cocoguest.confidential_data_hub")
_CMDLINE: Final = Path("/proc/cmdline")
_LOG_LEVELS: Final = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


def _cmdline(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


async def serve(services: CdhServices, address: str, limits: Limits, stop: asyncio.Event) -> None:
    """Serve ``services`` on ``address`` until ``stop`` is set.

    Raises:
        ConfigError, TransportError: the address cannot be served.
    """
    if is_ttrpc_address(address):
        server = TtrpcServer(limits)
        register_ttrpc(server, services)
        if address.startswith("unix:///"):
            Path(address[len("unix://") :]).parent.mkdir(parents=True, exist_ok=True)
        bound = await server.listen(address)
        _logger.info("confidential-data-hub: serving ttrpc on %s", bound)
        try:
            await stop.wait()
        finally:
            await server.close()
            if isinstance(bound, UnixAddress) and not bound.abstract:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(bound.path)
        return
    grpc_server, port = await start_grpc_server(services, address, limits=limits)
    _logger.info("confidential-data-hub: serving gRPC on %s (port %d)", address, port)
    try:
        await stop.wait()
    finally:
        await grpc_server.stop(limits.cdh_shutdown_grace_s)


async def _run(services: CdhServices, address: str, limits: Limits) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(services, address, limits, stop)


def build_hub(config: CdhConfig, limits: Limits) -> Hub:
    """The hub for ``config``: its KBC (cc_kbc through the AA's token) and the AA port."""
    agent = AaAgentPort(config.aa_socket, limits)
    kbc, provider = build_hub_kbc(config, agent, limits=limits)
    return Hub(config, kbc, agent, token_provider=provider, limits=limits)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="CDH config.")
def command(config_file: Path | None) -> None:
    """Confidential data hub: resources, sealed secrets, image keys, image pulls."""
    env = environment()
    limits = limits_from_env(env)
    cmdline = _cmdline(Path(env.get("COCOGUEST_CMDLINE_FILE") or _CMDLINE))
    if config_file is not None:
        config = load_cdh_config(config_file, cmdline=cmdline, limits=limits)
    else:
        params = resolve_aa_kbc_params(env=env.get("AA_KBC_PARAMS"), cmdline=cmdline)
        config = default_cdh_config(params, cmdline)
    logging.getLogger().setLevel(_LOG_LEVELS.get(config.log_level, logging.INFO))
    hub = build_hub(config, limits)
    for path in hub.fetch_credentials():
        _logger.info("confidential-data-hub: wrote credential %s", path)
    services = CdhServices(
        hub,
        secure_mount=secure_mount_hook(hub_key_fetcher(hub.get_resource, hub.unseal_secret), limits=limits),
        limits=limits,
    )
    asyncio.run(_run(services, config.socket, limits))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the binary; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_command(command, argv, "confidential-data-hub")


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
