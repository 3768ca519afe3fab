"""``cocoguest copy``: skopeo-compatible image copy with layer encryption and decryption."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

import click

from cocoguest.errors import ConfigError
from cocoguest.image.copy import CopyOptions, CopyReport, copy_image
from cocoguest.image.transports.oci import OciLayoutDestination, OciLayoutSource, OciReference
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.ocicrypt import keyspecs
from cocoguest.ocicrypt.keyprovider.config import KeyProviderEntry, load_keyprovider_config
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport
from cocoguest.ocicrypt.pkcs11_config import default_pkcs11_config_paths, load_pkcs11_module_config


def _oci_reference(text: str, role: str) -> OciReference:
    if not text.startswith("oci:"):
        transport = text.split(":", 1)[0] if ":" in text else "(none)"
        msg = f"{role} {text!r}: transport {transport!r} is not supported yet by copy (use oci:PATH[:REF])"
        raise ConfigError(msg)
    return OciReference.parse(text)


def key_context(env: Mapping[str, str], keyprovider_config: str | None) -> keyspecs.KeyContext:
    """Gather key-related settings from the environment and flags."""
    providers: dict[str, KeyProviderEntry] = {}
    provider_file = keyprovider_config or env.get("OCICRYPT_KEYPROVIDER_CONFIG")
    factory = None
    if provider_file:
        providers = load_keyprovider_config(provider_file)
        from cocoguest.rpc.keyprovider_client import transport_for  # noqa: PLC0415  (grpc is heavy)

        def factory(entry: KeyProviderEntry) -> KeyProviderTransport:
            return transport_for(entry, DEFAULT_LIMITS)

    pkcs11_config = None
    for path in default_pkcs11_config_paths(env):
        if os.path.isfile(path):
            pkcs11_config = load_pkcs11_module_config(path)
            break
    return keyspecs.KeyContext(
        gnupg_home=env.get("GNUPGHOME"),
        oaep_hash=env.get("OCICRYPT_OAEP_HASHALG"),
        pkcs11_config=pkcs11_config,
        key_providers=providers,
        transport_factory=factory,
    )


class _Progress:
    """Per-layer progress on a TTY (stderr), nothing otherwise."""

    def __init__(self, enabled: bool, sizes: dict[int, int] | None = None) -> None:
        self.enabled = enabled
        self._done: dict[int, int] = {}
        self.sizes = sizes or {}

    def __call__(self, index: int, done: int) -> None:
        self._done[index] = done
        total = sum(self._done.values())
        click.echo(f"\r  {total / 1e6:10.1f} MB processed", err=True, nl=False)

    def finish(self) -> None:
        if self.enabled and self._done:
            click.echo("", err=True)


def _short(media_type: str) -> str:
    return media_type.rsplit(".", 1)[-1] if "layer" in media_type else media_type


def _print_report(report: CopyReport, as_json: bool) -> None:
    if as_json:
        out = {
            "manifest_digest": str(report.manifest.digest),
            "layers": [
                {
                    "index": layer.index,
                    "action": str(layer.action),
                    "source": layer.source.to_json(),
                    "result": layer.result.to_json(),
                }
                for layer in report.layers
            ],
        }
        click.echo(json.dumps(out, indent=2))
        return
    for layer in report.layers:
        click.echo(
            f"layer {layer.index}: {layer.action:<16} {layer.source.digest} ({_short(layer.source.media_type)})"
            f" -> {layer.result.digest} ({_short(layer.result.media_type)})"
        )
    click.echo(f"manifest {report.manifest.digest}")


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option(
    "--encryption-key",
    "encryption_keys",
    multiple=True,
    metavar="SPEC",
    help="Recipient: jwe:FILE, pkcs7:CERT, pgp:UID|FILE, pkcs11:FILE, provider:NAME[:PARAMS]. Repeatable.",
)
@click.option(
    "--encrypt-layer",
    "encrypt_layers",
    multiple=True,
    metavar="N",
    help="Encrypt only layer N (0-based, negative from the end). Repeatable; default all.",
)
@click.option(
    "--decryption-key",
    "decryption_keys",
    multiple=True,
    metavar="SPEC",
    help="FILE[:pass=PW|:file=PATH|:fd=N], or provider:NAME[:PARAMS]. Repeatable.",
)
@click.option(
    "--keyprovider-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="ocicrypt key provider config (default: $OCICRYPT_KEYPROVIDER_CONFIG).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="Layers processed in parallel.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def copy_command(
    source: str,
    destination: str,
    encryption_keys: tuple[str, ...],
    encrypt_layers: tuple[str, ...],
    decryption_keys: tuple[str, ...],
    keyprovider_config: str | None,
    max_concurrent: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Copy an image from SOURCE to DESTINATION (oci:PATH[:REF]), encrypting or decrypting layers.

    With --encryption-key the selected layers are encrypted (an already encrypted layer gets the new
    recipients if --decryption-key can unwrap its key); with only --decryption-key encrypted layers are
    decrypted. The destination appears only when everything has been verified.
    """
    layers: list[int] = []
    for value in keyspecs.split_specs(encrypt_layers):
        try:
            layers.append(int(value))
        except ValueError as e:
            msg = f"--encrypt-layer {value!r}: not an integer"
            raise ConfigError(msg) from e
    if layers and not encryption_keys:
        msg = "--encrypt-layer needs --encryption-key"
        raise ConfigError(msg)
    context = key_context(os.environ, keyprovider_config)
    wrappers = keyspecs.encryption_wrappers(keyspecs.split_specs(encryption_keys), context)
    unwrappers = keyspecs.decryption_unwrappers(keyspecs.split_specs(decryption_keys), context)
    src = OciLayoutSource(_oci_reference(source, "source"))
    options = CopyOptions(
        encryption_wrappers=wrappers,
        encrypt_layers=layers,
        decryption_unwrappers=unwrappers if decryption_keys else (),
        max_concurrent=max_concurrent,
    )
    progress = _Progress(enabled=sys.stderr.isatty() and not quiet)
    with OciLayoutDestination(_oci_reference(destination, "destination")) as dst:
        report = copy_image(src, dst, options, progress if progress.enabled else None)
    progress.finish()
    if not quiet:
        _print_report(report, as_json)
