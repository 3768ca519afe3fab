"""Run per-layer work in a bounded thread pool, in-order hand-off, cancel on the first failure.

Shared by ``pull`` (fetch, verify, unpack into the store) and ``copy`` (encrypt, decrypt, verify into the
destination).

Invariants:
    * At most ``max_concurrent`` layers run at once; results come back in layer order.
    * Layers START in order (the pool takes tasks first in, first out): when layer i runs, every layer below it
      runs or has finished, so a layer may wait for lower layers (cross-layer hardlinks, ``lowers.py``)
      without deadlock, as long as lower layers never wait for upper ones.
    * ``on_ready(i, result)`` runs in the calling thread (never a worker), strictly in order, as soon as layers
      0..i have all finished, while higher layers keep running.
    * The first failure (of a layer or of ``on_ready``, or an interrupt) sets ``cancel`` (workers check it at
      their next read), drops queued layers, waits for running ones, and raises the failure of the lowest
      failing layer, not a cancellation it caused.
    * A cancelled layer stops with :class:`LayerCancelledError` (the one cancellation error of pull and copy);
      it never leaves ``run_layers``, which raises the failure that caused it instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from cocoguest.errors import CocoError

T = TypeVar("T")
R = TypeVar("R")


class LayerCancelledError(CocoError):
    """Another layer failed (or the run was interrupted); this one stopped at its next read."""


def raise_if_cancelled(cancel: threading.Event) -> None:
    """Stop a layer worker once ``cancel`` is set.

    Raises:
        LayerCancelledError: ``cancel`` is set.
    """
    if cancel.is_set():
        msg = "cancelled because another layer failed"
        raise LayerCancelledError(msg)


def run_layers(
    tasks: Sequence[T],
    work: Callable[[int, T], R],
    *,
    max_concurrent: int,
    cancel: threading.Event,
    on_ready: Callable[[int, R], None] | None = None,
) -> list[R]:
    """``work(i, tasks[i])`` for every task, concurrently; see the module invariants.

    Raises:
        BaseException: the first layer's (or ``on_ready``'s) failure.
    """
    results: dict[int, R] = {}
    next_ready = 0
    with ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="layer") as pool:
        futures: dict[Future[R], int] = {pool.submit(work, i, task): i for i, task in enumerate(tasks)}
        pending: set[Future[R]] = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    error = min(failed, key=lambda f: futures[f]).exception()
                    assert error is not None  # noqa: S101  (filtered above)
                    raise error
                for future in done:
                    results[futures[future]] = future.result()
                while on_ready is not None and next_ready in results:
                    on_ready(next_ready, results[next_ready])
                    next_ready += 1
        except BaseException:
            cancel.set()
            for future in pending:
                future.cancel()
            raise
        # leaving the pool waits for layers still running after a failure
    return [results[i] for i in range(len(tasks))]
