"""Per-layer progress on a terminal (stderr), redrawn in place."""

from __future__ import annotations

import threading
import time

import click

_REDRAW_INTERVAL_S = 0.1


class LayerProgressView:
    """Shows ``layer N: done/size MB`` lines; thread-safe; silent when disabled."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._state: dict[int, tuple[int, int]] = {}
        self._last = 0.0
        self._lines = 0

    def update(self, index: int, done: int, size: int) -> None:
        """Record progress of one layer and redraw at most every 100 ms."""
        with self._lock:
            self._state[index] = (done, size)
            now = time.monotonic()
            if now - self._last < _REDRAW_INTERVAL_S and done < size:
                return
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self._lines:
            click.echo(f"\x1b[{self._lines}F", err=True, nl=False)
        for index in sorted(self._state):
            done, size = self._state[index]
            percent = 100 * done // size if size else 100
            click.echo(f"\x1b[2K  layer {index}: {done / 1e6:8.1f} / {size / 1e6:8.1f} MB {percent:3d}%", err=True)
        self._lines = len(self._state)

    def close(self) -> None:
        """Final redraw."""
        if self.enabled and self._state:
            with self._lock:
                self._draw()
