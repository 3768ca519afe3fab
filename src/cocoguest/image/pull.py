"""``cocoguest pull``: the orchestrator, in the numbered steps of DESIGN.md §2.

Invariants:
    * (3) the policy runs on every pull before the config, any layer or any cache is looked at; a rejection
      leaves nothing new in the store.
    * Layers become visible in the store only verified (see :mod:`cocoguest.image.layer.fetch`); the first
      failing layer cancels the others.
    * Keys are unwrapped before any layer thread starts; threads never call back into key providers.
    * (6) The bundle target is checked (a non-empty bundle refused, never touched) and the snapshotter chosen
      BEFORE any layer is pulled. With the copy snapshotter the rootfs is merged incrementally: layer i is
      merged, in this (the orchestrator) thread and strictly in layer order, as soon as layers 0..i are
      committed (verified) to the store, while higher layers are still being pulled; layer threads never
      merge. Any failure removes what the pull created in the bundle (a pre-existing empty bundle dir stays).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cocoguest.digest import Digest
from cocoguest.errors import (
    CocoError,
    EncryptionRequiredError,
    ProtocolError,
)
from cocoguest.image.bundle import (
    check_bundle,
    overlay_available,
)
from cocoguest.image.fs.whiteouts import WhiteoutFormat, detect_whiteout_format
from cocoguest.image.layer.fetch import LayerJob, LayerOutcome, pull_layer
from cocoguest.image.layer.lowers import LowerLayers, chain_ids
from cocoguest.image.layer.parallel import run_layers
from cocoguest.image.manifests import (
    ApprovedImage,
    approve,
    fetch_manifest,
    for_host_tool,
    parse_config,
    read_config_blob,
)
from cocoguest.image.platform import PlatformSpec
from cocoguest.image.snapshotters import make_snapshotter
from cocoguest.image.sources import OpenedSource
from cocoguest.image.store import ImageRecord, Store
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import ImageManifest
from cocoguest.ocicrypt.keywrap import KeyUnwrapper
from cocoguest.ocicrypt.layer import UnwrapBudget, public_options, unwrap_layer_key
from cocoguest.signature.policy import PolicyDecision
from cocoguest.signature.request import PolicyEvaluator, PolicyRequest

_logger = logging.getLogger(__name__)

LayerProgress = Callable[[int, int, int], None]
"""Called with (layer index, bytes done, layer size)."""

LAYER_SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval while layers are pulled (the default is 5 ms).

Layer threads and the merge mostly wait in syscalls and in zlib/hashing (GIL released) between short runs of
Python; with the default interval a thread coming back from a syscall can wait up to 5 ms for a thread running
Python to hand the GIL over, which serializes the pipeline (measured: a 200 MB, 4-layer pull on 2 cores took
~3.9 s with 5 ms, ~3.1 s with 0.5 ms)."""

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


@contextlib.contextmanager
def _short_switch_interval() -> Iterator[None]:
    """Lower the interpreter's thread switch interval for the duration of the block.

    Refcounted for concurrent pulls in one process: the first one in saves the interval, the last one out
    restores it.
    """
    global _switch_users, _switch_saved  # noqa: PLW0603  (process-wide interpreter setting, refcounted)
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, LAYER_SWITCH_INTERVAL_S))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


@dataclass(frozen=True)
class PullOptions:
    """Everything a pull needs besides the image and the bundle path."""

    work_dir: Path
    policy: PolicyEvaluator
    unwrappers: Sequence[KeyUnwrapper] = ()
    platform: PlatformSpec = field(default_factory=PlatformSpec.running)
    max_concurrent: int = 3
    snapshotter: Literal["overlay", "copy", "auto"] = "auto"
    require_encryption: bool = False
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)


@dataclass(frozen=True)
class PullResult:
    """What ``--json`` prints."""

    manifest_digest: Digest
    config_digest: Digest
    bundle: Path
    layers: tuple[LayerOutcome, ...]
    snapshotter: str
    decision: PolicyDecision

    def to_json(self) -> dict[str, object]:
        """JSON form (``manifest_digest``, ``config_digest``, ``bundle``, ``layers``)."""
        return {
            "manifest_digest": str(self.manifest_digest),
            "config_digest": str(self.config_digest),
            "bundle": str(self.bundle),
            "snapshotter": self.snapshotter,
            "layers": [
                {
                    "digest": str(o.job.descriptor.digest),
                    "diff_id": str(o.job.diff_id),
                    "media_type": o.job.descriptor.media_type,
                    "size": o.job.descriptor.size,
                    "downloaded": o.downloaded,
                }
                for o in self.layers
            ],
            "policy": json.loads(self.decision.to_json()),
        }


def _diff_ids(config: dict[str, object], manifest: ImageManifest, what: str) -> list[Digest]:
    rootfs = config.get("rootfs")
    raw = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        msg = f"{what}: config has no rootfs.diff_ids list"
        raise ProtocolError(msg)
    if len(raw) != len(manifest.layers):
        msg = f"{what}: config lists {len(raw)} diff_ids for {len(manifest.layers)} layers"
        raise ProtocolError(msg)
    try:
        return [Digest.parse(d) for d in raw]
    except ValueError as e:
        msg = f"{what}: config rootfs.diff_ids: {e}"
        raise ProtocolError(msg) from e


def _plan_layers(image: ApprovedImage, diff_ids: Sequence[Digest], options: PullOptions, what: str) -> list[LayerJob]:
    """The layer jobs of an approved image, keys unwrapped; refuses plain layers when encryption is required."""
    manifest = image.manifest
    jobs: list[LayerJob] = []
    budget = UnwrapBudget(options.limits)  # SECURITY: one key-unwrap budget for all layers of the image
    chains = chain_ids(diff_ids)  # a layer with cross-layer hardlinks is stored by chain ID
    for index, (desc, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
        encrypted = media_types.is_encrypted(desc.media_type)
        if options.require_encryption and not encrypted:
            msg = f"{what}: layer {index} ({desc.digest}) is not encrypted, and encryption is required"
            raise EncryptionRequiredError(msg)
        if encrypted:
            # SECURITY: unwrap even when the layer is cached: the store reuses a layer only for a source it
            # verified, and an encrypted source includes a check of this key (see layer/provenance.py).
            # Keys are unwrapped here, before threads start (STYLE §8.4).
            key = unwrap_layer_key(desc, options.unwrappers, limits=options.limits, budget=budget)
            job = LayerJob(index, desc, diff_id, key, public_options(desc), chain_id=chains[index])
        else:
            job = LayerJob(index, desc, diff_id, chain_id=chains[index])
        jobs.append(job)
    return jobs


def _pull_layers(
    opened: OpenedSource,
    jobs: Sequence[LayerJob],
    store: Store,
    options: PullOptions,
    whiteouts: WhiteoutFormat,
    progress: LayerProgress | None,
    on_ready: Callable[[LayerOutcome], None] | None = None,
) -> list[LayerOutcome]:
    """(5) All layers, concurrency-limited; the first failure cancels the rest.

    ``on_ready`` is called in the calling thread (never in a layer thread) with each layer's outcome, strictly
    in layer order, as soon as that layer and all lower ones are committed; the other layers keep being
    pulled meanwhile. An exception from it cancels the pull like a failing layer; a layer failing while
    ``on_ready`` runs cancels the others as soon as it returns.
    """
    cancel = threading.Event()
    lowers = LowerLayers(len(jobs))  # committed lower layers, for layers with cross-layer hardlinks

    def run(_index: int, job: LayerJob) -> LayerOutcome:
        report = None if progress is None else (lambda done: progress(job.index, done, job.descriptor.size))
        return pull_layer(
            opened.source,
            job,
            store,
            image=opened.source.describe(),
            whiteouts=whiteouts,
            cancel=cancel,
            limits=options.limits,
            progress=report,
            lowers=lowers,
        )

    ready = None if on_ready is None else (lambda _index, outcome: on_ready(outcome))
    with _short_switch_interval():
        return run_layers(jobs, run, max_concurrent=options.max_concurrent, cancel=cancel, on_ready=ready)


def _resolve_snapshotter(options: PullOptions, store: Store, what: str) -> Literal["overlay", "copy", "auto"]:
    """``copy`` when requested or when ``auto`` finds no usable overlay; ``auto`` keeps write_bundle's fallback."""
    if options.snapshotter != "auto":
        return options.snapshotter
    if overlay_available(store.work_dir):
        return "auto"  # overlay; should the real mount still be refused, write_bundle falls back to a copy
    _logger.info("%s: overlay unavailable here; the rootfs is a merged copy", what)
    return "copy"


@contextlib.contextmanager
def _bundle_lease(store: Store, bundle: Path, config: dict[str, object], diff_ids: Sequence[Digest]) -> Iterator[None]:
    """(6a) Refuse a non-empty bundle, then lease the image's layers to it; the lease is released on failure.

    Hold :meth:`Store.lease` around it: no prune runs between the lease and the bundle's creation.
    """
    check_bundle(bundle, config)  # before the lease: a refused bundle's own lease must stay
    lease_id = store.lease_bundle(bundle, tuple(diff_ids))
    try:
        yield
    except BaseException:
        with contextlib.suppress(CocoError):  # a lease left behind is dropped by prune (no bundle there)
            store.release_lease(lease_id)
        raise


def pull_image(
    opened: OpenedSource, bundle: Path, options: PullOptions, progress: LayerProgress | None = None
) -> PullResult:
    """Pull ``opened`` into the store and write an OCI runtime bundle at ``bundle``.

    Raises:
        CocoError: any failure; the store keeps only verified layers, the bundle is not left half-written.
    """
    # (1) is the caller's: reference parsed, registries.conf applied, source opened.
    # (2) the manifest, once, size-capped and digest-checked
    fetched = fetch_manifest(opened, options.platform, options.limits)
    what = opened.source.describe()  # now names the location that served the manifest
    manifest, manifest_digest = fetched.manifest, fetched.digest
    # The name of the image found (a short name may have resolved in any search registry): what the policy
    # judges and the store records.
    found = opened.found()
    image_name = str(found.name)
    # (3) policy, BEFORE anything else is read or any cache is consulted
    decision = options.policy.evaluate(
        PolicyRequest(
            found.name,
            manifest_digest,
            fetched.untrusted_bytes,
            found.registry,
            index_digest=fetched.index_digest,
        )
    )
    approved = approve(opened.source, fetched, decision)  # PolicyRejectedError unless accepted
    # (4) manifest and config: readable only through the approved image
    config = parse_config(read_config_blob(approved, options.limits), f"{what}: config")
    diff_ids = _diff_ids(config, manifest, what)
    store = Store.open(options.work_dir, limits=options.limits)
    try:
        jobs = _plan_layers(approved, diff_ids, options, what)
        whiteouts = detect_whiteout_format(store.work_dir)
        # The snapshotter is decided before the layers, so that a copy can be merged while they download.
        choice = _resolve_snapshotter(options, store, what)
        # A lease keeps a concurrent prune from deleting committed layers before the image is recorded; the
        # bundle's lease keeps them (also from rmi + prune) until `bundle rm`.
        # A layer with cross-layer hardlinks is stored under its chain ID: lease both keys of every layer.
        leased = (*diff_ids, *chain_ids(diff_ids)[1:])
        with store.lease(), _bundle_lease(store, bundle, config, leased):
            # (6a) before any layer: refuses a non-empty bundle or a config that cannot become a runtime config
            snapshotter = make_snapshotter(
                choice, bundle, config, what=what, whiteouts=whiteouts, limits=options.limits
            )
            try:
                # (5) layers, each handed to the snapshotter as soon as it and all lower ones are committed
                outcomes = _pull_layers(
                    opened, jobs, store, options, whiteouts, progress, on_ready=snapshotter.layer_ready
                )
                bundle_result = snapshotter.finish(outcomes)  # (6) the bundle, in place
            except BaseException:
                snapshotter.discard()
                raise
            # (7) record
            store.record_image(
                ImageRecord(
                    manifest_digest=manifest_digest,
                    config_digest=manifest.config.digest,
                    references=(image_name,),
                    # store keys: the diff_id, or the chain ID of a layer with cross-layer hardlinks
                    layers=tuple(o.record.diff_id for o in outcomes),
                    compressed_layers=tuple(d.digest for d in manifest.layers),
                    created=time.time(),
                    policy=decision.to_json(),
                    platform=str(options.platform),
                )
            )
    finally:
        store.close()
    return PullResult(
        manifest_digest,
        manifest.config.digest,
        bundle,
        tuple(outcomes),
        bundle_result.snapshotter,
        decision,
    )


def inspect_image(opened: OpenedSource, options: PullOptions) -> tuple[Digest, dict[str, object], dict[str, object]]:
    """Steps (2) and (4) only: the manifest digest, manifest JSON and config JSON, all verified; nothing stored."""
    fetched = fetch_manifest(opened, options.platform, options.limits)
    config_bytes = read_config_blob(for_host_tool(opened.source, fetched), options.limits)
    config = parse_config(config_bytes, f"{opened.source.describe()}: config")
    return fetched.digest, load_object(fetched.untrusted_bytes, f"{opened.source.describe()}: manifest"), config
