"""Copy an image between OCI layouts, encrypting or decrypting layers on the way (skopeo copy semantics).

Steps:
    1. Select the manifest in the source layout; read it and the config with size caps, verifying digests.
    2. Plan each layer: copy, encrypt, add recipients (already encrypted + new recipients + its key) or decrypt.
    3. Run the layer work concurrently (``max_concurrent``), each blob streamed into the staging area and
       verified (source digest and size; HMAC when decrypting) before it gets its content address.
    4. Write the rewritten manifest (always OCI: only OCI manifests carry encryption, ocicrypt.md §2) and
       commit the destination atomically.

Invariants:
    * Any failure leaves the destination as it was (see :class:`OciLayoutDestination`).
    * The config blob and ``rootfs.diff_ids`` are never changed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from cocoguest.digest import VerifyingReader
from cocoguest.errors import ConfigError, ProtocolError, UnsupportedError
from cocoguest.image.transports.oci import OciLayoutDestination, OciLayoutSource
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor, ImageManifest
from cocoguest.ocicrypt import layer as ocicrypt_layer
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper

LayerProgress = Callable[[int, int], None]
"""Called with (layer index, bytes done so far in that layer)."""


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


class _LayerCopier:
    def __init__(
        self,
        source: OciLayoutSource,
        destination: OciLayoutDestination,
        options: CopyOptions,
        progress: LayerProgress | None,
    ) -> None:
        self._source = source
        self._destination = destination
        self._options = options
        self._progress = progress

    def run(self, index: int, desc: Descriptor, action: LayerAction) -> Descriptor:
        limits = self._options.limits
        if desc.size > limits.max_blob_bytes:
            msg = f"layer {desc.digest}: {desc.size} bytes is over the {limits.max_blob_bytes}-byte limit"
            raise ProtocolError(msg)
        if action in {LayerAction.COPIED, LayerAction.RECIPIENTS_ADDED}:
            self._copy_blob(index, desc)
            if action is LayerAction.COPIED:
                return desc
            return ocicrypt_layer.add_recipients(
                desc, self._options.encryption_wrappers, self._options.decryption_unwrappers, limits=limits
            )
        progress = self._layer_progress(index)
        with self._source.open_blob(desc.digest) as src, self._destination.blob_writer() as (dst, staged):
            if action is LayerAction.ENCRYPTED:
                result = ocicrypt_layer.encrypt_layer(
                    src, dst, desc, self._options.encryption_wrappers, limits=limits, progress=progress
                )
            else:
                result = ocicrypt_layer.decrypt_layer(
                    src, dst, desc, self._options.decryption_unwrappers, limits=limits, progress=progress
                )
            dst.flush()
            staged.store(result.digest)
        return result

    def _layer_progress(self, index: int) -> Callable[[int], None] | None:
        report = self._progress
        if report is None:
            return None
        return lambda done: report(index, done)

    def _copy_blob(self, index: int, desc: Descriptor) -> None:
        """Copy a blob unchanged, verifying its digest and size."""
        if self._destination.has_blob(desc.digest):
            return
        chunk = self._options.limits.stream_chunk_bytes
        with self._source.open_blob(desc.digest) as raw, self._destination.blob_writer() as (dst, staged):
            reader = VerifyingReader(raw, desc.digest, desc.size, f"layer {desc.digest}")
            while data := reader.read(chunk):
                dst.write(data)
                if self._progress is not None:
                    self._progress(index, reader.bytes_read)
            dst.flush()
            staged.store(desc.digest)


def copy_image(
    source: OciLayoutSource,
    destination: OciLayoutDestination,
    options: CopyOptions,
    progress: LayerProgress | None = None,
) -> CopyReport:
    """Copy one image; see the module docstring. The caller commits nothing: this function commits.

    Raises:
        CocoError: any failure; the destination is then left as it was.
    """
    limits = options.limits
    # (1) manifest and config, verified
    manifest_desc = source.manifest_descriptor()
    if manifest_desc.media_type in {media_types.OCI_INDEX, media_types.DOCKER_MANIFEST_LIST}:
        msg = f"{source.reference}: is a multi-platform index; copying indexes is not supported yet"
        raise UnsupportedError(msg)
    what = f"{source.reference}: manifest {manifest_desc.digest}"
    raw_manifest = source.read_verified(manifest_desc, limits.max_manifest_bytes, what)
    try:
        manifest = ImageManifest.from_bytes(raw_manifest, what, manifest_desc.media_type)
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    if len(manifest.layers) > limits.max_layers:
        msg = f"{what}: {len(manifest.layers)} layers, over the limit of {limits.max_layers}"
        raise ProtocolError(msg)
    config = source.read_verified(manifest.config, limits.max_config_bytes, f"{source.reference}: config")
    # (2) plan
    plan = _plan(manifest, options)
    destination.put_bytes(config)
    # (3) layers, concurrently; the first failure cancels the rest
    copier = _LayerCopier(source, destination, options, progress)
    results: list[Descriptor] = list(manifest.layers)
    with ThreadPoolExecutor(max_workers=max(1, options.max_concurrent), thread_name_prefix="layer") as pool:
        futures: dict[Future[Descriptor], int] = {
            pool.submit(copier.run, index, layer, plan[index]): index for index, layer in enumerate(manifest.layers)
        }
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in sorted(done, key=lambda f: futures[f]):
            if (error := future.exception()) is not None:
                raise error
            results[futures[future]] = future.result()
        if pending:  # pragma: no cover - defensive: wait() returns all futures unless one failed
            wait(pending)
    # (4) manifest, commit
    new_manifest = _to_oci_manifest(manifest.with_changes(layers=tuple(results)))
    manifest_bytes = new_manifest.to_bytes()
    digest = destination.put_bytes(manifest_bytes)
    manifest_out = Descriptor(media_types.OCI_MANIFEST, digest, len(manifest_bytes))
    destination.commit(manifest_out)
    reports = tuple(
        LayerReport(i, src_desc, out_desc, action)
        for i, (src_desc, out_desc, action) in enumerate(zip(manifest.layers, new_manifest.layers, plan, strict=True))
    )
    return CopyReport(manifest_out, reports)
