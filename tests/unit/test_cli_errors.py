"""The CLI's error path: one bounded ``error:`` line, exit statuses, --debug and the last-resort handler."""

from __future__ import annotations

import click
import pytest

from cocoguest.cli import main as cli_main
from cocoguest.cli.main import main
from cocoguest.errors import ProtocolError
from cocoguest.limits import DEFAULT_LIMITS

_raise: list[BaseException] = []


@click.command("boom")
def boom_command() -> None:
    """Raise whatever the test put in ``_raise``."""
    raise _raise[0]


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    monkeypatch.setitem(cli_main._COMMANDS, "boom", f"{__name__}:boom_command")
    monkeypatch.delenv("COCOGUEST_DEBUG", raising=False)
    _raise.clear()
    return _raise


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _chained() -> ProtocolError:
    try:
        try:
            raise ValueError("the root cause")
        except ValueError as e:
            raise ProtocolError("layer sha256:ab: bad thing") from e
    except ProtocolError as outer:
        return outer


def test_unexpected_exception_is_one_line_without_traceback(
    boom: list[BaseException], capsys: pytest.CaptureFixture[str]
) -> None:
    boom.append(RuntimeError("something\nbroke " + "x" * 100_000))
    assert main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: internal error: RuntimeError: something broke xxx")
    assert "more characters)" in line
    assert "--debug" in line
    assert len(line) < 2000


def test_unexpected_exception_with_debug_prints_the_traceback(
    boom: list[BaseException], capsys: pytest.CaptureFixture[str]
) -> None:
    boom.append(RuntimeError("kaput"))
    assert main(["--debug", "boom"]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == ["error: internal error: RuntimeError: kaput"]
    assert "Traceback (most recent call last)" in err
    assert "boom_command" in err


def test_ctrl_c_is_interrupted_with_status_130(boom: list[BaseException], capsys: pytest.CaptureFixture[str]) -> None:
    boom.append(KeyboardInterrupt())
    assert main(["boom"]) == 130
    err = capsys.readouterr().err
    assert _error_lines(err) == ["error: interrupted"]
    assert "Traceback" not in err


def test_debug_flag_prints_the_causes(boom: list[BaseException], capsys: pytest.CaptureFixture[str]) -> None:
    boom.append(_chained())
    assert main(["--debug", "boom"]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == ["error: layer sha256:ab: bad thing"]
    assert "caused by: ValueError: the root cause" in err


def test_debug_environment_prints_the_causes(
    boom: list[BaseException], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCOGUEST_DEBUG", "1")
    boom.append(_chained())
    assert main(["boom"]) == 1
    assert "caused by: ValueError: the root cause" in capsys.readouterr().err


def test_without_debug_no_causes(boom: list[BaseException], capsys: pytest.CaptureFixture[str]) -> None:
    boom.append(_chained())
    assert main(["--debug", "boom"]) == 1  # a previous run's --debug must not stick
    capsys.readouterr()
    boom.append(_chained())
    assert main(["boom"]) == 1
    assert capsys.readouterr().err.splitlines() == ["error: layer sha256:ab: bad thing"]


@pytest.mark.parametrize("length", [1992, 1993, 2000, 10_000, 300_000])
def test_error_line_is_bounded(boom: list[BaseException], capsys: pytest.CaptureFixture[str], length: int) -> None:
    message = "m" * length
    boom.append(ProtocolError(message))
    assert main(["boom"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert len(line) <= DEFAULT_LIMITS.max_error_line_chars
    if len("error: ") + length <= DEFAULT_LIMITS.max_error_line_chars:
        assert line == f"error: {message}"
    else:
        cut = line.removeprefix("error: ").partition("…")[0]
        assert line.endswith(f"… ({length - len(cut)} more characters)")
        assert cut == "m" * len(cut)


def test_debug_cause_lines_are_bounded(boom: list[BaseException], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise ProtocolError("outer") from ValueError("c" * 300_000)
    except ProtocolError as e:
        boom.append(e)
    assert main(["--debug", "boom"]) == 1
    assert all(len(line) <= DEFAULT_LIMITS.max_error_line_chars for line in capsys.readouterr().err.splitlines())


@pytest.mark.parametrize("module", ["attestation_agent", "cdh_server", "api_server_rest", "coco_keyprovider"])
def test_service_binaries_share_the_last_resort_handler(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each guest/host service binary ends an unforeseen failure with one error line, never a traceback."""
    import importlib  # noqa: PLC0415

    binary = importlib.import_module(f"cocoguest.cli.{module}")

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("socket vanished")

    monkeypatch.setattr(binary.command, "main", explode)
    assert binary.main([]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "error: internal error: RuntimeError: socket vanished (rerun with --debug for a traceback)"
    assert not any("Traceback" in line for line in lines)
