"""``cocoguest kbs serve`` and ``cocoguest kbs config ...`` (the dev KBS and Trustee kbs-client admin verbs).

Exported: :data:`serve_command` and :data:`config_group`, added to the ``kbs`` group. The KBS URL and CA
certificate come from the parent ``kbs`` group's settings (``--url``, ``--cert-file``) when given, else from this
group's own ``--url`` / ``--cert-file``.
"""

from __future__ import annotations

from pathlib import Path

import click

from cocoguest.cli.kbs_commands import KbsCliSettings
from cocoguest.crypto.jws import load_ed25519_private_pem
from cocoguest.devkbs.admin_client import KbsAdminClient
from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS

DEFAULT_KBS_URL = "http://127.0.0.1:8080"
_POLICY_FLAGS = ("allow_all", "deny_all", "affirming", "default")


def _read(path: Path, what: str, cap: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        msg = f"{what} {path}: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > cap:
        msg = f"{what} {path}: larger than {cap} bytes"
        raise ConfigError(msg)
    return data


@click.command("serve")
@click.option("--config-file", required=True, type=click.Path(path_type=Path, dir_okay=False), help="KBS TOML config.")
def serve_command(config_file: Path) -> None:
    """Run the dev KBS (Trustee-compatible, protocol 0.4.0) until interrupted."""
    from cocoguest.devkbs.config import load_config  # noqa: PLC0415  (lazy: keeps other commands fast)
    from cocoguest.devkbs.server import DevKbsServer  # noqa: PLC0415

    server = DevKbsServer(load_config(config_file))
    click.echo(f"dev KBS listening on {', '.join(f'{h}:{p}' for h, p in server.addresses)}", err=True)
    server.serve_forever()


@click.group("config")
@click.option("--url", default=None, help=f"KBS URL (default {DEFAULT_KBS_URL}).")
@click.option("--cert-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="KBS CA cert (PEM).")
@click.option(
    "--auth-private-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Ed25519 PKCS#8 PEM signing the admin token.",
)
@click.pass_context
def config_group(ctx: click.Context, url: str | None, cert_file: Path | None, auth_private_key: Path | None) -> None:
    """Administer a KBS (resources, policies, reference values)."""
    parent = ctx.obj if isinstance(ctx.obj, KbsCliSettings) else None
    url = url or (parent.url if parent is not None else None) or DEFAULT_KBS_URL
    cert = cert_file or (parent.cert_file if parent is not None else None)
    key = None
    if auth_private_key is not None:
        key = load_ed25519_private_pem(
            _read(auth_private_key, "admin key", DEFAULT_LIMITS.max_key_file_bytes), str(auth_private_key)
        )
    client = KbsAdminClient(str(url), auth_key=key, ca_cert=None if cert is None else str(cert))
    ctx.call_on_close(client.close)
    ctx.obj = {"admin_client": client}


def _client(ctx: click.Context) -> KbsAdminClient:
    client = ctx.obj["admin_client"]
    assert isinstance(client, KbsAdminClient)  # noqa: S101  (set by config_group)
    return client


@config_group.command("set-resource")
@click.option("--path", "resource_path", required=True, help="repo/type/tag")
@click.option("--resource-file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def set_resource(ctx: click.Context, resource_path: str, resource_file: Path) -> None:
    """Store a resource."""
    data = _read(resource_file, "resource file", DEFAULT_LIMITS.devkbs_max_resource_bytes)
    _client(ctx).set_resource(resource_path, data)


@config_group.command("delete-resource")
@click.option("--path", "resource_path", required=True, help="repo/type/tag")
@click.pass_context
def delete_resource(ctx: click.Context, resource_path: str) -> None:
    """Delete a resource."""
    _client(ctx).delete_resource(resource_path)


@config_group.command("set-resource-policy")
@click.option("--allow-all", is_flag=True, help="Release every resource to any attested TEE.")
@click.option("--deny-all", is_flag=True, help="Release nothing.")
@click.option("--affirming", is_flag=True, help="Release only when every EAR submodule is affirming.")
@click.option("--default", "default", is_flag=True, help="Trustee's default (denies the sample TEE).")
@click.option("--policy-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.pass_context
def set_resource_policy(
    ctx: click.Context, allow_all: bool, deny_all: bool, affirming: bool, default: bool, policy_file: Path | None
) -> None:
    """Replace the resource policy (exactly one of the options)."""
    from cocoguest.devkbs.ear import shipped_policy  # noqa: PLC0415

    chosen = [n for n, on in zip(_POLICY_FLAGS, (allow_all, deny_all, affirming, default), strict=True) if on]
    if len(chosen) + (policy_file is not None) != 1:
        msg = "set-resource-policy: give exactly one of --allow-all, --deny-all, --affirming, --default, --policy-file"
        raise ConfigError(msg)
    if policy_file is not None:
        text = _read(policy_file, "policy file", DEFAULT_LIMITS.devkbs_max_policy_bytes).decode("utf-8")
    else:
        text = shipped_policy(f"{chosen[0]}.rego")
    _client(ctx).set_resource_policy(text)


@config_group.command("set-attestation-policy")
@click.option("--policy-file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--type", "policy_type", default="rego", show_default=True)
@click.option("--id", "policy_id", default="default_cpu", show_default=True)
@click.pass_context
def set_attestation_policy(ctx: click.Context, policy_file: Path, policy_type: str, policy_id: str) -> None:
    """Install an attestation policy."""
    text = _read(policy_file, "policy file", DEFAULT_LIMITS.devkbs_max_policy_bytes).decode("utf-8")
    _client(ctx).set_attestation_policy(text, policy_id, policy_type)


@config_group.command("set-sample-reference-value")
@click.argument("name")
@click.argument("value")
@click.option("--as-integer", is_flag=True, help="VALUE is an integer.")
@click.option("--as-bool", is_flag=True, help="VALUE is true or false.")
@click.option("--as-single-value", is_flag=True, help="Store VALUE itself, not a one-element list.")
@click.pass_context
def set_sample_reference_value(
    ctx: click.Context, name: str, value: str, as_integer: bool, as_bool: bool, as_single_value: bool
) -> None:
    """Register a reference value with the sample extractor."""
    parsed: object = value
    if as_integer:
        try:
            parsed = int(value)
        except ValueError as e:
            msg = f"set-sample-reference-value: {value[:40]!r} is not an integer"
            raise ConfigError(msg) from e
    elif as_bool:
        if value not in ("true", "false"):
            msg = f"set-sample-reference-value: {value[:40]!r} is not true or false"
            raise ConfigError(msg)
        parsed = value == "true"
    _client(ctx).set_sample_reference_value(name, parsed if as_single_value else [parsed])
