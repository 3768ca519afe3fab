"""Where ``cocoguest copy`` writes: an OCI layout (``oci:``) or a registry repository (``docker://``).

Both kinds sit behind :class:`ImageDestination`. The copy orchestrator (:mod:`cocoguest.image.copy`) stores
blobs first (unchanged ones with :meth:`ImageDestination.put_blob`, transformed ones through
:meth:`ImageDestination.blob_writer`) and the manifest last (:meth:`ImageDestination.commit`).

Invariants:
    * Nothing unverified is stored. :meth:`~ImageDestination.put_blob` reads the caller's verifying reader to
      its end before the blob gets its name (layout: rename; registry: the closing ``PUT ?digest=``, which the
      registry also checks). A :class:`BlobSink` is stored only after the transformation that filled it has
      verified its input (and, when decrypting, the HMAC): nothing is uploaded before :meth:`BlobSink.store`.
    * Manifest last. OCI layout: everything is staged and :meth:`~ImageDestination.commit` makes the image
      visible atomically; a failure leaves the target layout as it was. Registry: blobs are uploaded while the
      copy runs and the manifest is PUT last, so a failure leaves no tag (or digest) pointing at a partial
      image and an existing tag keeps naming its old image; the blobs already uploaded stay unreferenced in the
      repository until the registry's garbage collection (they cannot be removed reliably: deleting blobs is
      often disabled and they may be shared with other images).
    * Bounded memory: a transformed blob bound for a registry (its digest is known only at the end, but the
      upload needs it first) is staged in a temporary file in a private directory (mode 0700, files 0600)
      under ``RegistryAccess.tmp_dir``; the file is removed once uploaded, and the directory on
      :meth:`~ImageDestination.abort`, :meth:`~ImageDestination.commit` and :meth:`~ImageDestination.close`.
    * Credentials given explicitly (``--dest-creds``) win over auth files; TLS material comes from a flat
      ``--cert-dir`` or from certs.d directories; an endpoint is insecure (no certificate verification, plain
      HTTP fallback) only by ``--dest-tls-verify=false`` or registries.conf ``insecure = true``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from cocoguest.digest import Digest, Readable
from cocoguest.errors import ConfigError
from cocoguest.image.layout import OciLayoutDestination, StagedBlob
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor
from cocoguest.oci.image_name import LayoutImageName
from cocoguest.oci.reference import ImageReference, ImageReferenceError
from cocoguest.registry.access import RegistryAccess
from cocoguest.registry.config.registries_conf import RegistryBlockedError
from cocoguest.registry.docker import DockerDestination
from cocoguest.registry.http import DEFAULT_RETRY, RetryPolicy, retry_call
from cocoguest.registry.types import RegistryEndpoint

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_logger = logging.getLogger(__name__)

ReaderFactory = Callable[[], AbstractContextManager[Readable]]
"""Opens the source of a blob as a verifying reader; called again when an upload is retried."""


class BlobSink(Protocol):
    """A blob being written whose digest is known only when it is complete (encryption, decryption)."""

    @property
    def file(self) -> BinaryIO:
        """Where to write the blob's bytes."""
        ...

    def store(self, digest: Digest) -> None:
        """Give the finished, verified blob its name (layout) or upload it (registry).

        Raises:
            TransportError: the upload failed.
        """
        ...


class ImageDestination(Protocol):
    """Where one image is written; see the module invariants for the commit semantics."""

    def describe(self) -> str:
        """How messages name the destination (``oci:/path:ref``, ``docker://host/repo:tag``)."""
        ...

    def supports_manifest_type(self, media_type: str) -> bool:
        """Whether a manifest of ``media_type`` can be written as is (otherwise the copy converts it to OCI)."""
        ...

    def has_blob(self, digest: Digest) -> bool:
        """Whether the destination already holds the blob (so that it need not be written).

        Raises:
            TransportError: the registry could not be asked.
        """
        ...

    def put_blob(self, desc: Descriptor, open_reader: ReaderFactory) -> None:
        """Store a blob whose digest and size are known, streaming it from ``open_reader()``.

        The reader verifies the bytes against ``desc`` as they are read (it raises at its end otherwise); the
        destination reads it to its end before the blob gets its name.

        Raises:
            VerificationError: from the reader.
            TransportError: the upload failed (after retries).
        """
        ...

    def blob_writer(self) -> AbstractContextManager[BlobSink]:
        """A sink for a blob whose digest is known only at the end; discarded unless stored.

        Raises:
            TransportError: :meth:`BlobSink.store` failed to upload.
        """
        ...

    def put_small_blob(self, data: bytes) -> Digest:
        """Store a small blob (the config) given in memory; returns its sha256 digest.

        Raises:
            TransportError: the upload failed.
        """
        ...

    def commit(self, manifest: bytes, media_type: str) -> Descriptor:
        """Write the manifest, last, and make the image visible under the destination's name.

        Raises:
            ConfigError: the destination names a digest that is not the manifest's.
            TransportError, ProtocolError: the registry refused or mangled the manifest.
        """
        ...

    def abort(self) -> None:
        """Discard what was staged (idempotent); see the module invariants for what remains in a registry."""
        ...

    def close(self) -> None:
        """Release files and connections; aborts if :meth:`commit` did not succeed."""
        ...


class _ReaderStream(io.RawIOBase):
    """A non-seekable binary stream over a :class:`Readable` (an upload body)."""

    def __init__(self, reader: Readable) -> None:
        super().__init__()
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        return self._reader.read(-1 if size is None else size)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._reader.read(len(view))
        view[: len(data)] = data
        return len(data)


# --- OCI layout ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OciSink:
    file: BinaryIO
    staged: StagedBlob

    def store(self, digest: Digest) -> None:
        self.file.flush()
        self.staged.store(digest)


class OciDestination:
    """An OCI layout as an :class:`ImageDestination`: staged, committed atomically (:class:`OciLayoutDestination`)."""

    def __init__(self, reference: LayoutImageName, limits: Limits = DEFAULT_LIMITS) -> None:
        """Prepare the staging directory beside the layout.

        Raises:
            ConfigError: the parent directory is missing, or the target exists and is not a layout.
        """
        self._layout = OciLayoutDestination(reference)
        self._limits = limits
        self._committed = False

    def describe(self) -> str:
        """``oci:PATH[:REF]``."""
        return str(self._layout.reference)

    def supports_manifest_type(self, media_type: str) -> bool:
        """Only OCI manifests (as skopeo's ``oci:`` transport: Docker manifests are converted)."""
        return media_type == media_types.OCI_MANIFEST

    def has_blob(self, digest: Digest) -> bool:
        """Staged already, or present in the target layout."""
        return self._layout.has_blob(digest)

    def put_blob(self, desc: Descriptor, open_reader: ReaderFactory) -> None:
        """Stream the verified blob into the staging area; it is named only after the reader's final check."""
        chunk = self._limits.stream_chunk_bytes
        with open_reader() as reader, self._layout.blob_writer() as (dst, staged):
            while data := reader.read(chunk):
                dst.write(data)
            dst.flush()
            staged.store(desc.digest)

    @contextlib.contextmanager
    def blob_writer(self) -> Iterator[BlobSink]:
        """A staging file; named on :meth:`BlobSink.store`, removed otherwise."""
        with self._layout.blob_writer() as (dst, staged):
            yield _OciSink(dst, staged)

    def put_small_blob(self, data: bytes) -> Digest:
        """Stage a small blob."""
        return self._layout.put_bytes(data)

    def commit(self, manifest: bytes, media_type: str) -> Descriptor:
        """Stage the manifest and replace ``index.json`` (atomic rename)."""
        digest = self._layout.put_bytes(manifest)
        desc = Descriptor(media_type, digest, len(manifest))
        self._layout.commit(desc)
        self._committed = True
        return desc

    def abort(self) -> None:
        """Remove the staging directory."""
        self._layout.abort()

    def close(self) -> None:
        """Abort unless committed."""
        if not self._committed:
            self._layout.abort()


# --- registry -----------------------------------------------------------------------------------------


class _RegistrySink:
    """A staged upload: a private temporary file, uploaded (seekable, so retried) on :meth:`store`."""

    def __init__(self, file: BinaryIO, owner: RegistryDestination) -> None:
        self._file = file
        self._owner = owner

    @property
    def file(self) -> BinaryIO:
        return self._file

    def store(self, digest: Digest) -> None:
        self._file.flush()
        size = self._file.tell()
        self._file.seek(0)
        self._owner.upload_staged(self._file, digest, size)


class RegistryDestination:
    """A registry repository as an :class:`ImageDestination`: blobs uploaded as they come, manifest PUT last."""

    def __init__(
        self, remote: DockerDestination, *, tmp_dir: Path | None = None, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        """Wrap ``remote`` and create the private staging directory under ``tmp_dir``.

        Raises:
            ConfigError: the staging directory cannot be created.
        """
        self._remote = remote
        self._retry = retry
        self._known: set[Digest] = set()
        self._lock = threading.Lock()
        try:
            # SECURITY: mkdtemp gives 0700 and mkstemp 0600: staged plaintext (decryption) is private to us.
            self._staging: Path | None = Path(tempfile.mkdtemp(prefix="cocoguest-push-", dir=tmp_dir))
        except OSError as e:
            where = tmp_dir or tempfile.gettempdir()
            msg = f"{remote.describe()}: cannot create a staging directory in {where}: {e.strerror}"
            raise ConfigError(msg) from e

    @property
    def reference(self) -> ImageReference:
        """The destination reference."""
        return self._remote.reference

    def describe(self) -> str:
        """``docker://host/repo:tag``."""
        return self._remote.describe()

    def supports_manifest_type(self, media_type: str) -> bool:
        """OCI manifests and Docker schema2 manifests."""
        return media_type in {media_types.OCI_MANIFEST, media_types.DOCKER_MANIFEST}

    def has_blob(self, digest: Digest) -> bool:
        """Uploaded by us already, or known to the repository (``HEAD``)."""
        with self._lock:
            if digest in self._known:
                return True
        found = self._remote.has_blob(digest)
        if found:
            self._mark(digest)
        return found

    def _mark(self, digest: Digest) -> None:
        with self._lock:
            self._known.add(digest)

    def put_blob(self, desc: Descriptor, open_reader: ReaderFactory) -> None:
        """Stream the blob from the (verifying) reader straight into an upload; retried from a fresh reader.

        The registry names the blob only on the closing ``PUT ?digest=``, which is sent after the reader's
        final check; an unverified upload is never completed.
        """

        def attempt() -> None:
            with open_reader() as reader:
                self._remote.put_blob(cast(BinaryIO, _ReaderStream(reader)), desc.digest, desc.size)

        retry_call(attempt, policy=self._retry, what=f"{self.describe()}: blob {desc.digest}")
        self._mark(desc.digest)

    @contextlib.contextmanager
    def blob_writer(self) -> Iterator[BlobSink]:
        """A private temporary file, uploaded on :meth:`BlobSink.store` and removed when the context exits."""
        if self._staging is None:
            msg = f"{self.describe()}: destination already closed"
            raise RuntimeError(msg)
        with tempfile.NamedTemporaryFile(prefix="blob-", dir=self._staging) as file:
            yield _RegistrySink(cast(BinaryIO, file), self)

    def upload_staged(self, file: BinaryIO, digest: Digest, size: int) -> None:
        """Upload a finished staged blob (seekable: the registry client retries it) unless already there."""
        if self.has_blob(digest):
            return
        self._remote.put_blob(file, digest, size)
        self._mark(digest)

    def put_small_blob(self, data: bytes) -> Digest:
        """Upload a small blob unless the repository has it."""
        digest = Digest.of_bytes(data)
        if not self.has_blob(digest):
            self._remote.put_blob(io.BytesIO(data), digest, len(data))
            self._mark(digest)
        return digest

    def commit(self, manifest: bytes, media_type: str) -> Descriptor:
        """PUT the manifest under the tag (or check it against the digest the destination names)."""
        digest = Digest.of_bytes(manifest)
        pinned = self._remote.reference.digest
        if pinned is not None and Digest.of_bytes(manifest, pinned.algorithm) != pinned:
            msg = f"{self.describe()}: the destination names digest {pinned}, the manifest written has {digest}"
            raise ConfigError(msg)
        self._remote.put_manifest(manifest, media_type)
        self._remove_staging()
        return Descriptor(media_type, digest, len(manifest))

    def _remove_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def abort(self) -> None:
        """Remove the staging directory; uploaded blobs stay unreferenced (no manifest names them)."""
        self._remove_staging()

    def close(self) -> None:
        """Remove the staging directory and close connections."""
        self._remove_staging()
        self._remote.close()


def _registry_reference(text: str) -> ImageReference:
    try:
        reference = ImageReference.parse(text.removeprefix("docker://"))
    except ImageReferenceError as e:
        raise ConfigError(str(e)) from e
    if reference.tag is not None and reference.digest is not None:
        # containers/image refuses this too: which of the two would name the manifest written?
        msg = f"destination {text!r}: a tag and a digest together are not supported; give one"
        raise ConfigError(msg)
    return reference


def open_registry_destination(text: str, access: RegistryAccess) -> RegistryDestination:
    """Open ``docker://HOST/REPO[:TAG|@DIGEST]`` for writing (no network access yet).

    registries.conf applies as for containers/image pushes: a blocked namespace is refused and
    ``insecure = true`` holds; mirrors and location remaps are for pulls only.

    Raises:
        ConfigError: a malformed reference, a blocked registry, bad credentials or certificate settings.
    """
    reference = _registry_reference(text)
    rule = access.registries.rule_for(reference)
    if rule is not None and rule.blocked:
        # SECURITY: a blocked namespace is refused for pushes as well.
        msg = f"image {reference}: registry {rule.prefix!r} is blocked by {access.registries.source}"
        raise RegistryBlockedError(msg)
    insecure = not access.tls_verify or (rule is not None and rule.insecure)
    if insecure:
        _logger.warning("destination %s: TLS verification is off (insecure registry)", reference.registry)
    endpoint = RegistryEndpoint(host=reference.api_host, insecure=insecure, tls=access.tls_for(reference.registry))
    remote = DockerDestination(
        reference,
        endpoint,
        access.credentials_for(reference),
        limits=access.limits,
        env=access.env,
        retry=access.retry_policy,
    )
    try:
        return RegistryDestination(remote, tmp_dir=access.tmp_dir, retry=access.retry_policy)
    except BaseException:
        remote.close()
        raise


def open_destination(text: str, access: RegistryAccess) -> ImageDestination:
    """Open ``oci:PATH[:REF]`` or ``docker://HOST/REPO[:TAG|@DIGEST]`` for writing.

    Raises:
        ConfigError: unknown transport, malformed reference, unusable target or settings.
    """
    if text.startswith("oci:"):
        return OciDestination(LayoutImageName.parse(text), access.limits)
    if text.startswith("docker://"):
        return open_registry_destination(text, access)
    transport = text.split(":", 1)[0] if ":" in text else "(none)"
    msg = (
        f"destination {text!r}: transport {transport!r} is not supported by copy "
        "(use oci:PATH[:REF] or docker://HOST/REPO[:TAG])"
    )
    raise ConfigError(msg)
