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
    DigestMismatchError,
    EncryptionRequiredError,
    PolicyRejectedError,
    ProtocolError,
    UnsupportedError,
)
from cocoguest.image.bundle import write_bundle
from cocoguest.image.fs.merge import merge_layers
from cocoguest.image.fs.unpack import detect_whiteout_format
from cocoguest.image.layer.fetch import LayerJob, LayerOutcome, pull_layer
from cocoguest.image.platform import PlatformSpec, select_manifest
from cocoguest.image.policy import PolicyDecision, PolicyEvaluator, PolicyRequest
from cocoguest.image.store import ImageRecord, Store
from cocoguest.image.transports.base import ImageSource
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import ImageIndex, ImageManifest, media_type_of
from cocoguest.ocicrypt.keywrap import KeyUnwrapper
from cocoguest.ocicrypt.layer import public_options, unwrap_layer_key

_logger = logging.getLogger(__name__)

_SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_INDEX_TYPES = frozenset({media_types.OCI_INDEX, media_types.DOCKER_MANIFEST_LIST})

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


@dataclass(frozen=True)
class FetchedManifest:
    """The manifest for our platform, verified against whatever pinned it."""

    untrusted_bytes: bytes
    digest: Digest
    manifest: ImageManifest
    index_digest: Digest | None = None
    """The index/manifest list it was selected from, if any."""


def _fetch_manifest(opened: OpenedSource, options: PullOptions) -> FetchedManifest:
    """(2) The manifest for our platform, digest-checked, resolved through an index if needed."""
    source, what = opened.source, opened.source.describe()
    untrusted, declared = source.get_manifest(None)
    digest = Digest.of_bytes(untrusted)
    if opened.pinned_digest is not None and digest != Digest.of_bytes(untrusted, opened.pinned_digest.algorithm):
        msg = f"{what}: manifest has digest {digest}, the reference pins {opened.pinned_digest}"
        raise DigestMismatchError(msg)
    media_type = _media_type(untrusted, declared, what)
    index_digest: Digest | None = None
    if media_type in _INDEX_TYPES:
        index_digest = digest
        try:
            index = ImageIndex.from_bytes(untrusted, f"{what}: index")
        except ValueError as e:
            raise ProtocolError(str(e)) from e
        chosen = select_manifest(index, options.platform, what)
        untrusted, declared = source.get_manifest(chosen.digest)
        digest = Digest.of_bytes(untrusted, chosen.digest.algorithm)
        if digest != chosen.digest:
            msg = f"{what}: manifest for {options.platform} has digest {digest}, the index says {chosen.digest}"
            raise DigestMismatchError(msg)
        media_type = _media_type(untrusted, declared or chosen.media_type, what)
        if media_type in _INDEX_TYPES:
            msg = f"{what}: nested index for {options.platform} is not supported"
            raise UnsupportedError(msg)
    try:
        manifest = ImageManifest.from_bytes(untrusted, f"{what}: manifest {digest}", media_type)
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    return FetchedManifest(untrusted, digest, manifest, index_digest)


def _media_type(untrusted: bytes, declared: str | None, what: str) -> str:
    try:
        inner = media_type_of(untrusted, f"{what}: manifest")
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    media_type = inner or declared or media_types.OCI_MANIFEST
    if media_type in _SCHEMA1_TYPES or b'"schemaVersion":1' in untrusted.replace(b" ", b""):
        msg = f"{what}: Docker schema 1 manifests are not supported (deprecated and unverifiable); re-push the image"
        raise UnsupportedError(msg)
    return media_type


def _read_config(source: ImageSource, manifest: ImageManifest, options: PullOptions) -> dict[str, object]:
    """(4) The config blob, digest-checked and size-capped, with a diff_ids count that matches the layers."""
    what = f"{source.describe()}: config {manifest.config.digest}"
    if manifest.config.size > options.limits.max_config_bytes:
        msg = f"{what}: {manifest.config.size} bytes is over the {options.limits.max_config_bytes}-byte limit"
        raise ProtocolError(msg)
    with source.open_blob(manifest.config) as blob:
        untrusted = blob.read(options.limits.max_config_bytes + 1)
    if len(untrusted) != manifest.config.size or Digest.of_bytes(untrusted, manifest.config.digest.algorithm) != (
        manifest.config.digest
    ):
        msg = f"{what}: content does not match the manifest's digest and size"
        raise DigestMismatchError(msg)
    try:
        config = json.loads(untrusted)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"{what}: not valid JSON"
        raise ProtocolError(msg) from e
    if not isinstance(config, dict):
        msg = f"{what}: must be a JSON object"
        raise ProtocolError(msg)
    return config


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
    fetched = _fetch_manifest(opened, options)
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
    if len(manifest.layers) > options.limits.max_layers:
        msg = f"{what}: {len(manifest.layers)} layers, over the limit of {options.limits.max_layers}"
        raise ProtocolError(msg)
    config = _read_config(opened.source, manifest, options)
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
    fetched = _fetch_manifest(opened, options)
    config = _read_config(opened.source, fetched.manifest, options)
    return fetched.digest, json.loads(fetched.untrusted_bytes), config
