"""``cocoguest secure-mount``: one SecureMount in this process (upstream ``cdh-oneshot secure-mount -s FILE``).

``cocoguest secure-mount --storage FILE [--check-only]`` reads the request as JSON (upstream's ``Storage``):
``{"volume_type": "block-device", "options": {...}, "flags": [...], "mount_point": "/..."}`` and prints the mount
point. ``--check-only`` stops before ``cryptsetup open`` (validate, get the key, format an ``empty`` source,
check the header and key): it runs where device-mapper does not.

Keys: ``file://`` and the random key work here; ``kbs://`` and sealed-secret keys need the CDH's resource and
unseal services, so they are refused with a pointer to ``cocoguest cdh secure-mount`` (the CDH wires them).

Invariants:
    * The file is untrusted input: read with a size cap and parsed by ``jsonutil``; every field is type-checked.
"""

from __future__ import annotations

from pathlib import Path

import click

from cocoguest import jsonutil
from cocoguest.cdh.storage.block_device import prepare, secure_mount
from cocoguest.cdh.storage.cryptsetup import Cryptsetup
from cocoguest.cdh.storage.request import SecureMountRequest
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.errors import ConfigError, UnsupportedError
from cocoguest.limits import Limits


def read_storage(path: Path, limits: Limits) -> SecureMountRequest:
    """The SecureMount request in the JSON file ``path``.

    Raises:
        ConfigError: unreadable, too large, not JSON, or a field of the wrong type.
    """
    try:
        with path.open("rb") as f:
            untrusted = f.read(limits.max_aa_config_bytes + 1)
    except OSError as e:
        msg = f"secure mount storage {path}: cannot read: {e.strerror}"
        raise ConfigError(msg) from e
    if len(untrusted) > limits.max_aa_config_bytes:
        msg = f"secure mount storage {path}: larger than {limits.max_aa_config_bytes} bytes"
        raise ConfigError(msg)
    document = jsonutil.load_object(untrusted, f"secure mount storage {path}", ConfigError, limits=limits)
    volume_type, options = document.get("volume_type"), document.get("options", {})
    flags, mount_point = document.get("flags", []), document.get("mount_point")
    if not isinstance(volume_type, str) or not isinstance(mount_point, str):
        msg = f"secure mount storage {path}: 'volume_type' and 'mount_point' must be strings"
        raise ConfigError(msg)
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        msg = f"secure mount storage {path}: 'options' must map names to strings"
        raise ConfigError(msg)
    if not isinstance(flags, list) or not all(isinstance(v, str) for v in flags):
        msg = f"secure mount storage {path}: 'flags' must be a list of strings"
        raise ConfigError(msg)
    return SecureMountRequest(volume_type, {str(k): str(v) for k, v in options.items()}, list(flags), mount_point)


def _no_remote_keys(uri: str) -> bytes:
    shown = "a sealed secret" if uri.startswith("sealed.") else uri
    msg = f"secure mount key {shown} needs the confidential data hub: use 'cocoguest cdh secure-mount'"
    raise UnsupportedError(msg)


@click.command("secure-mount")
@click.option("-s", "--storage", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Request JSON.")
@click.option("--check-only", is_flag=True, help="Stop before 'cryptsetup open' (no device-mapper needed).")
def secure_mount_command(storage: Path, check_only: bool) -> None:
    """Set up one secure mount (LUKS2 block device) and print its mount point."""
    limits = limits_from_env(environment())
    request = read_storage(storage, limits)
    tool = Cryptsetup(limits=limits)
    if check_only:
        _, device, _ = prepare(request, _no_remote_keys, cryptsetup=tool, limits=limits)
        click.echo(f"{device}: LUKS2 header and key checked")
        return
    click.echo(secure_mount(request, _no_remote_keys, cryptsetup=tool, limits=limits))
