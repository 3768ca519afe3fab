"""``cocoguest fsck [--work-dir D] [--repair]``: check the store, or rebuild its metadata from the layers."""

from __future__ import annotations

from pathlib import Path

import click

from cocoguest.cli.settings import default_work_dir, environment, limits_from_env
from cocoguest.errors import VerificationError
from cocoguest.image.store.fsck import check_store, repair_store


class StoreInconsistentError(VerificationError):
    """``fsck`` found the store inconsistent (a corrupt DB, or rows and directories that disagree)."""


@click.command("fsck")
@click.option("--work-dir", type=click.Path(file_okay=False), help="Layer store (default /var/lib/cocoguest as root).")
@click.option("--repair", is_flag=True, help="Rebuild the metadata from the verified layer directories.")
def fsck_command(work_dir: str | None, repair: bool) -> None:
    """Check the layer store; with --repair, make it consistent (lost images are reported, not invented)."""
    env = environment()
    root = Path(work_dir) if work_dir else default_work_dir(env)
    limits = limits_from_env(env)
    if not repair:
        report = check_store(root, limits=limits)
        for problem in report.problems:
            click.echo(problem)
        if report.db_corrupt is not None:
            msg = f"{report.db_corrupt}; run 'cocoguest fsck --repair --work-dir {root}'"
            raise StoreInconsistentError(msg)
        if report.problems:
            msg = f"work dir {root}: {len(report.problems)} problems; run 'cocoguest fsck --repair --work-dir {root}'"
            raise StoreInconsistentError(msg)
        click.echo(f"work dir {root}: the store is consistent")
        return
    report = repair_store(root, limits=limits)
    if report.moved_aside is not None:
        click.echo(f"the corrupt metadata DB was moved to {report.moved_aside}; its image records are lost")
    for digest in report.images_lost:
        click.echo(f"image {digest} is lost (a layer of it is gone): pull it again")
    click.echo(
        f"work dir {root}: repaired: {report.layers_adopted} layers recovered, {report.rows_removed} rows of "
        f"missing layers removed, {len(report.images_lost)} images lost"
    )
