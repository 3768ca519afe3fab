"""Copy an image between OCI layouts and registries, encrypting or decrypting layers on the way (skopeo copy).

Steps:
    1. Read the source's manifest, size-capped and checked against the digest the reference pins; an index
       (OCI index, Docker manifest list) is resolved to the manifest of one platform, which is checked against
       the index's digest. Docker schema 1 is refused. Read the config, digest-checked.
    2. Plan each layer: copy, encrypt, add recipients (already encrypted + new recipients + its key) or decrypt.
    3. Run the layer work concurrently (``max_concurrent``). Unchanged blobs stream from the source through a
       verifying reader into the destination; transformed blobs are produced by ocicrypt (which verifies the
       source digest and, when decrypting, the HMAC) into a destination sink that is stored only afterwards.
       The first failure cancels the other layers (they stop at their next chunk).
    4. Write the manifest, last (see :mod:`cocoguest.image.destinations` for what commit means per
       destination).

Manifest format on write:
    * If no layer changed and the destination accepts the source manifest's type, the source manifest bytes
      are written unchanged, so the manifest digest is kept (a Docker schema2 image pushed to a registry stays
      Docker schema2).
    * Otherwise the manifest is rewritten as OCI (only OCI manifests carry encryption, ocicrypt.md §2; and
      ``oci:`` layouts hold OCI manifests only, as with skopeo): Docker layer and config media types are mapped
      to their OCI equivalents; the config blob itself is copied unchanged.

Invariants:
    * Any failure leaves the destination without a new image (see :class:`ImageDestination`); the copy
      aborts the destination itself.
    * Nothing unverified is written: every blob is verified against its source descriptor (and decrypted
      blobs against their HMAC) before the destination names it.
    * The config blob and ``rootfs.diff_ids`` are never changed.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from cocoguest.digest import Readable, VerifyingReader
from cocoguest.errors import ConfigError, ProtocolError
from cocoguest.image.destinations import ImageDestination
from cocoguest.image.layer.parallel import raise_if_cancelled, run_layers
from cocoguest.image.manifests import fetch_manifest, for_host_tool, read_config_blob
from cocoguest.image.platform import PlatformSpec
from cocoguest.image.sources import OpenedSource, open_source
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor, ImageManifest
from cocoguest.oci.source import ImageSource
from cocoguest.ocicrypt import layer as ocicrypt_layer
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.registry.access import RegistryAccess

LayerProgress = Callable[[int, int], None]
"""Called with (layer index, bytes of that layer processed so far)."""


class LayerAction(enum.StrEnum):
    """What happened to a layer."""

    COPIED = "copied"
    ENCRYPTED = "encrypted"
    RECIPIENTS_ADDED = "recipients added"
    DECRYPTED = "decrypted"


@dataclass(frozen=True)
class CopyOptions:
    """What to do with the layers."""

    encryption_wrappers: Sequence[KeyWrapper] = ()
    encrypt_layers: Sequence[int] = ()
    """skopeo's ``--encrypt-layer``: 0-based, negative from the end; empty means every layer."""
    decryption_unwrappers: Sequence[KeyUnwrapper] = ()
    max_concurrent: int = 3
    platform: PlatformSpec | None = None
    """The index entry copied when the source is multi-platform; ``None``: the running machine's."""
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)


@dataclass(frozen=True)
class LayerReport:
    """One layer before and after."""

    index: int
    source: Descriptor
    result: Descriptor
    action: LayerAction


@dataclass(frozen=True)
class CopyReport:
    """The outcome of a copy."""

    manifest: Descriptor
    layers: tuple[LayerReport, ...]


def selected_layers(count: int, requested: Sequence[int]) -> set[int]:
    """containers/image's index rule: ``(n + l) % n`` with Go's truncating modulo; empty selects all."""
    if not requested:
        return set(range(count))
    chosen: set[int] = set()
    for value in requested:
        shifted = count + value
        if count and shifted >= 0:  # a negative dividend in Go gives a negative index: matches nothing
            chosen.add(shifted % count)
    return chosen


# --- opening a source ---------------------------------------------------------------------------------


def open_copy_source(text: str, access: RegistryAccess) -> OpenedSource:
    """Open ``oci:PATH[:REF]`` or ``docker://HOST/REPO[:TAG][@DIGEST]`` for reading (no network access yet).

    As skopeo's ``docker://``: the name is normalised (``docker.io/library/...``), never searched in
    unqualified-search registries; registries.conf applies (blocked refused, mirrors first, remaps).

    Raises:
        ConfigError: unknown transport, malformed reference, blocked registry, bad settings.
        ResourceNotFoundError: the layout does not exist.
    """
    if not text.startswith(("oci:", "docker://")):
        transport = text.split(":", 1)[0] if ":" in text else "(none)"
        msg = (
            f"source {text!r}: transport {transport!r} is not supported by copy "
            "(use oci:PATH[:REF] or docker://HOST/REPO[:TAG])"
        )
        raise ConfigError(msg)
    return open_source(text, access, search_unqualified=False)


# --- (1) manifest and config ----------------------------------------------------------------------------


# --- (2) plan -----------------------------------------------------------------------------------------


def _to_oci_manifest(manifest: ImageManifest) -> ImageManifest:
    if manifest.media_type == media_types.OCI_MANIFEST:
        return manifest
    config = manifest.config
    if config.media_type == media_types.DOCKER_CONFIG:
        config = config.with_changes(media_type=media_types.OCI_CONFIG)
    layers = tuple(
        layer.with_changes(media_type=media_types.DOCKER_TO_OCI_LAYER.get(layer.media_type, layer.media_type))
        for layer in manifest.layers
    )
    return manifest.with_changes(media_type=media_types.OCI_MANIFEST, config=config, layers=layers)


def _plan(manifest: ImageManifest, options: CopyOptions) -> list[LayerAction]:
    encrypting = bool(options.encryption_wrappers)
    chosen = selected_layers(len(manifest.layers), options.encrypt_layers) if encrypting else set()
    plan: list[LayerAction] = []
    for index, layer in enumerate(manifest.layers):
        encrypted = media_types.is_encrypted(layer.media_type)
        if index in chosen and encrypted:
            if not options.decryption_unwrappers:
                msg = (
                    f"layer {index} ({layer.digest}) is already encrypted; to add recipients give also a "
                    "--decryption-key that unwraps its current key"
                )
                raise ConfigError(msg)
            plan.append(LayerAction.RECIPIENTS_ADDED)
        elif index in chosen:
            plan.append(LayerAction.ENCRYPTED)
        elif encrypted and options.decryption_unwrappers and not encrypting:
            plan.append(LayerAction.DECRYPTED)
        else:
            plan.append(LayerAction.COPIED)
    return plan


# --- (3) layers -----------------------------------------------------------------------------------------


class _LayerReader:
    """A verifying reader over a source blob that reports progress and stops when the copy is cancelled."""

    def __init__(self, verifying: VerifyingReader, on_chunk: Callable[[int], None]) -> None:
        self._verifying = verifying
        self._on_chunk = on_chunk

    def read(self, n: int = -1, /) -> bytes:
        data = self._verifying.read(n)
        self._on_chunk(len(data))
        return data


class _LayerCopier:
    def __init__(
        self,
        source: ImageSource,
        destination: ImageDestination,
        options: CopyOptions,
        progress: LayerProgress | None,
    ) -> None:
        self._source = source
        self._destination = destination
        self._options = options
        self._progress = progress
        self.cancelled = threading.Event()
        # SECURITY: one key-unwrap budget shared by all layer threads of this copy.
        self._unwrap_budget = ocicrypt_layer.UnwrapBudget(options.limits)

    def run(self, index: int, desc: Descriptor, action: LayerAction) -> Descriptor:
        limits = self._options.limits
        raise_if_cancelled(self.cancelled)
        if desc.size > limits.max_blob_bytes:
            msg = f"layer {desc.digest}: {desc.size} bytes is over the {limits.max_blob_bytes}-byte limit"
            raise ProtocolError(msg)
        if action in {LayerAction.COPIED, LayerAction.RECIPIENTS_ADDED}:
            self._copy_blob(index, desc)
            if action is LayerAction.COPIED:
                return desc
            return ocicrypt_layer.add_recipients(
                desc,
                self._options.encryption_wrappers,
                self._options.decryption_unwrappers,
                limits=limits,
                budget=self._unwrap_budget,
            )
        on_chunk = self._chunk_callback(index)
        with self._source.open_blob(desc) as src, self._destination.blob_writer() as sink:
            # ocicrypt verifies the source blob's digest and size (and, decrypting, the HMAC) before returning.
            if action is LayerAction.ENCRYPTED:
                result = ocicrypt_layer.encrypt_layer(
                    src, sink.file, desc, self._options.encryption_wrappers, limits=limits, progress=on_chunk
                )
            else:
                result = ocicrypt_layer.decrypt_layer(
                    src,
                    sink.file,
                    desc,
                    self._options.decryption_unwrappers,
                    limits=limits,
                    progress=on_chunk,
                    budget=self._unwrap_budget,
                )
            # SECURITY: stored (named, uploaded) only now, after every check passed.
            sink.store(result.digest)
        return result

    def _chunk_callback(self, index: int) -> Callable[[int], None]:
        """Per chunk: stop if cancelled; report the cumulative byte count."""
        report = self._progress
        done = 0

        def on_chunk(count: int) -> None:
            nonlocal done
            raise_if_cancelled(self.cancelled)
            done += count
            if report is not None and count:
                report(index, done)

        return on_chunk

    def _copy_blob(self, index: int, desc: Descriptor) -> None:
        """Copy a blob unchanged, verifying its digest and size on the way."""
        if self._destination.has_blob(desc.digest):
            return
        what = f"layer {desc.digest}"

        @contextlib.contextmanager
        def open_reader() -> Iterator[Readable]:
            with self._source.open_blob(desc) as raw:
                yield _LayerReader(VerifyingReader(raw, desc.digest, desc.size, what), self._chunk_callback(index))

        self._destination.put_blob(desc, open_reader)


def _run_layers(
    copier: _LayerCopier, layers: Sequence[Descriptor], plan: Sequence[LayerAction], max_concurrent: int
) -> list[Descriptor]:
    return run_layers(
        layers,
        lambda index, layer: copier.run(index, layer, plan[index]),
        max_concurrent=max_concurrent,
        cancel=copier.cancelled,
    )


# --- orchestrator -----------------------------------------------------------------------------------------


def copy_image(
    opened: OpenedSource,
    destination: ImageDestination,
    options: CopyOptions,
    progress: LayerProgress | None = None,
) -> CopyReport:
    """Copy one image; see the module docstring. This function commits, or aborts the destination on failure.

    Args:
        opened: the source and the digest its reference pins (if any).
        destination: where to write; the caller closes it.
        options: keys and layer selection, concurrency, platform, limits.
        progress: per-layer progress callback (called from worker threads).

    Raises:
        CocoError: any failure; the destination then holds no new image.
    """
    try:
        return _copy(opened, destination, options, progress)
    except BaseException:
        destination.abort()
        raise


def _copy(
    opened: OpenedSource, destination: ImageDestination, options: CopyOptions, progress: LayerProgress | None
) -> CopyReport:
    source = opened.source
    # (1) manifest and config, verified
    read = fetch_manifest(opened, options.platform or PlatformSpec.running(), options.limits)
    manifest = read.manifest
    config = read_config_blob(for_host_tool(source, read), options.limits)
    # (2) plan
    plan = _plan(manifest, options)
    # (3) blobs: config, then the layers concurrently; the first failure cancels the rest
    destination.put_small_blob(config)
    copier = _LayerCopier(source, destination, options, progress)
    results = _run_layers(copier, manifest.layers, plan, options.max_concurrent)
    # (4) manifest, last
    unchanged = all(action is LayerAction.COPIED for action in plan)
    if unchanged and destination.supports_manifest_type(manifest.media_type):
        # Keep the source bytes: the manifest digest (and any signature over it) stays valid.
        out_manifest, manifest_bytes, media_type = manifest, read.untrusted_bytes, manifest.media_type
    else:
        out_manifest = _to_oci_manifest(manifest.with_changes(layers=tuple(results)))
        manifest_bytes, media_type = out_manifest.to_bytes(), media_types.OCI_MANIFEST
    manifest_out = destination.commit(manifest_bytes, media_type)
    reports = tuple(
        LayerReport(i, src_desc, out_desc, action)
        for i, (src_desc, out_desc, action) in enumerate(zip(manifest.layers, out_manifest.layers, plan, strict=True))
    )
    return CopyReport(manifest_out, reports)
