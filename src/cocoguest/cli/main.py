"""The ``cocoguest`` command line.

Invariants:
    * This package (with config sources) is the only reader of ``os.environ``; what it reads becomes explicit
      arguments of library calls.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from cocoguest import __version__
from cocoguest.errors import CocoError

F = TypeVar("F", bound=Callable[..., object])

_logger = logging.getLogger("cocoguest")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cocoguest")
@click.option("--debug", is_flag=True, help="Log debug messages and print error causes.")
def cli(debug: bool) -> None:
    """cocoguest: Confidential Containers guest components."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    # Imported here so that `cocoguest --help` stays fast.
    from cocoguest.cli.copy import copy_command  # noqa: PLC0415
    from cocoguest.cli.pull import pull_command  # noqa: PLC0415
    from cocoguest.cli.store_commands import (  # noqa: PLC0415
        images_command,
        inspect_command,
        prune_command,
        rmi_command,
    )

    for command in (copy_command, pull_command, inspect_command, images_command, rmi_command, prune_command):
        cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    _register_commands()
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="cocoguest", standalone_mode=False)
    except CocoError as e:
        click.echo(f"error: {_one_line(str(e))}", err=True)
        if os.environ.get("COCOGUEST_DEBUG"):
            click.echo(e.diagnostics(), err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.ClickException as e:
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        return e.exit_code if e.exit_code != 0 else 1
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
