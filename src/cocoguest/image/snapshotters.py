"""How the pull turns committed layers into the bundle's rootfs (step 6): one object per snapshotter.

The pull runs one path for every snapshotter: it creates the snapshotter before any layer is pulled (so a
non-empty bundle or a malformed image config is refused first), hands it each layer as soon as that layer and
all lower ones are committed, then asks it for the finished bundle; on any failure it discards it.

Invariants:
    * ``layer_ready`` is called in the orchestrator thread, strictly in layer order (see
      :func:`~cocoguest.image.layer.parallel.run_layers`); layer threads never touch the bundle.
    * ``discard`` removes everything the snapshotter created (idempotent); a finished bundle is not discarded.
    * The copy snapshotter merges incrementally while higher layers still download; the overlay snapshotter
      mounts the layer directories at the end, falling back to a merged copy under ``auto`` when the kernel
      refuses the mount.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from cocoguest.image.bundle import BundleResult, check_bundle, finish_bundle, prepare_bundle, write_bundle
from cocoguest.image.bundle.remove import OVERLAY_STATE_DIR
from cocoguest.image.fs.merge import IncrementalMerge, merge_layers
from cocoguest.image.fs.whiteouts import WhiteoutFormat
from cocoguest.image.layer.fetch import LayerOutcome
from cocoguest.limits import Limits

_logger = logging.getLogger(__name__)


class RootfsSnapshotter(Protocol):
    """Builds one bundle from committed layers."""

    def layer_ready(self, outcome: LayerOutcome) -> None:
        """Layer ``outcome`` and every lower layer are committed (called in layer order)."""
        ...

    def finish(self, outcomes: Sequence[LayerOutcome]) -> BundleResult:
        """The finished bundle, from all layers (lowest first)."""
        ...

    def discard(self) -> None:
        """Remove what this snapshotter created; idempotent, a no-op after a successful :meth:`finish`."""
        ...


class CopySnapshotter:
    """A merged copy of the layers, built layer by layer while the higher layers still download."""

    def __init__(
        self, bundle: Path, config: Mapping[str, object], *, what: str, whiteouts: WhiteoutFormat, limits: Limits
    ) -> None:
        """Check the config and the bundle path, and create the (hidden) bundle with an empty rootfs."""
        self._config = config
        self._what = what
        self._limits = limits
        self._prepared = prepare_bundle(bundle, config)
        try:
            self._merge = IncrementalMerge(self._prepared.rootfs, what=what, whiteouts=whiteouts, limits=limits)
        except BaseException:
            self._prepared.discard()
            raise

    def layer_ready(self, outcome: LayerOutcome) -> None:
        """Merge the layer into the rootfs."""
        started = time.monotonic()
        self._merge.add(outcome.record.path, name=outcome.job.what)
        _logger.debug("%s: merged %s in %.2f s", self._what, outcome.job.what, time.monotonic() - started)

    def finish(self, outcomes: Sequence[LayerOutcome]) -> BundleResult:
        """Close the merge, resolve the user, write config.json and put the bundle in place."""
        del outcomes  # merged as they became ready
        try:
            self._merge.finish()
        finally:
            self._merge.close()
        return finish_bundle(self._prepared, self._config, limits=self._limits)  # discards the bundle itself on failure

    def discard(self) -> None:
        """Stop the merge and remove the bundle being built."""
        self._merge.close()
        self._prepared.discard()


class MountSnapshotter:
    """An overlay mount of the layer directories (``overlay``), or under ``auto`` a merged copy when refused."""

    def __init__(
        self,
        bundle: Path,
        config: Mapping[str, object],
        *,
        what: str,
        whiteouts: WhiteoutFormat,
        mode: Literal["overlay", "auto"],
        limits: Limits,
    ) -> None:
        """Refuse a non-empty bundle or a malformed config now, before any layer is pulled."""
        check_bundle(bundle, config)
        self._limits = limits
        self._bundle = bundle
        self._config = config
        self._what = what
        self._whiteouts = whiteouts
        self._mode: Literal["overlay", "auto"] = mode

    def layer_ready(self, outcome: LayerOutcome) -> None:
        """Nothing to do until every layer is there."""

    def finish(self, outcomes: Sequence[LayerOutcome]) -> BundleResult:
        """Mount (or merge) the layers and write the bundle; nothing is left on failure."""
        what, whiteouts, limits = self._what, self._whiteouts, self._limits
        return write_bundle(
            self._bundle,
            [o.record.path for o in outcomes],
            self._config,
            snapshotter=self._mode,
            # SECURITY: a private upper/work dir per bundle; containers never share writable state.
            work_root=self._bundle / OVERLAY_STATE_DIR,
            merge=lambda dirs, target: merge_layers(dirs, target, what=what, whiteouts=whiteouts, limits=limits),
            limits=limits,
        )

    def discard(self) -> None:
        """Nothing was created before :meth:`finish`, which cleans up after itself."""


def make_snapshotter(
    choice: Literal["overlay", "copy", "auto"],
    bundle: Path,
    config: Mapping[str, object],
    *,
    what: str,
    whiteouts: WhiteoutFormat,
    limits: Limits,
) -> RootfsSnapshotter:
    """The snapshotter for ``choice`` (``auto`` here means: overlay is available, fall back if the mount fails).

    Raises:
        ConfigError: the bundle exists and is not empty.
        ProtocolError, UnsupportedError: the image config cannot become a runtime config.
        TransportError: the bundle path cannot be created or inspected.
    """
    if choice == "copy":
        return CopySnapshotter(bundle, config, what=what, whiteouts=whiteouts, limits=limits)
    return MountSnapshotter(bundle, config, what=what, whiteouts=whiteouts, mode=choice, limits=limits)
