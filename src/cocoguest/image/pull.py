"""``cocoguest pull``: the orchestrator, in the numbered steps of DESIGN.md §2.

Invariants:
    * (3) the policy runs on every pull before the config, any layer or any cache is looked at; a rejection
      leaves nothing new in the store.
    * Layers become visible in the store only verified (see :mod:`cocoguest.image.layer.fetch`); the first
      failing layer cancels the others.
    * Keys are unwrapped before any layer thread starts; threads never call back into key providers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cocoguest.digest import Digest
from cocoguest.errors import (
    EncryptionRequiredError,
    PolicyRejectedError,
    ProtocolError,
)
from cocoguest.image.bundle import write_bundle
from cocoguest.image.fs.merge import merge_layers
from cocoguest.image.fs.unpack import detect_whiteout_format
from cocoguest.image.layer.fetch import LayerJob, LayerOutcome, pull_layer
from cocoguest.image.manifests import fetch_manifest, parse_config, read_config_blob
from cocoguest.image.platform import PlatformSpec
from cocoguest.image.policy import PolicyDecision, PolicyEvaluator, PolicyRequest
from cocoguest.image.store import ImageRecord, Store
from cocoguest.image.transports.base import ImageSource
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import ImageManifest
from cocoguest.ocicrypt.keywrap import KeyUnwrapper
from cocoguest.ocicrypt.layer import public_options, unwrap_layer_key

_logger = logging.getLogger(__name__)

LayerProgress = Callable[[int, int, int], None]
"""Called with (layer index, bytes done, layer size)."""


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
class OpenedSource:
    """A source and the names for it: ``reference`` for the store and the policy, ``transport``."""

    source: ImageSource
    reference: str
    transport: str
    pinned_digest: Digest | None = None


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


def _plan_layers(
    manifest: ImageManifest, diff_ids: Sequence[Digest], options: PullOptions, what: str
) -> list[LayerJob]:
    jobs: list[LayerJob] = []
    for index, (desc, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
        encrypted = media_types.is_encrypted(desc.media_type)
        if options.require_encryption and not encrypted:
            msg = f"{what}: layer {index} ({desc.digest}) is not encrypted, and encryption is required"
            raise EncryptionRequiredError(msg)
        if encrypted:
            # SECURITY: unwrap even when the layer is cached: otherwise any image could name the diff_id of
            # another image's encrypted layer and get its plaintext without holding the key. Keys are unwrapped
            # here, before threads start (STYLE §8.4).
            job = LayerJob(index, desc, diff_id, unwrap_layer_key(desc, options.unwrappers), public_options(desc))
        else:
            job = LayerJob(index, desc, diff_id)
        jobs.append(job)
    return jobs


def _pull_layers(
    opened: OpenedSource, jobs: Sequence[LayerJob], store: Store, options: PullOptions, progress: LayerProgress | None
) -> list[LayerOutcome]:
    """(5) All layers, concurrency-limited; the first failure cancels the rest."""
    whiteouts = detect_whiteout_format(store.work_dir)
    cancel = threading.Event()

    def run(job: LayerJob) -> LayerOutcome:
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
        )

    outcomes: dict[int, LayerOutcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, options.max_concurrent), thread_name_prefix="layer") as pool:
        futures: dict[Future[LayerOutcome], LayerJob] = {pool.submit(run, job): job for job in jobs}
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            cancel.set()
            for future in pending:
                future.cancel()
            wait(pending)
            # Report the lowest failing layer, not a cancellation it caused.
            first = min(failed, key=lambda f: futures[f].index)
            error = first.exception()
            assert error is not None  # noqa: S101  (filtered above)
            raise error
        for future in done:
            outcomes[futures[future].index] = future.result()
    return [outcomes[i] for i in range(len(jobs))]


def pull_image(
    opened: OpenedSource, bundle: Path, options: PullOptions, progress: LayerProgress | None = None
) -> PullResult:
    """Pull ``opened`` into the store and write an OCI runtime bundle at ``bundle``.

    Raises:
        CocoError: any failure; the store keeps only verified layers, the bundle is not left half-written.
    """
    what = opened.source.describe()
    # (1) is the caller's: reference parsed, registries.conf applied, source opened.
    # (2) the manifest, once, size-capped and digest-checked
    fetched = fetch_manifest(opened, options.platform, options.limits)
    manifest, manifest_digest = fetched.manifest, fetched.digest
    # (3) policy, BEFORE anything else is read or any cache is consulted
    decision = options.policy.evaluate(
        PolicyRequest(
            opened.reference,
            opened.transport,
            manifest_digest,
            fetched.untrusted_bytes,
            opened.source,
            index_digest=fetched.index_digest,
        )
    )
    if not decision.accepted:
        msg = f"{what}: rejected by the signature policy: {'; '.join(decision.reasons) or 'no reason given'}"
        raise PolicyRejectedError(msg)
    # (4) manifest and config
    config = parse_config(read_config_blob(opened.source, manifest.config, options.limits), f"{what}: config")
    diff_ids = _diff_ids(config, manifest, what)
    store = Store.open(options.work_dir, limits=options.limits)
    try:
        jobs = _plan_layers(manifest, diff_ids, options, what)
        # A lease keeps a concurrent prune from deleting committed layers before the image is recorded.
        with store.lease():
            outcomes = _pull_layers(opened, jobs, store, options, progress)  # (5) layers
            # (6) bundle
            layer_dirs = [o.record.path for o in outcomes]
            whiteouts = detect_whiteout_format(store.work_dir)
            bundle_result = write_bundle(
                bundle,
                layer_dirs,
                config,
                snapshotter=options.snapshotter,
                work_root=store.work_dir / "mounts",
                merge=lambda dirs, target: merge_layers(dirs, target, what=what, whiteouts=whiteouts),
            )
            # (7) record
            store.record_image(
                ImageRecord(
                    manifest_digest=manifest_digest,
                    config_digest=manifest.config.digest,
                    references=(opened.reference,),
                    layers=tuple(diff_ids),
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
    config_bytes = read_config_blob(opened.source, fetched.manifest.config, options.limits)
    config = parse_config(config_bytes, f"{opened.source.describe()}: config")
    return fetched.digest, json.loads(fetched.untrusted_bytes), config
