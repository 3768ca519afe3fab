"""The ``api-server-rest`` binary: loopback HTTP for workloads in front of the AA and the CDH (spec §2, §11).

Flags (upstream)::

    api-server-rest [-b/--bind 127.0.0.1:8006] [-f/--features resource|attestation|all]
                    [-a/--aa_addr unix:///run/confidential-containers/attestation-agent/attestation-agent.sock]
                    [-c/--cdh_addr unix:///run/confidential-containers/cdh.sock]

Invariants:
    * The backends a feature needs are connected at start-up (as upstream); an unreachable one stops start-up
      with one ``error: ...`` line naming its address, exit status 1.
    * When listening it prints ``API Server listening on http://HOST:PORT`` (the bound port) on stdout.
    * SIGTERM and SIGINT stop it cleanly (exit status 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import click

from cocoguest.cli.main import run_command
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.limits import Limits
from cocoguest.rest.router import Feature, Router
from cocoguest.rest.server import RestServer
from cocoguest.rpc.services.attestation_agent_client import DEFAULT_AA_TTRPC_ADDRESS, AaClient
from cocoguest.rpc.services.cdh_client import DEFAULT_CDH_TTRPC_ADDRESS, CdhClient

DEFAULT_BIND = "127.0.0.1:8006"


async def serve(bind: str, feature: Feature, aa_addr: str, cdh_addr: str, limits: Limits) -> None:
    """Connect the backends ``feature`` needs, serve until SIGTERM/SIGINT, then close everything."""
    aa = (
        await AaClient.connect(aa_addr, timeout_s=limits.rest_backend_timeout_s, limits=limits)
        if feature.wants_aa
        else None
    )
    cdh = None
    try:
        if feature.wants_cdh:
            cdh = await CdhClient.connect(cdh_addr, timeout_s=limits.rest_backend_timeout_s, limits=limits)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with RestServer(Router(feature=feature, aa=aa, cdh=cdh, limits=limits), limits=limits) as server:
            host, port = await server.listen(bind)
            shown = f"[{host}]" if ":" in host else host
            click.echo(f"API Server listening on http://{shown}:{port}")
            sys.stdout.flush()
            await stop.wait()
    finally:
        if aa is not None:
            await aa.close()
        if cdh is not None:
            await cdh.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-b", "--bind", default=DEFAULT_BIND, show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "-f",
    "--features",
    type=click.Choice([f.value for f in Feature]),
    default=Feature.RESOURCE.value,
    show_default=True,
    help="Which backends to serve.",
)
@click.option("-a", "--aa_addr", default=DEFAULT_AA_TTRPC_ADDRESS, show_default=True, help="The AA's ttrpc address.")
@click.option("-c", "--cdh_addr", default=DEFAULT_CDH_TTRPC_ADDRESS, show_default=True, help="The CDH's ttrpc address.")
def command(bind: str, features: str, aa_addr: str, cdh_addr: str) -> None:
    """api-server-rest: the loopback HTTP API of the attestation agent and the confidential data hub."""
    limits = limits_from_env(environment())
    click.echo(f"Starting API server on {bind} with features {features}")
    asyncio.run(serve(bind, Feature(features), aa_addr, cdh_addr, limits))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the binary; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_command(command, argv, "api-server-rest")


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
