"""``cocoguest bundle rm``: remove a bundle and release its lease on the store's layers."""

from __future__ import annotations

from pathlib import Path

import click

from cocoguest.cli.settings import default_work_dir, environment
from cocoguest.errors import ResourceNotFoundError
from cocoguest.image.bundle.remove import remove_bundle
from cocoguest.image.store import Store


@click.group("bundle")
def bundle_group() -> None:
    """Manage bundles written by `cocoguest pull`."""


@bundle_group.command("rm")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Layer store the bundle was pulled with (default /var/lib/cocoguest as root).",
)
def bundle_rm_command(bundle: Path, work_dir: Path | None) -> None:
    """Unmount BUNDLE's rootfs if mounted, delete BUNDLE, and release its layers for prune."""
    store = Store.open(work_dir or default_work_dir(environment()))
    try:
        try:
            remove_bundle(bundle)
        except ResourceNotFoundError:
            # A bundle deleted by hand: only its lease is left to release.
            if store.release_bundle(bundle) == 0:
                raise
            click.echo(f"bundle {bundle} was already gone; released its layers")
            return
        # Released only once the rootfs is gone: until then, prune must keep its layers.
        store.release_bundle(bundle)
    finally:
        store.close()
    click.echo(f"removed bundle {bundle}")
