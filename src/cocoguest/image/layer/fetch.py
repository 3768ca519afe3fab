"""Pull one layer into the store: the numbered chain of DESIGN.md §2 step 5.

stream the blob -> verify compressed digest and size -> decrypt (AES-CTR, HMAC) -> decompress -> unpack into a
private staging directory while hashing the tar stream -> drain to EOF so every end-of-stream check fires ->
verify HMAC (at EOF of the ciphertext) and diff_id -> atomic commit into the store.

Invariants:
    * Nothing reaches ``layers/`` of the store unless the compressed digest, the size, the HMAC (encrypted
      layers) and the diff_id all verified; on any failure the staging directory is removed by the store.
    * A layer already committed under its diff_id is reused without reading the blob only when the store
      verified this descriptor's source (blob digest, size, media type, key check) as producing it (the
      store's reuse rule; the caller ran the policy and unwrapped the key first). Otherwise the blob is
      downloaded and verified in full, and on success its source is recorded.
    * ``cancel`` aborts a running layer at its next read.
    * Cross-layer hardlinks: the unpack gets this pull's committed lower layers (:mod:`.lowers`). If it meets
      such a link before they are all committed, the attempt is abandoned (staging removed, store locks
      released), the thread waits for the lower layers without holding any lock, and the layer is pulled
      again (its blob is read once more). A layer whose content came to depend on its parents is committed
      under its chain ID (see ``Store.acquire_layer``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cocoguest.digest import Digest, Readable, VerifyingReader
from cocoguest.errors import ProtocolError, VerificationError
from cocoguest.image.fs.lower_view import LowerLayersPendingError
from cocoguest.image.fs.unpack import unpack_layer
from cocoguest.image.fs.whiteouts import WhiteoutFormat
from cocoguest.image.layer.lowers import LowerLayers
from cocoguest.image.layer.parallel import raise_if_cancelled
from cocoguest.image.layer.provenance import blob_source
from cocoguest.image.layer.readers import (
    DecryptingReader,
    HashingReader,
    RatioGuard,
    decompressing_reader,
    drain,
)
from cocoguest.image.store import LayerRecord, Store
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor
from cocoguest.oci.source import ImageSource
from cocoguest.ocicrypt.layer import UnwrappedKey
from cocoguest.ocicrypt.options import PublicOptions


@dataclass(frozen=True)
class LayerJob:
    """One layer to pull: its manifest descriptor, expected diff_id, and for encrypted layers the unwrapped key."""

    index: int
    descriptor: Descriptor
    diff_id: Digest
    key: UnwrappedKey | None = None
    public: PublicOptions | None = None
    chain_id: Digest | None = None
    """The layer's chain ID (see :func:`~cocoguest.image.layer.lowers.chain_ids`); None for no store key by chain."""

    @property
    def what(self) -> str:
        """How messages name this layer."""
        return f"layer {self.index} ({self.descriptor.digest})"


@dataclass(frozen=True)
class LayerOutcome:
    """What happened to one layer."""

    job: LayerJob
    record: LayerRecord
    downloaded: bool
    compressed_bytes: int


class _CountingReader:
    def __init__(self, source: Readable, progress: Callable[[int], None] | None, cancel: threading.Event) -> None:
        self._source = source
        self._progress = progress
        self._cancel = cancel
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        raise_if_cancelled(self._cancel)
        data = self._source.read(n)
        self.count += len(data)
        if self._progress is not None and data:
            self._progress(self.count)
        return data


def pull_layer(
    source: ImageSource,
    job: LayerJob,
    store: Store,
    *,
    image: str,
    whiteouts: WhiteoutFormat,
    cancel: threading.Event,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
    lowers: LowerLayers | None = None,
) -> LayerOutcome:
    """Make the layer available in the store (see the module docstring).

    ``lowers``: this pull's lower-layer hand-off; this layer is published to it once committed. Without it a
    cross-layer hardlink is refused.

    Raises:
        VerificationError: digest, size, HMAC or diff_id mismatch; an unsafe archive.
        ProtocolError, TransportError, UnsupportedError: the source or the data is broken.
    """
    provider = None if lowers is None else lowers.provider(job.index)
    try:
        outcome = _pull_once(source, job, store, image, whiteouts, cancel, limits, progress, provider)
    except LowerLayersPendingError:
        if lowers is None:  # pragma: no cover - defensive: only the provider raises it
            raise
        # SECURITY (no deadlock): the attempt's store slot and locks are released; wait holding nothing.
        lowers.wait_below(job.index, cancel)
        outcome = _pull_once(source, job, store, image, whiteouts, cancel, limits, progress, provider)
    if lowers is not None:
        lowers.committed(job.index, outcome.record.path)
    return outcome


def _pull_once(
    source: ImageSource,
    job: LayerJob,
    store: Store,
    image: str,
    whiteouts: WhiteoutFormat,
    cancel: threading.Event,
    limits: Limits,
    progress: Callable[[int], None] | None,
    provider: Callable[[], Sequence[Path]] | None,
) -> LayerOutcome:
    desc = job.descriptor
    what = f"{image}: {job.what}"
    # SECURITY: the store hands out a committed layer only for a source it verified itself.
    with store.acquire_layer(job.diff_id, blob_source(desc, job.key, job.public), chain_id=job.chain_id) as slot:
        if slot.existing is not None:
            return LayerOutcome(job, slot.existing, downloaded=False, compressed_bytes=0)
        assert slot.staging is not None  # noqa: S101  (the store's contract: staging iff not existing)
        with source.open_blob(desc) as untrusted_blob:
            counting = _CountingReader(untrusted_blob, progress, cancel)
            # (5a) compressed digest and exact size, checked at EOF
            verified = VerifyingReader(counting, desc.digest, desc.size, what)
            stream: Readable = verified
            media_type = desc.media_type
            if media_types.is_encrypted(media_type):
                if job.key is None or job.public is None:  # pragma: no cover - defensive: the orchestrator unwraps
                    msg = f"{what}: encrypted layer without an unwrapped key"
                    raise ValueError(msg)
                # (5b) decrypt; the HMAC is checked at EOF of the ciphertext
                stream = DecryptingReader(stream, job.key.options.symkey, job.key.options.nonce, job.public.hmac, what)
                media_type = media_types.decrypted_type(media_type)
            # (5c) decompress, (5d) hash the tar stream for the diff_id
            decompressed = RatioGuard(
                decompressing_reader(stream, media_type, what, limits), lambda: verified.bytes_read, what, limits
            )
            tar_stream = HashingReader(decompressed, job.diff_id, what)
            try:
                # (5e) unpack into the private staging dir
                stats = unpack_layer(
                    tar_stream.as_binary_io(),
                    slot.staging,
                    what=what,
                    whiteouts=whiteouts,
                    limits=limits,
                    lowers=provider,
                )
                # (5f) drain: every end-of-stream check (size, digest, HMAC, decompressor) fires now
                drain(tar_stream, limits.stream_chunk_bytes)
            except ProtocolError as e:
                # Corrupt data is most often wrong bytes from the source: if the blob does not match its
                # digest, say that (the root cause) rather than what the decompressor or tar reader saw.
                try:
                    drain(verified, limits.stream_chunk_bytes)
                except VerificationError as mismatch:
                    raise mismatch from e
                raise
            # (5g) the uncompressed stream must be what the (policy-checked) config promises
            tar_stream.verify()
        # records the verified source too; a layer that copied lower files up is keyed by its chain ID
        record = slot.commit(tar_stream.size, parent_dependent=stats.copied_up > 0)
    return LayerOutcome(job, record, downloaded=True, compressed_bytes=counting.count)
