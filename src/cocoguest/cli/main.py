"""The ``cocoguest`` command line.

Invariants:
    * This package (with config sources) is the only reader of ``os.environ``; what it reads becomes explicit
      arguments of library calls.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
    * Any other exception ends it with status 1 and one line ``error: internal error: TYPE: MESSAGE``; a
      traceback is printed only with ``--debug`` (or ``COCOGUEST_DEBUG``). Ctrl-C is ``error: interrupted``,
      status 130.
    * Every ``error:`` line is at most ``Limits.max_error_line_chars`` characters (producers keep their
      messages short; this is the last bound, not the only one). With ``--debug`` the causes follow, one
      bounded line each.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from cocoguest import __version__
from cocoguest.errors import CocoError
from cocoguest.limits import DEFAULT_LIMITS

F = TypeVar("F", bound=Callable[..., object])

_logger = logging.getLogger("cocoguest")


_state: dict[str, bool] = {}
"""Set by the group callback: whether --debug was given (error causes are printed)."""

_EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a process stopped by Ctrl-C."""
_DEBUG_ENV_OFF = frozenset({"", "0", "false", "no", "off"})

_COMMANDS = {
    "aa": "cocoguest.cli.aa:aa_command",
    "copy": "cocoguest.cli.copy:copy_command",
    "pull": "cocoguest.cli.pull:pull_command",
    "inspect": "cocoguest.cli.store_commands:inspect_command",
    "images": "cocoguest.cli.store_commands:images_command",
    "rmi": "cocoguest.cli.store_commands:rmi_command",
    "prune": "cocoguest.cli.store_commands:prune_command",
    "bundle": "cocoguest.cli.bundle_commands:bundle_group",
    "fsck": "cocoguest.cli.fsck_command:fsck_command",
    "kbs": "cocoguest.cli.kbs_commands:kbs_group",
    "evidence": "cocoguest.cli.evidence_command:evidence_command",
    "secure-mount": "cocoguest.cli.secure_mount_command:secure_mount_command",
    "cdh": "cocoguest.cli.cdh_tool:cdh_command",
    "secret": "cocoguest.cli.secret_tool:secret_group",
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
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    return run_command(cli, argv, "cocoguest")


def run_command(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command of any cocoguest binary; returns the exit status.

    Invariant: whatever happens, the process ends with one ``error: ...`` line (status 1, 130 when interrupted),
    never a traceback unless ``--debug`` / ``COCOGUEST_DEBUG`` asks for one.
    """
    _state.clear()  # may run several times in one process (tests)
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name=prog_name, standalone_mode=False)
    except CocoError as e:
        _error(str(e))
        if _debug():
            _print_causes(e)
        return 1
    except click.exceptions.Abort as e:
        # click turns Ctrl-C (and EOF on a prompt) into Abort, keeping the original as the cause.
        if isinstance(e.__cause__, KeyboardInterrupt):
            _error("interrupted")
            return _EXIT_INTERRUPTED
        _error("aborted")
        return 1
    except click.ClickException as e:
        _error(e.format_message())
        return e.exit_code if e.exit_code != 0 else 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return _EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (the last resort: a bug or an unforeseen input, never a traceback)
        _internal_error(e)
        return 1
    return 0


def _debug() -> bool:
    return _state.get("debug", False) or os.environ.get("COCOGUEST_DEBUG", "").lower() not in _DEBUG_ENV_OFF


def _error(message: str) -> None:
    click.echo(f"error: {_bound_line(message)}", err=True)


def _print_causes(error: CocoError) -> None:
    limit = DEFAULT_LIMITS.max_error_line_chars
    for line in error.diagnostics().splitlines()[1:]:
        click.echo(_truncate(line, limit), err=True)


def _internal_error(error: Exception) -> None:
    debug = _debug()
    hint = "" if debug else " (rerun with --debug for a traceback)"
    text = _one_line(str(error))
    limit = DEFAULT_LIMITS.max_internal_error_message_chars
    _error(f"internal error: {type(error).__name__}: {_truncate(text, limit)}{hint}")
    if debug:
        click.echo("".join(traceback.format_exception(error)).rstrip("\n"), err=True)


def _bound_line(message: str) -> str:
    """``message`` on one line, cut to fit an ``error:`` line of ``Limits.max_error_line_chars``."""
    return _truncate(_one_line(message), DEFAULT_LIMITS.max_error_line_chars - len("error: "))


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # The marker must fit too: keep as much of the head as leaves room for it.
    keep = limit
    while True:
        marker = f"… ({len(text) - keep} more characters)"
        if keep + len(marker) <= limit or keep == 0:
            return text[:keep] + marker
        keep = max(0, limit - len(marker))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
