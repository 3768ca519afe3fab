"""``cocoguest inspect``, ``images``, ``rmi``, ``prune``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from cocoguest.cli.pull import registry_options, source_settings
from cocoguest.cli.settings import default_work_dir, environment
from cocoguest.image.platform import PlatformSpec
from cocoguest.image.pull import PullOptions, inspect_image
from cocoguest.image.sources import open_source
from cocoguest.image.store import Store
from cocoguest.oci.reference import ImageReference, ImageReferenceError
from cocoguest.signature.request import InsecureAcceptAnything

_work_dir_option = click.option(
    "--work-dir", type=click.Path(file_okay=False), help="Layer store (default /var/lib/cocoguest as root)."
)


def _store(work_dir: str | None) -> Store:
    return Store.open(Path(work_dir) if work_dir else default_work_dir(environment()))


@click.command("inspect")
@click.argument("image")
@registry_options
@click.option("--platform", "platform_text", help="OS/ARCH[/VARIANT] (default: this machine).")
def inspect_command(
    image: str,
    registries_conf: str | None,
    auth_file: str | None,
    cert_dir: str | None,
    tls_verify: bool,
    platform_text: str | None,
) -> None:
    """Print the manifest and config of IMAGE (nothing is stored)."""
    opened = open_source(image, source_settings(registries_conf, auth_file, cert_dir, tls_verify))
    options = PullOptions(
        work_dir=Path("/nonexistent"),
        policy=InsecureAcceptAnything(),
        platform=PlatformSpec.parse(platform_text) if platform_text else PlatformSpec.running(),
    )
    try:
        digest, manifest, config = inspect_image(opened, options)
    finally:
        opened.source.close()
    out = {"reference": str(opened.requested), "manifest_digest": str(digest), "manifest": manifest, "config": config}
    click.echo(json.dumps(out, indent=2))


@click.command("images")
@_work_dir_option
@click.option("--json", "as_json", is_flag=True)
def images_command(work_dir: str | None, as_json: bool) -> None:
    """List the images in the store."""
    store = _store(work_dir)
    try:
        images = store.images()
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "references": list(i.references),
                        "manifest_digest": str(i.manifest_digest),
                        "config_digest": str(i.config_digest),
                        "layers": [str(d) for d in i.layers],
                        "created": i.created,
                        "platform": i.platform,
                    }
                    for i in images
                ],
                indent=2,
            )
        )
        return
    for image in images:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(image.created))
        names = ", ".join(image.references) or "<none>"
        click.echo(f"{image.manifest_digest.hex[:12]}  {created}  {len(image.layers):3d} layers  {names}")


@click.command("rmi")
@click.argument("images", nargs=-1, required=True)
@_work_dir_option
def rmi_command(images: tuple[str, ...], work_dir: str | None) -> None:
    """Remove image references from the store (layers are freed by prune)."""
    store = _store(work_dir)
    try:
        for name in images:
            removed = store.remove_image(_stored_name(store, name))
            click.echo(f"untagged {name} ({removed.manifest_digest})")
    finally:
        store.close()


def _stored_name(store: Store, name: str) -> str:
    """Accept ``host/repo:tag`` for the ``docker://host/repo:tag`` the store records (as the user typed at pull)."""
    if store.find_image(name) is not None or name.startswith(("docker://", "oci:")):
        return name
    try:
        normalized = f"docker://{ImageReference.parse(name)}"
    except ImageReferenceError:
        return name
    return normalized if store.find_image(normalized) is not None else name


@click.command("prune")
@_work_dir_option
def prune_command(work_dir: str | None) -> None:
    """Delete layers no image uses, and leftovers of interrupted pulls."""
    store = _store(work_dir)
    try:
        report = store.prune()
    finally:
        store.close()
    click.echo(
        f"removed {report.images_removed} unused images, {report.layers_removed} layers, "
        f"{report.staging_removed} leftovers of interrupted pulls; freed {report.bytes_freed / 1e6:.1f} MB"
    )
