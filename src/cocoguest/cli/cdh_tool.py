"""``cocoguest cdh``: call a running confidential data hub (the verbs of upstream's ``ttrpc-cdh-tool``).

::

    cocoguest cdh [-s ADDR] [-t S] get-resource --resource-uri kbs:///repo/type/tag
        | unseal-secret --secret-file F | unwrap-key --annotation B64
        | pull-image --image-url REF --bundle-path DIR
        | secure-mount --volume-type T --mount-point P [--option K=V]... [--flag F]...

``ADDR``: ``unix://...``/``vsock://...`` (ttrpc; default the CDH socket) or ``HOST:PORT`` (gRPC). Answers on
stdout: a resource as base64 (standard, binary-safe), a plaintext as UTF-8 text (bytes that are not UTF-8 as
``\\x`` escapes), the key provider's answer JSON, the manifest digest; nothing for a secure mount.

Invariant: a CDH error ends with status 1 and one ``error:`` line with the CDH's status and message; stdout is
empty then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.rpc.services.cdh_client import DEFAULT_CDH_TTRPC_ADDRESS, CdhClient

_T = TypeVar("_T")
_DEFAULT_TIMEOUT_S = 50.0


def _call(ctx: click.Context, action: Callable[[CdhClient], Awaitable[_T]]) -> _T:
    address: str = ctx.obj["address"]
    timeout_s: float = ctx.obj["timeout"]

    async def run() -> _T:
        async with await CdhClient.connect(address, timeout_s=timeout_s) as client:
            return await action(client)

    return asyncio.run(run())


def _read_secret(path: Path) -> bytes:
    limit = DEFAULT_LIMITS.max_sealed_secret_bytes
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        msg = f"--secret-file {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limit:
        msg = f"--secret-file {path}: larger than {limit} bytes"
        raise ConfigError(msg)
    return data.strip()


@click.group("cdh")
@click.option("-s", "--socket", "address", default=DEFAULT_CDH_TTRPC_ADDRESS, show_default=True)
@click.option("-t", "--timeout", type=click.FloatRange(min=0.001), default=_DEFAULT_TIMEOUT_S, show_default=True)
@click.pass_context
def cdh_command(ctx: click.Context, address: str, timeout: float) -> None:
    """Call the confidential data hub."""
    ctx.obj = {"address": address, "timeout": timeout}


@cdh_command.command("get-resource")
@click.option("-r", "--resource-uri", required=True, help="kbs:///repo/type/tag")
@click.pass_context
def get_resource(ctx: click.Context, resource_uri: str) -> None:
    """Print a KBS resource (base64 standard)."""
    data = _call(ctx, lambda c: c.get_resource(resource_uri))
    click.echo(base64.b64encode(data).decode("ascii"))


@cdh_command.command("unseal-secret")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def unseal_secret(ctx: click.Context, secret_file: Path) -> None:
    """Print the plaintext of the sealed secret in a file."""
    secret = _read_secret(secret_file)
    plaintext = _call(ctx, lambda c: c.unseal_secret(secret))
    click.echo(plaintext.decode("utf-8", errors="backslashreplace"))


@cdh_command.command("unwrap-key")
@click.option("-a", "--annotation", required=True, help="The layer's attestation-agent annotation (base64).")
@click.pass_context
def unwrap_key(ctx: click.Context, annotation: str) -> None:
    """Print the key provider's answer JSON for an AnnotationPacket."""
    try:
        base64.b64decode(annotation, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = "--annotation: not valid base64 (standard alphabet)"
        raise ConfigError(msg) from e
    answer = _call(ctx, lambda c: c.unwrap_key(annotation))
    click.echo(answer.decode("utf-8", errors="backslashreplace"))


@cdh_command.command("pull-image")
@click.option("-i", "--image-url", required=True)
@click.option("-b", "--bundle-path", required=True)
@click.pass_context
def pull_image(ctx: click.Context, image_url: str, bundle_path: str) -> None:
    """Pull an image into a bundle (rootfs + config.json) through the CDH; print the manifest digest."""
    click.echo(_call(ctx, lambda c: c.pull_image(image_url, bundle_path)))


def _parse_options(untrusted_pairs: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` pairs as a dict (split at the first ``=``); a pair with no ``=``, an empty key or a key given twice
    is a :class:`ConfigError` naming it."""
    options: dict[str, str] = {}
    for pair in untrusted_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"--option {pair!r}: expected KEY=VALUE"
            raise ConfigError(msg)
        if key in options:
            msg = f"--option {key!r}: given twice"
            raise ConfigError(msg)
        options[key] = value
    return options


@cdh_command.command("secure-mount")
@click.option("--volume-type", required=True, help="The storage type, e.g. block-device.")
@click.option("--mount-point", required=True, help="Where the CDH mounts the volume.")
@click.option("--option", "option_pairs", multiple=True, metavar="K=V", help="A driver option (repeatable).")
@click.option("--flag", "flags", multiple=True, metavar="F", help="A mount flag (repeatable).")
@click.pass_context
def secure_mount(
    ctx: click.Context, volume_type: str, mount_point: str, option_pairs: tuple[str, ...], flags: tuple[str, ...]
) -> None:
    """Ask the CDH to mount a secure volume; prints nothing on success."""
    options = _parse_options(option_pairs)
    _call(ctx, lambda c: c.secure_mount(volume_type, options, list(flags), mount_point))
