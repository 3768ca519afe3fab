"""``cocoguest secret``: make and open sealed secrets (upstream's ``secret`` tool, guest-components.md §2, §8.3).

::

    cocoguest secret keygen [--kid sealed-signing] [--output-dir .]
    cocoguest secret seal --signing-kid KID --signing-jwk-path PRIVATE.json
        vault --resource-uri kbs:///r/t/g [--provider kbs] [--provider-settings JSON] [--annotations JSON]
      | envelope -k KEY_ID -f FILE local --local-kms-dir DIR
    cocoguest secret unseal -f FILE [-k PUBLIC.json] [-a AA_KBC_PARAMS [--allow-sample-attester]]
        [--local-kms-dir DIR] [--skip-verification]

``keygen`` writes ``<kid>-private.json`` (mode 0600) and ``<kid>-public.json``; ``seal`` prints the ``sealed.``
text; ``unseal`` prints the plaintext. Envelope sealing supports the ``local`` (development) KMS only here.

Invariants:
    * SECURITY: ``unseal`` verifies the ES256 signature unless ``--skip-verification`` is given (warned). With
      ``-k`` that one public JWK verifies whatever ``kid`` the secret names; without it, the ``kid`` is looked up
      as the CDH does (a KBS resource through the KBC of ``-a``, or a file in the local key directory).
    * Every input file is read under a size cap from ``Limits``; JSON through :mod:`cocoguest.jsonutil`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import click

from cocoguest.cdh.kms.factory import KmsContext
from cocoguest.cdh.kms.local import LocalKms
from cocoguest.cdh.secret.envelope import VerificationKeys
from cocoguest.cdh.secret.keys import DEFAULT_KEY_DIR, SealedSecretKeys
from cocoguest.cdh.secret.payload import VaultSecret, vault_document
from cocoguest.cdh.secret.seal import envelope_payload, seal
from cocoguest.cdh.secret.unseal import unseal_secret
from cocoguest.cli.kbc_settings import pull_kbc, resolve_params
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.crypto.sealing import generate_p256_jwk_pair
from cocoguest.errors import ConfigError
from cocoguest.jsonutil import load_object
from cocoguest.limits import Limits


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        msg = f"{what} {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limit:
        msg = f"{what} {path}: larger than {limit} bytes"
        raise ConfigError(msg)
    return data


def _jwk_file(path: Path, limits: Limits, what: str) -> dict[str, object]:
    data = _read(path, limits.max_offline_fs_file_bytes, what)
    return load_object(data, f"{what} {path}", ConfigError, limits=limits)


def _json_option(text: str, option: str, limits: Limits) -> dict[str, object]:
    return load_object(text.encode("utf-8"), option, ConfigError, limits=limits)


class _OneKey:
    """Verification with one given public JWK, whatever the kid (``unseal -k``)."""

    def __init__(self, jwk: dict[str, object]) -> None:
        self._jwk = jwk

    def public_jwk(self, kid: str) -> dict[str, object]:
        del kid
        return self._jwk


@click.group("secret")
def secret_group() -> None:
    """Seal, unseal and make signing keys for sealed secrets."""


@secret_group.command("keygen")
@click.option("--kid", default="sealed-signing", show_default=True, help="Key id (also the file name stem).")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False), default=Path(), show_default=True)
def keygen_command(kid: str, output_dir: Path) -> None:
    """Write a P-256 JWK pair: <kid>-private.json (0600) and <kid>-public.json; print their paths."""
    if not kid or "/" in kid or "\x00" in kid or kid in (".", ".."):
        msg = f"--kid {kid[:64]!r}: not a plain file name"
        raise ConfigError(msg)
    private, public = generate_p256_jwk_pair(kid)
    output_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = output_dir / f"{kid}-private.json", output_dir / f"{kid}-public.json"
    # SECURITY: the signing key is created owner-only, never world-readable even briefly.
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"keygen: {private_path} exists; not overwriting a signing key"
        raise ConfigError(msg) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(private, f)
    public_path.write_text(json.dumps(public), encoding="utf-8")
    click.echo(private_path)
    click.echo(public_path)


@secret_group.group("seal")
@click.option("--signing-kid", required=True, help="kid in the header (a kbs:/// URI or a key file name).")
@click.option("--signing-jwk-path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def seal_group(ctx: click.Context, signing_kid: str, signing_jwk_path: Path) -> None:
    """Seal a vault or envelope secret, signed with a private P-256 JWK."""
    limits = limits_from_env(environment())
    ctx.obj = {"kid": signing_kid, "jwk": _jwk_file(signing_jwk_path, limits, "--signing-jwk-path"), "limits": limits}


def _emit(ctx: click.Context, payload: Mapping[str, object]) -> None:
    click.echo(seal(payload, ctx.obj["kid"], ctx.obj["jwk"]))


@seal_group.command("vault")
@click.option("--resource-uri", required=True, help="The secret's name, e.g. kbs:///repo/type/tag.")
@click.option("--provider", default="kbs", show_default=True)
@click.option("--provider-settings", default="{}", show_default=True, help="JSON object.")
@click.option("--annotations", default="{}", show_default=True, help="JSON object.")
@click.pass_context
def seal_vault(ctx: click.Context, resource_uri: str, provider: str, provider_settings: str, annotations: str) -> None:
    """Print a sealed vault secret (the CDH asks PROVIDER for RESOURCE_URI)."""
    limits: Limits = ctx.obj["limits"]
    secret = VaultSecret(
        resource_uri,
        provider,
        _json_option(provider_settings, "--provider-settings", limits),
        _json_option(annotations, "--annotations", limits),
    )
    _emit(ctx, vault_document(secret))


@seal_group.command("envelope")
@click.option("-k", "--key-id", required=True, help="The KMS key that wraps the data key.")
@click.option("-f", "--file-path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.argument("provider", type=click.Choice(["local"]))
@click.option("--local-kms-dir", type=click.Path(path_type=Path, file_okay=False), help="local: the KMS root.")
@click.pass_context
def seal_envelope(ctx: click.Context, key_id: str, file_path: Path, provider: str, local_kms_dir: Path | None) -> None:
    """Print a sealed envelope secret: FILE under a fresh data key wrapped by PROVIDER's KEY_ID."""
    limits: Limits = ctx.obj["limits"]
    if local_kms_dir is None:
        msg = f"envelope {provider}: --local-kms-dir is required"
        raise ConfigError(msg)
    plaintext = _read(file_path, limits.max_sealed_secret_bytes, "--file-path")
    _emit(ctx, envelope_payload(plaintext, key_id, provider, LocalKms(local_kms_dir, limits)))


@secret_group.command("unseal")
@click.option("-f", "--file-path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("-k", "--key-path", type=click.Path(path_type=Path, dir_okay=False), help="Public JWK that verifies.")
@click.option("-a", "--aa-kbc-params", default=None, help="KBC for kbs:// kids and the kbs provider.")
@click.option("--allow-sample-attester", is_flag=True, help="cc_kbc without a TEE (testing only).")
@click.option("--local-kms-dir", type=click.Path(path_type=Path, file_okay=False), help="The local KMS root.")
@click.option("--key-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_KEY_DIR)
@click.option("-s", "--skip-verification", is_flag=True, help="INSECURE: accept an unsigned or unverified secret.")
def unseal_command(
    file_path: Path,
    key_path: Path | None,
    aa_kbc_params: str | None,
    allow_sample_attester: bool,
    local_kms_dir: Path | None,
    key_dir: Path,
    skip_verification: bool,
) -> None:
    """Print the plaintext of a sealed secret."""
    env = environment()
    limits = limits_from_env(env)
    untrusted_secret = _read(file_path, limits.max_sealed_secret_bytes, "--file-path")
    kbc = None
    if aa_kbc_params is not None:
        params = resolve_params(aa_kbc_params, env)
        kbc = pull_kbc(
            params,
            allow_sample_attester=allow_sample_attester,
            kbs_cert_file=None,
            offline_fs_resources=(),
            env=env,
            limits=limits,
        )
    keys: VerificationKeys = (
        _OneKey(_jwk_file(key_path, limits, "--key-path"))
        if key_path is not None
        else SealedSecretKeys(kbc, key_dir, limits)
    )
    kms = KmsContext(resources=kbc, local_root=local_kms_dir, limits=limits)
    plaintext = unseal_secret(untrusted_secret, keys, kms, skip_verification=skip_verification)
    click.echo(plaintext.decode("utf-8", errors="backslashreplace"))
