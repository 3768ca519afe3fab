"""``cocoguest pull`` and ``cocoguest inspect``."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from cocoguest.cli.kbc_settings import pull_kbc, resolve_params
from cocoguest.cli.progress import LayerProgressView
from cocoguest.cli.settings import default_work_dir, environment, limits_from_env
from cocoguest.errors import ConfigError
from cocoguest.image.configured_pull import PolicySettings, PullConfig, pull
from cocoguest.image.platform import PlatformSpec
from cocoguest.kbs.kbc.layer_unwrapper import KbcLayerKeyUnwrapper
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.limits import Limits
from cocoguest.ocicrypt.keyspecs import KeyContext
from cocoguest.registry.access import RegistryAccess
from cocoguest.registry.config.auth_file import default_auth_files
from cocoguest.registry.config.certs_d import default_cert_dirs
from cocoguest.registry.config.registries_conf import RegistriesConfig

_logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def source_settings(
    registries_conf: str | None, auth_file: str | None, cert_dir: str | None, tls_verify: bool
) -> RegistryAccess:
    """Registry settings from flags and the environment."""
    env = environment()
    limits = limits_from_env(env)
    if registries_conf:
        registries = RegistriesConfig.load(Path(registries_conf), missing_ok=False, limits=limits)
    else:
        registries = RegistriesConfig.load(Path("/etc/containers/registries.conf"), limits=limits)
    auth_files = [Path(auth_file)] if auth_file else default_auth_files(env, os.getuid())
    return RegistryAccess(
        registries=registries,
        auth_files=auth_files,
        cert_dirs=default_cert_dirs(env),
        flat_cert_dir=Path(cert_dir) if cert_dir else None,
        tls_verify=tls_verify,
        env=env,
        limits=limits,
    )


def registry_options(function: F) -> F:
    """The registry flags shared by pull, inspect and copy."""
    for option in reversed(
        [
            click.option("--registries-conf", type=click.Path(dir_okay=False), help="registries.conf (v2 subset)."),
            click.option("--auth-file", type=click.Path(dir_okay=False), help="containers-auth.json."),
            click.option(
                "--cert-dir", type=click.Path(file_okay=False), help="Directory of *.crt CAs and *.cert/*.key pairs."
            ),
            click.option(
                "--tls-verify", type=bool, default=True, show_default=True, help="Verify registry TLS certificates."
            ),
        ]
    ):
        function = option(function)
    return function


_DEFAULT_POLICY = Path("/etc/containers/policy.json")
_DEFAULT_REGISTRIES_D = Path("/etc/containers/registries.d")


def policy_settings(
    insecure_policy: bool, policy_file: str | None, registries_d: str | None, resources: ResourceProvider | None
) -> PolicySettings:
    """The policy settings from flags, with the system defaults (``/etc/containers/policy.json``, registries.d).

    ``resources`` (the pull's KBC, see cli/kbc_settings.py) serves ``kbs:///`` locations.

    Raises:
        ConfigError: both or neither of ``--policy`` and ``--insecure-policy``.
    """
    if insecure_policy:
        if policy_file is not None:
            msg = "--insecure-policy and --policy exclude each other"
            raise ConfigError(msg)
        return PolicySettings(insecure_accept_anything=True)
    if policy_file is None and _DEFAULT_POLICY.is_file():
        policy_file = str(_DEFAULT_POLICY)
    if policy_file is None:
        # SECURITY: no policy configured is an error, never an implicit accept-anything.
        msg = (
            f"no signature policy configured: give --policy FILE (or create {_DEFAULT_POLICY}), "
            "or --insecure-policy to accept images without verification"
        )
        raise ConfigError(msg)
    if registries_d is None and _DEFAULT_REGISTRIES_D.is_dir():
        registries_d = str(_DEFAULT_REGISTRIES_D)
    return PolicySettings(policy_file, registries_d, resources=resources)


def _key_context(
    decryption_keys: tuple[str, ...], keyprovider_config: str | None, env: dict[str, str], limits: Limits
) -> KeyContext | None:
    """Key settings; none (and no key code loaded) when no key source is configured."""
    if not decryption_keys and not keyprovider_config and not env.get("OCICRYPT_KEYPROVIDER_CONFIG"):
        return None
    from cocoguest.cli.keys import key_context  # noqa: PLC0415  (key formats are only needed for keys)

    return key_context(env, keyprovider_config, limits)


@click.command("pull")
@click.argument("image")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option("--work-dir", type=click.Path(file_okay=False), help="Layer store (default /var/lib/cocoguest as root).")
@click.option("--insecure-policy", is_flag=True, help="Accept any image without signature verification (warns).")
@click.option("--policy", "policy_file", help="containers-policy.json: a path, file:// or kbs:/// URI.")
@click.option("--registries-d", help="registries.d directory (lookaside, sigstore attachments), or a kbs:/// URI.")
@click.option(
    "--offline-fs-resources",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="offline_fs_kbc resource file serving kbs:/// URIs (repeatable).",
)
@click.option(
    "--aa-kbc-params",
    metavar="NAME::URI",
    help="Key broker for kbs:/// locations and attestation-agent layer keys, e.g. cc_kbc::http://HOST:PORT "
    "(default: $AA_KBC_PARAMS, then agent.aa_kbc_params= on the kernel command line, then offline_fs_kbc).",
)
@click.option(
    "--allow-sample-attester",
    is_flag=True,
    help="cc_kbc: attest with the sample attester when no TEE is found (INSECURE: development only; warns).",
)
@click.option("--kbs-cert-file", type=click.Path(dir_okay=False, path_type=Path), help="cc_kbc: CA of an HTTPS KBS.")
@registry_options
@click.option("--decryption-key", "decryption_keys", multiple=True, metavar="SPEC", help="Key for encrypted layers.")
@click.option("--keyprovider-config", type=click.Path(dir_okay=False), help="ocicrypt key provider config.")
@click.option("--platform", "platform_text", help="OS/ARCH[/VARIANT] (default: this machine).")
@click.option("--max-concurrent-downloads", type=click.IntRange(1, 32), default=3, show_default=True)
@click.option("--snapshotter", type=click.Choice(["auto", "overlay", "copy"]), default="auto", show_default=True)
@click.option("--require-encryption", is_flag=True, help="Refuse images with any unencrypted layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no summary.")
def pull_command(
    image: str,
    bundle_dir: str,
    work_dir: str | None,
    insecure_policy: bool,
    policy_file: str | None,
    registries_d: str | None,
    offline_fs_resources: tuple[str, ...],
    aa_kbc_params: str | None,
    allow_sample_attester: bool,
    kbs_cert_file: Path | None,
    registries_conf: str | None,
    auth_file: str | None,
    cert_dir: str | None,
    tls_verify: bool,
    decryption_keys: tuple[str, ...],
    keyprovider_config: str | None,
    platform_text: str | None,
    max_concurrent_downloads: int,
    snapshotter: Literal["auto", "overlay", "copy"],
    require_encryption: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Pull IMAGE (docker://host/repo:tag, host/repo@digest, oci:PATH[:REF]) into an OCI bundle at BUNDLE_DIR."""
    env = environment()
    limits = limits_from_env(env)
    kbc = pull_kbc(
        resolve_params(aa_kbc_params, env),
        allow_sample_attester=allow_sample_attester,
        kbs_cert_file=kbs_cert_file,
        offline_fs_resources=[Path(f) for f in offline_fs_resources],
        env=env,
        limits=limits,
    )
    config = PullConfig(
        work_dir=Path(work_dir) if work_dir else default_work_dir(env),
        policy=policy_settings(insecure_policy, policy_file, registries_d, kbc),
        access=source_settings(registries_conf, auth_file, cert_dir, tls_verify),
        decryption_keys=decryption_keys,
        key_context=_key_context(decryption_keys, keyprovider_config, env, limits),
        unwrappers=[KbcLayerKeyUnwrapper(kbc, limits)] if kbc is not None else [],
        platform=PlatformSpec.parse(platform_text) if platform_text else PlatformSpec.running(),
        max_concurrent=max_concurrent_downloads,
        snapshotter=snapshotter,
        require_encryption=require_encryption,
        env=env,
        limits=limits,
    )
    view = LayerProgressView(enabled=sys.stderr.isatty() and not quiet and not as_json)
    try:
        result = pull(config, image, Path(bundle_dir), view.update if view.enabled else None)
    finally:
        view.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif not quiet:
        for outcome in result.layers:
            state = "pulled" if outcome.downloaded else "cached"
            click.echo(f"layer {outcome.job.index}: {state:<6} {outcome.job.descriptor.digest}")
        click.echo(f"manifest {result.manifest_digest}")
        click.echo(f"bundle   {result.bundle} ({result.snapshotter})")
