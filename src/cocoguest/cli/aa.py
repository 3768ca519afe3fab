"""``cocoguest aa``: call a running attestation agent (the verbs of upstream's ``ttrpc-aa-client``).

::

    cocoguest aa [-a ADDR] [--timeout S] get-tee | get-additional-tees
        | get-evidence --runtime-data B64 | get-additional-evidence --runtime-data B64
        | get-token --token-type kbs | extend-runtime-measurement -d DOMAIN -o OP -c CONTENT [-p REG]
        | bind-init-data --digest B64

``ADDR``: ``unix://...``/``vsock://...`` (ttrpc, the default AA socket) or ``HOST:PORT`` (gRPC). The answer is
printed on stdout: evidence and tokens as the UTF-8 text the AA returned, names and results one per line.

Invariant: an AA error ends with status 1 and one ``error:`` line carrying the AA's status and message; nothing
is printed on stdout then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from cocoguest.errors import ConfigError
from cocoguest.rpc.services.attestation_agent_client import DEFAULT_AA_TTRPC_ADDRESS, AaClient

_T = TypeVar("_T")
_DEFAULT_TIMEOUT_S = 50.0


def _b64(value: str, option: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"{option}: not valid base64 (standard alphabet)"
        raise ConfigError(msg) from e


def _call(ctx: click.Context, action: Callable[[AaClient], Awaitable[_T]]) -> _T:
    address: str = ctx.obj["address"]
    timeout_s: float = ctx.obj["timeout"]

    async def run() -> _T:
        async with await AaClient.connect(address, timeout_s=timeout_s) as client:
            return await action(client)

    return asyncio.run(run())


def _print_bytes(data: bytes) -> None:
    click.echo(data.decode("utf-8", errors="backslashreplace"))


@click.group("aa")
@click.option("-a", "--attestation_sock", "address", default=DEFAULT_AA_TTRPC_ADDRESS, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.001), default=_DEFAULT_TIMEOUT_S, show_default=True)
@click.pass_context
def aa_command(ctx: click.Context, address: str, timeout: float) -> None:
    """Call the attestation agent."""
    ctx.obj = {"address": address, "timeout": timeout}


@aa_command.command("get-tee")
@click.pass_context
def get_tee(ctx: click.Context) -> None:
    """Print the primary TEE type."""
    click.echo(_call(ctx, lambda c: c.get_tee_type()))


@aa_command.command("get-additional-tees")
@click.pass_context
def get_additional_tees(ctx: click.Context) -> None:
    """Print the additional TEE devices, one per line."""
    for tee in _call(ctx, lambda c: c.get_additional_tees()):
        click.echo(tee)


@aa_command.command("get-evidence")
@click.option("--runtime-data", required=True, help="Report data, base64 standard.")
@click.pass_context
def get_evidence(ctx: click.Context, runtime_data: str) -> None:
    """Print the primary TEE's evidence for the runtime data."""
    data = _b64(runtime_data, "--runtime-data")
    _print_bytes(_call(ctx, lambda c: c.get_evidence(data)))


@aa_command.command("get-additional-evidence")
@click.option("--runtime-data", required=True, help="Report data, base64 standard.")
@click.pass_context
def get_additional_evidence(ctx: click.Context, runtime_data: str) -> None:
    """Print the additional devices' evidence (empty without devices)."""
    data = _b64(runtime_data, "--runtime-data")
    _print_bytes(_call(ctx, lambda c: c.get_additional_evidence(data)))


@aa_command.command("get-token")
@click.option("--token-type", required=True, help="kbs or coco_as.")
@click.pass_context
def get_token(ctx: click.Context, token_type: str) -> None:
    """Print a token (kbs: {"token","tee_keypair"} JSON)."""
    _print_bytes(_call(ctx, lambda c: c.get_token(token_type)))


@aa_command.command("extend-runtime-measurement")
@click.option("-d", "--domain", required=True)
@click.option("-o", "--operation", required=True)
@click.option("-c", "--content", required=True)
@click.option("-p", "--register-index", type=click.IntRange(min=0), default=None)
@click.pass_context
def extend_runtime_measurement(
    ctx: click.Context, domain: str, operation: str, content: str, register_index: int | None
) -> None:
    """Record an event and extend a runtime register; print OK, NOT_SUPPORTED or NOT_ENABLED."""
    click.echo(_call(ctx, lambda c: c.extend_runtime_measurement(domain, operation, content, register_index)))


@aa_command.command("bind-init-data")
@click.option("--digest", required=True, help="Init-data digest, base64 standard.")
@click.pass_context
def bind_init_data(ctx: click.Context, digest: str) -> None:
    """Check the init-data digest against the TEE; print OK when it binds."""
    data = _b64(digest, "--digest")
    _call(ctx, lambda c: c.bind_init_data(data))
    click.echo("OK")
