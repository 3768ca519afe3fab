"""The ``cocoguest`` command line.

Invariants:
    * This package (with config sources) is the only reader of ``os.environ``; what it reads becomes explicit
      arguments of library calls.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import importlib
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


_state: dict[str, bool] = {}
"""Set by the group callback: whether --debug was given (error causes are printed)."""

_COMMANDS = {
    "copy": "cocoguest.cli.copy:copy_command",
    "pull": "cocoguest.cli.pull:pull_command",
    "inspect": "cocoguest.cli.store_commands:inspect_command",
    "images": "cocoguest.cli.store_commands:images_command",
    "rmi": "cocoguest.cli.store_commands:rmi_command",
    "prune": "cocoguest.cli.store_commands:prune_command",
    "bundle": "cocoguest.cli.bundle_commands:bundle_group",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (keeps every command's start fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)  # noqa: S101  (our own table)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cocoguest")
@click.option("--debug", is_flag=True, help="Log debug messages and print error causes.")
def cli(debug: bool) -> None:
    """cocoguest: Confidential Containers guest components."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="cocoguest", standalone_mode=False)
    except CocoError as e:
        click.echo(f"error: {_one_line(str(e))}", err=True)
        if _state.get("debug") or os.environ.get("COCOGUEST_DEBUG"):
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
