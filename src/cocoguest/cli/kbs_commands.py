"""``cocoguest kbs``: the guest side of Trustee's kbs-client (``attest``, ``get-resource``).

``cocoguest kbs --url URL [--cert-file CA] [--allow-sample-attester] [--tee-key-algorithm ec256|ec521|rsa] VERB``

* ``attest`` runs one RCAR handshake (always a new one) and prints the attestation token.
* ``get-resource --path REPO/TYPE/TAG`` (or a ``kbs:///`` URI) attests, fetches the resource and prints the
  standard base64 of its plaintext.

The group's options are gathered once into a :class:`KbsCliSettings` in ``ctx.obj``; every subcommand reads the
URL, CA certificate and attester choice from there. Subcommands that live in other modules (the dev KBS's
``serve`` and admin ``config``) are listed in :data:`KBS_COMMANDS` and imported only when they run.

Invariants:
    * On any failure nothing is written to stdout: the answer is printed only after it is complete; the error is
      one ``error:`` line on stderr (cli/main.py) naming the step (auth, attest, resource), the HTTP status and
      the KBS's error type and detail, or the probes made when no TEE was found.
    * SECURITY: the sample attester is used only with ``--allow-sample-attester`` (and then warns on every use).
"""

from __future__ import annotations

import base64
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click

from cocoguest.cli.attester_source import select_evidence_source
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.errors import ConfigError
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import TeeKeyAlgorithm
from cocoguest.limits import Limits

KBS_COMMANDS: Final[dict[str, str]] = {
    "serve": "cocoguest.cli.kbs_admin_commands:serve_command",
    "config": "cocoguest.cli.kbs_admin_commands:config_group",
}
"""Subcommands of ``cocoguest kbs`` defined elsewhere: name -> ``module:attribute`` (imported lazily)."""

TEE_KEY_ALGORITHMS: Final = {
    "ec256": TeeKeyAlgorithm.EC_P256,
    "ec521": TeeKeyAlgorithm.EC_P521,
    "rsa": TeeKeyAlgorithm.RSA_OAEP_256,
    **{algorithm.value: algorithm for algorithm in TeeKeyAlgorithm},
}
"""``--tee-key-algorithm`` values: the short names, and the AA config's names."""


def read_ca_certificate(path: Path, limits: Limits) -> bytes:
    """The PEM bytes of ``--cert-file``, read with a size cap.

    Raises:
        ConfigError: unreadable, empty or larger than ``Limits.max_key_file_bytes``.
    """
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_key_file_bytes + 1)
    except OSError as e:
        msg = f"KBS CA certificate {path}: {e.strerror or e}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_key_file_bytes:
        msg = f"KBS CA certificate {path}: larger than {limits.max_key_file_bytes} bytes"
        raise ConfigError(msg)
    if not data.strip():
        msg = f"KBS CA certificate {path}: empty"
        raise ConfigError(msg)
    return data


def parse_resource_path(text: str) -> ResourceUri:
    """``REPO/TYPE/TAG``, ``/REPO/TYPE/TAG`` or a ``kbs://`` URI (as Trustee's kbs-client and trustee-attester).

    Raises:
        ResourceUriError: not exactly three valid segments, or not a resource URI.
    """
    return ResourceUri.parse(text if "://" in text else "kbs:///" + text.removeprefix("/"))


@dataclass(frozen=True)
class KbsCliSettings:
    """The ``cocoguest kbs`` group options, shared with every subcommand through ``ctx.obj``."""

    url: str | None
    cert_file: Path | None
    allow_sample_attester: bool
    tee_key_algorithm: TeeKeyAlgorithm
    env: dict[str, str]
    limits: Limits

    def require_url(self, command: str) -> str:
        """The KBS URL.

        Raises:
            ConfigError: ``--url`` was not given.
        """
        if not self.url:
            msg = f"cocoguest kbs {command} needs the KBS: give --url http(s)://HOST:PORT before {command}"
            raise ConfigError(msg)
        return self.url

    def ca_cert_pem(self) -> bytes | None:
        """The ``--cert-file`` contents, if given (see :func:`read_ca_certificate`)."""
        return read_ca_certificate(self.cert_file, self.limits) if self.cert_file is not None else None

    def attesting_client(self, command: str) -> KbsClient:
        """A background-check KBS client with this guest's attester and a fresh TEE key.

        Raises:
            ConfigError: no ``--url``, a bad URL or CA certificate.
            TeeNotFoundError: no TEE and no ``--allow-sample-attester`` (names the probes).
            UnsupportedError: a detected TEE that cannot be driven here.
        """
        url = self.require_url(command)
        ca_cert_pem = self.ca_cert_pem()
        evidence = select_evidence_source(self.allow_sample_attester, self.env, self.limits)
        return KbsClient(
            url, evidence, tee_key_algorithm=self.tee_key_algorithm, ca_cert_pem=ca_cert_pem, limits=self.limits
        )


def settings(ctx: click.Context) -> KbsCliSettings:
    """The group's settings (for subcommands defined in other modules too)."""
    obj = ctx.find_object(KbsCliSettings)
    if obj is None:  # pragma: no cover - only when a subcommand is invoked outside the group
        msg = "cocoguest kbs: subcommand run without the kbs group"
        raise ConfigError(msg)
    return obj


class _KbsGroup(click.Group):
    """Own subcommands plus the lazily imported ones of :data:`KBS_COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *KBS_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is not None:
            return command
        target = KBS_COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        loaded = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(loaded, click.Command)  # noqa: S101  (our own table)
        return loaded


@click.group("kbs", cls=_KbsGroup)
@click.option("--url", help="The KBS, http(s)://HOST:PORT.")
@click.option(
    "--cert-file", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (PEM) of an HTTPS KBS."
)
@click.option(
    "--allow-sample-attester",
    is_flag=True,
    help="Attest with the sample attester when no TEE is found (INSECURE: development only; warns on every use).",
)
@click.option(
    "--tee-key-algorithm",
    type=click.Choice(sorted(TEE_KEY_ALGORITHMS)),
    metavar="ec256|ec521|rsa",
    default="ec256",
    show_default=True,
    help="TEE key the KBS encrypts resources to (ec256, ec521, rsa = RSA-OAEP-256).",
)
@click.pass_context
def kbs_group(
    ctx: click.Context, url: str | None, cert_file: Path | None, allow_sample_attester: bool, tee_key_algorithm: str
) -> None:
    """Talk to a Trustee KBS as this guest (Trustee kbs-client verbs)."""
    env = environment()
    ctx.obj = KbsCliSettings(
        url=url,
        cert_file=cert_file,
        allow_sample_attester=allow_sample_attester,
        tee_key_algorithm=TEE_KEY_ALGORITHMS[tee_key_algorithm],
        env=env,
        limits=limits_from_env(env),
    )


@kbs_group.command("attest")
@click.pass_context
def attest_command(ctx: click.Context) -> None:
    """Attest to the KBS (one new RCAR handshake) and print the attestation token."""
    client = settings(ctx).attesting_client("attest")
    try:
        credentials = client.attest_now()
    finally:
        client.close()
    click.echo(credentials.token.raw)


@kbs_group.command("get-resource")
@click.option("--path", "resource_path", required=True, metavar="REPO/TYPE/TAG", help="Resource path or kbs:/// URI.")
@click.pass_context
def get_resource_command(ctx: click.Context, resource_path: str) -> None:
    """Attest, fetch one resource and print the base64 of its plaintext."""
    uri = parse_resource_path(resource_path)
    client = settings(ctx).attesting_client("get-resource")
    try:
        plaintext = client.get_resource(uri)
    finally:
        client.close()
    click.echo(base64.b64encode(plaintext).decode("ascii"))
