"""The ``cmd`` key provider transport: exec a program, JSON in on stdin, out on stdout (ocicrypt.md §5.5).

Invariants:
    * The program is executed directly (no shell) with the configured ``path`` and ``args`` and the caller's
      environment, like Go's ``exec.Command``.
    * Unlike Go, every call has a deadline (``Limits.keyprovider_timeout_s``) after which the program is
      killed, and stdout is capped at ``Limits.keyprovider_max_response_bytes``; stderr keeps only its tail.
    * A non-zero exit is a :class:`~cocoguest.ocicrypt.keyprovider.protocol.ProviderFailedError` carrying the
      provider name and the last line of stderr; the process is always reaped.
    * The request (which holds layer keys on wrap) and the answer (which holds them on unwrap) are never
      logged.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import subprocess
import time
from collections.abc import Sequence

from cocoguest.errors import ConfigError, ProtocolError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keyprovider.protocol import Operation, ProviderFailedError

_logger = logging.getLogger(__name__)


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message on stderr"


class CommandTransport:
    """A :class:`~cocoguest.ocicrypt.keyprovider.protocol.KeyProviderTransport` that executes a program."""

    def __init__(self, name: str, path: str, args: Sequence[str] = (), limits: Limits = DEFAULT_LIMITS) -> None:
        """Prepare to run ``path`` with ``args`` for provider ``name``.

        Args:
            name: the provider name, for messages.
            path: the program to execute.
            args: its arguments.
            limits: timeout and answer size.
        """
        self._name = name
        self._argv = [path, *args]
        self._limits = limits

    def call(self, op: Operation, request: bytes) -> bytes:
        """Run the program once with ``request`` on stdin; return its stdout.

        ``op`` is not needed: the operation is inside the request JSON.

        Raises:
            ConfigError: the program does not exist or is not executable.
            TransportError: it cannot be started, or it ran longer than the timeout (retryable).
            ProviderFailedError: it exited with a non-zero status.
            ProtocolError: its answer is larger than the limit.
        """
        what = f"key provider {self._name!r} ({self._argv[0]})"
        try:
            proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except (FileNotFoundError, PermissionError) as e:
            msg = f"{what}: cannot execute: {e.strerror}"
            raise ConfigError(msg) from e
        except OSError as e:
            msg = f"{what}: cannot start: {e.strerror}"
            raise TransportError(msg) from e
        try:
            stdout, stderr = self._exchange(proc, request, what)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if stderr:
            _logger.debug("%s stderr: %s", what, stderr.decode("utf-8", errors="replace"))
        if proc.returncode != 0:
            msg = f"{what} ({op}): exited with status {proc.returncode}: {_last_line(stderr)}"
            raise ProviderFailedError(msg)
        return stdout

    def _exchange(self, proc: subprocess.Popen[bytes], request: bytes, what: str) -> tuple[bytes, bytes]:
        """Feed stdin and drain stdout/stderr concurrently until both close, within the deadline."""
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        if stdin is None or stdout is None or stderr is None:  # pragma: no cover — defensive: PIPE was asked
            msg = f"{what}: no pipes"
            raise TransportError(msg)
        cap = self._limits.keyprovider_max_response_bytes
        chunk = self._limits.stream_chunk_bytes
        deadline = time.monotonic() + self._limits.keyprovider_timeout_s
        out, err = bytearray(), bytearray()
        pending = memoryview(request)
        with selectors.DefaultSelector() as sel:
            if pending:
                sel.register(stdin, selectors.EVENT_WRITE)
            else:
                stdin.close()
            sel.register(stdout, selectors.EVENT_READ, out)
            sel.register(stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"{what}: no answer within {self._limits.keyprovider_timeout_s} s"
                    raise TransportError(msg, retryable=True)
                for key, _ in sel.select(remaining):
                    if key.fileobj is stdin:
                        try:
                            # At most PIPE_BUF bytes: a write of that size to a writable pipe never blocks.
                            pending = pending[os.write(key.fd, pending[: select.PIPE_BUF]) :]
                        except BrokenPipeError:
                            pending = pending[:0]  # the program exited without reading; its status tells why
                        if not pending:
                            sel.unregister(stdin)
                            stdin.close()
                        continue
                    data = os.read(key.fd, chunk)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    buf: bytearray = key.data
                    buf += data
                    if buf is out and len(out) > cap:
                        msg = f"{what}: answer larger than {cap} bytes"
                        raise ProtocolError(msg)
                    if buf is err and len(err) > cap:
                        del err[:-cap]
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired as e:
            msg = f"{what}: did not exit within {self._limits.keyprovider_timeout_s} s"
            raise TransportError(msg, retryable=True) from e
        return bytes(out), bytes(err)
