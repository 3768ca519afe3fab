"""Content-addressed layer store with SQLite metadata (images, layers, references).

See :mod:`cocoguest.image.store.store` for the invariants.
"""

from __future__ import annotations

from cocoguest.image.store.db import SCHEMA_VERSION, ImageRecord
from cocoguest.image.store.layers import LayerRecord, LayerSlot
from cocoguest.image.store.sources import BlobSource
from cocoguest.image.store.store import PruneReport, RepairReport, Store

__all__ = [
    "SCHEMA_VERSION",
    "BlobSource",
    "ImageRecord",
    "LayerRecord",
    "LayerSlot",
    "PruneReport",
    "RepairReport",
    "Store",
]
