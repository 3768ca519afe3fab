"""Chain IDs, and the hand-off of committed lower layers to the layers above them in one pull.

A layer with cross-layer hardlinks needs its lower layers' committed directories while it unpacks (the link
targets are copied up from them, see :mod:`cocoguest.image.fs.unpack`). Layers are pulled in parallel, so a
layer thread may get there before its lower layers are committed.

Invariants:
    * No deadlock: a layer only ever waits for LOWER layers of the same pull, and never while it holds a store
      lock (the first attempt's provider raises :class:`LowerLayersPendingError` instead of waiting; the
      caller leaves the store slot, waits, and retries). Lower layers never wait on upper ones, and
      ``run_layers`` starts layers in order, so every lower layer of a waiting layer is running or done.
    * Only layers that actually have a cross-layer link wait: the provider is called at the first hardlink
      whose target is not in the layer itself.
    * A waiter gives up (``LayerCancelledError``) as soon as the pull is cancelled, e.g. because a lower layer
      failed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from cocoguest.digest import Digest
from cocoguest.image.fs.lower_view import LowerLayersPendingError
from cocoguest.image.layer.parallel import LayerCancelledError

_CANCEL_POLL_S: Final = 0.05
"""How often a waiting layer looks at the pull's cancel flag (not a limit: waiting ends when the lowers do)."""


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The chain IDs of a layer stack (OCI image-spec config.md, "Layer ChainID").

    ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
    """
    chains: list[Digest] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
            continue
        text = f"{chains[-1]} {diff_id}".encode()
        chains.append(Digest("sha256", hashlib.sha256(text).hexdigest()))
    return chains


class LowerLayers:
    """The committed layer directories of one pull, published by each layer thread as it finishes."""

    def __init__(self, count: int) -> None:
        """Track ``count`` layers (indexes 0..count-1)."""
        self._dirs: list[Path | None] = [None] * count
        self._changed = threading.Condition()

    def committed(self, index: int, layer_dir: Path) -> None:
        """Layer ``index`` is committed (verified) in the store at ``layer_dir``; wake its upper layers."""
        with self._changed:
            self._dirs[index] = layer_dir
            self._changed.notify_all()

    def ready_below(self, index: int) -> list[Path] | None:
        """The directories of layers 0..index-1 if all are committed, else None (never waits)."""
        with self._changed:
            below = self._dirs[:index]
        if any(d is None for d in below):
            return None
        return [d for d in below if d is not None]

    def wait_below(self, index: int, cancel: threading.Event) -> list[Path]:
        """Wait until layers 0..index-1 are committed; return their directories, lowest first.

        Call only without holding a store lock (see the module invariants).

        Raises:
            LayerCancelledError: the pull was cancelled meanwhile.
        """
        with self._changed:
            while True:
                below = self._dirs[:index]
                if all(d is not None for d in below):
                    return [d for d in below if d is not None]
                if cancel.is_set():
                    msg = "cancelled while waiting for the lower layers"
                    raise LayerCancelledError(msg)
                self._changed.wait(_CANCEL_POLL_S)

    def provider(self, index: int) -> Callable[[], Sequence[Path]] | None:
        """What ``unpack_layer(lowers=...)`` calls for layer ``index`` (None for the bottom layer).

        It never waits (it is called under store locks): it raises :class:`LowerLayersPendingError` while a
        lower layer is not committed; the caller then leaves the store, calls :meth:`wait_below`, and retries.
        """
        if index == 0:
            return None

        def lowers() -> Sequence[Path]:
            ready = self.ready_below(index)
            if ready is None:
                raise LowerLayersPendingError
            return ready

        return lowers
