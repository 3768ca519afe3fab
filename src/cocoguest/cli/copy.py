"""``cocoguest copy``: skopeo-compatible image copy (``oci:`` and ``docker://``, both ways) with layer
encryption and decryption.

Invariants:
    * Each side gets its own :class:`RegistryAccess` from skopeo-style flags (``--src-*``/``--dest-*``);
      explicit credentials beat auth files; ``--*-tls-verify=false`` is the only way (besides registries.conf
      ``insecure``) to turn certificate verification off.
    * The environment is read here once and passed down; library code never reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from cocoguest.cli.keys import key_context
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.errors import ConfigError
from cocoguest.image.copy import CopyOptions, CopyReport, copy_image, open_copy_source
from cocoguest.image.destinations import open_destination
from cocoguest.limits import Limits
from cocoguest.ocicrypt import keyspecs
from cocoguest.registry.access import RegistryAccess, parse_credentials
from cocoguest.registry.config.auth_file import default_auth_files
from cocoguest.registry.config.certs_d import default_cert_dirs
from cocoguest.registry.config.registries_conf import RegistriesConfig
from cocoguest.registry.config.registries_d import RegistriesD
from cocoguest.signature.signing import SigningRequest, destination_reference, sign_destination


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


def _access(
    *,
    env: Mapping[str, str],
    registries: RegistriesConfig,
    auth_file: str | None,
    creds: str | None,
    creds_flag: str,
    cert_dir: str | None,
    tls_verify: bool,
    limits: Limits,
) -> RegistryAccess:
    """Registry settings for one side of the copy."""
    return RegistryAccess(
        registries=registries,
        auth_files=[Path(auth_file)] if auth_file else default_auth_files(env, os.getuid()),
        credentials=parse_credentials(creds, creds_flag) if creds is not None else None,
        cert_dirs=default_cert_dirs(env),
        flat_cert_dir=Path(cert_dir) if cert_dir else None,
        tls_verify=tls_verify,
        env=env,
        limits=limits,
        # containers/image stages big temporary files in /var/tmp unless TMPDIR says otherwise.
        tmp_dir=Path(env.get("TMPDIR") or "/var/tmp"),  # noqa: S108  (a parent for mkdtemp, not a fixed file)
    )


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
@click.option("--registries-conf", type=click.Path(dir_okay=False), help="registries.conf (v2 subset).")
@click.option(
    "--authfile",
    "--auth-file",
    "auth_file",
    type=click.Path(dir_okay=False),
    help="containers-auth.json for both sides (default: $REGISTRY_AUTH_FILE, then the usual paths).",
)
@click.option("--src-authfile", type=click.Path(dir_okay=False), help="containers-auth.json for the source.")
@click.option("--dest-authfile", type=click.Path(dir_okay=False), help="containers-auth.json for the destination.")
@click.option("--src-creds", metavar="USER:PASSWORD", help="Source registry credentials (instead of auth files).")
@click.option("--dest-creds", metavar="USER:PASSWORD", help="Destination registry credentials (instead of auth files).")
@click.option(
    "--src-cert-dir", type=click.Path(file_okay=False), help="Source: directory of *.crt CAs and a *.cert/*.key pair."
)
@click.option(
    "--dest-cert-dir",
    type=click.Path(file_okay=False),
    help="Destination: directory of *.crt CAs and a *.cert/*.key pair.",
)
@click.option(
    "--src-tls-verify", type=bool, default=True, show_default=True, help="Source: HTTPS with certificate checks."
)
@click.option(
    "--dest-tls-verify", type=bool, default=True, show_default=True, help="Destination: HTTPS with certificate checks."
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="Layers processed in parallel.",
)
@click.option("--sign-by", metavar="FINGERPRINT", help="GPG-sign the image (simple signing, to the lookaside).")
@click.option(
    "--sign-by-key-file",
    type=click.Path(dir_okay=False),
    help="Exported GPG secret key for --sign-by (default: exported from the GnuPG home).",
)
@click.option(
    "--sign-by-sigstore-private-key",
    type=click.Path(dir_okay=False),
    help="cosign private key: push a sigstore signature attachment.",
)
@click.option("--sign-passphrase-file", type=click.Path(dir_okay=False), help="Passphrase of the signing key.")
@click.option("--registries-d", type=click.Path(file_okay=False), help="registries.d (where GPG signatures go).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def copy_command(
    source: str,
    destination: str,
    encryption_keys: tuple[str, ...],
    encrypt_layers: tuple[str, ...],
    decryption_keys: tuple[str, ...],
    keyprovider_config: str | None,
    registries_conf: str | None,
    auth_file: str | None,
    src_authfile: str | None,
    dest_authfile: str | None,
    src_creds: str | None,
    dest_creds: str | None,
    src_cert_dir: str | None,
    dest_cert_dir: str | None,
    src_tls_verify: bool,
    dest_tls_verify: bool,
    max_concurrent: int,
    sign_by: str | None,
    sign_by_key_file: str | None,
    sign_by_sigstore_private_key: str | None,
    sign_passphrase_file: str | None,
    registries_d: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Copy an image from SOURCE to DESTINATION, encrypting or decrypting layers (like skopeo copy).

    SOURCE and DESTINATION are oci:PATH[:REF] or docker://HOST/REPO[:TAG] (a source may also name
    @DIGEST). With --encryption-key the selected layers are encrypted (an already encrypted layer gets the
    new recipients if --decryption-key can unwrap its key); with only --decryption-key encrypted layers are
    decrypted. An oci: destination appears only when everything has been verified; a registry gets the
    manifest last, so a failed copy leaves no tag pointing at a partial image.
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
    env = environment()
    signing = _signing_request(sign_by, sign_by_key_file, sign_by_sigstore_private_key, sign_passphrase_file, env)
    if signing.wanted:
        destination_reference(destination)  # refuse an unsignable destination before copying anything
    limits = limits_from_env(env)
    context = key_context(env, keyprovider_config, limits)
    wrappers = keyspecs.encryption_wrappers(keyspecs.split_specs(encryption_keys), context)
    unwrappers = keyspecs.decryption_unwrappers(keyspecs.split_specs(decryption_keys), context)
    if registries_conf:
        registries = RegistriesConfig.load(Path(registries_conf), missing_ok=False, limits=limits)
    else:
        registries = RegistriesConfig.load(Path("/etc/containers/registries.conf"), limits=limits)
    src_access = _access(
        env=env,
        registries=registries,
        auth_file=src_authfile or auth_file,
        creds=src_creds,
        creds_flag="--src-creds",
        cert_dir=src_cert_dir,
        tls_verify=src_tls_verify,
        limits=limits,
    )
    dest_access = _access(
        env=env,
        registries=registries,
        auth_file=dest_authfile or auth_file,
        creds=dest_creds,
        creds_flag="--dest-creds",
        cert_dir=dest_cert_dir,
        tls_verify=dest_tls_verify,
        limits=limits,
    )
    options = CopyOptions(
        encryption_wrappers=wrappers,
        encrypt_layers=layers,
        decryption_unwrappers=unwrappers if decryption_keys else (),
        max_concurrent=max_concurrent,
        limits=limits,
    )
    progress = _Progress(enabled=sys.stderr.isatty() and not quiet)
    opened = open_copy_source(source, src_access)
    with contextlib.closing(opened.source), contextlib.closing(open_destination(destination, dest_access)) as dst:
        report = copy_image(opened, dst, options, progress if progress.enabled else None)
    progress.finish()
    if signing.wanted:
        signed = sign_destination(
            destination, report.manifest.digest, signing, _registries_d(registries_d, limits), dest_access
        )
        if not quiet and not as_json:
            if signed.lookaside_file is not None:
                click.echo(f"signature {signed.lookaside_file}")
            if signed.sigstore_manifest is not None:
                click.echo(f"sigstore signature attached ({signed.sigstore_manifest})")
    if not quiet:
        _print_report(report, as_json)


def _read_secret_file(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        msg = f"{what} {path}: {e.strerror}"
        raise ConfigError(msg) from e


def _signing_request(
    sign_by: str | None,
    key_file: str | None,
    sigstore_key_file: str | None,
    passphrase_file: str | None,
    env: Mapping[str, str],
) -> SigningRequest:
    passphrase = _read_secret_file(passphrase_file, "--sign-passphrase-file")
    # gpg's own default: $GNUPGHOME, else ~/.gnupg.
    gnupg_home = env.get("GNUPGHOME") or str(Path(env.get("HOME", str(Path.home()))) / ".gnupg")
    return SigningRequest(
        gpg_fingerprint=sign_by,
        gpg_key=_read_secret_file(key_file, "--sign-by-key-file"),
        gnupg_home=Path(gnupg_home),
        sigstore_private_key=_read_secret_file(sigstore_key_file, "--sign-by-sigstore-private-key"),
        passphrase=passphrase.rstrip(b"\n") if passphrase is not None else None,
    )


def _registries_d(location: str | None, limits: Limits) -> RegistriesD:
    if location is not None:
        return RegistriesD.load(Path(location), limits=limits)
    return RegistriesD.load(Path("/etc/containers/registries.d"), limits=limits)
