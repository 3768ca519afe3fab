"""One cancellation error: pull and copy layer workers stop with the same ``LayerCancelledError``."""

from __future__ import annotations

import io
import threading
from typing import Any, cast

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import CocoError, ProtocolError
from cocoguest.image.copy import CopyOptions, LayerAction, _LayerCopier
from cocoguest.image.layer.fetch import _CountingReader
from cocoguest.image.layer.parallel import LayerCancelledError, run_layers
from cocoguest.oci import media_types as mt
from cocoguest.oci.descriptor import Descriptor


def _cancelled() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_a_cancelled_pull_layer_stops_with_the_shared_error() -> None:
    reader = _CountingReader(io.BytesIO(b"layer"), None, _cancelled())
    with pytest.raises(LayerCancelledError, match="another layer failed"):
        reader.read(5)


def test_a_cancelled_copy_layer_stops_with_the_shared_error() -> None:
    # The copier refuses before it touches the source or the destination.
    copier = _LayerCopier(cast(Any, None), cast(Any, None), CopyOptions(), None)
    copier.cancelled.set()
    desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.of_bytes(b"x"), 1)
    with pytest.raises(LayerCancelledError, match="another layer failed"):
        copier.run(0, desc, LayerAction.COPIED)


def test_the_cancellation_is_a_coco_error() -> None:
    assert issubclass(LayerCancelledError, CocoError)


def test_run_layers_raises_the_failure_not_the_cancellation_it_caused() -> None:
    started = threading.Event()

    def work(index: int, _task: int) -> int:
        if index == 0:
            started.wait()
            msg = "layer 0 is broken"
            raise ProtocolError(msg)
        reader = _CountingReader(io.BytesIO(b""), None, cancel)
        started.set()
        while True:
            reader.read(1)  # raises LayerCancelledError once layer 0 failed

    cancel = threading.Event()
    with pytest.raises(ProtocolError, match="layer 0 is broken"):
        run_layers([0, 1], work, max_concurrent=2, cancel=cancel)
    assert cancel.is_set()
