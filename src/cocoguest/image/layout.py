"""OCI image layouts on disk: an untrusted source, and a destination that appears atomically.

References: ``oci:PATH[:REF]`` where REF matches the ``org.opencontainers.image.ref.name`` annotation of a
manifest in ``index.json`` (skopeo's rule; without REF the layout must hold exactly one image).

Invariants:
    * Source: every JSON document is size-capped; manifests are read by digest and verified; blob readers are
      wrapped by the consumer in a :class:`~cocoguest.digest.VerifyingReader`. Blob paths come only from
      validated :class:`Digest` values, so a descriptor cannot name a path outside ``blobs/``.
    * Destination: all writes go to a staging directory beside the target. :meth:`commit` moves new blobs
      into place and replaces ``index.json`` last, with a rename. Before commit nothing of the target is
      touched; :meth:`abort` (also on context exit with an exception) removes the staging directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, DigestMismatchError, ProtocolError, ResourceNotFoundError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.annotations import REF_NAME
from cocoguest.oci.descriptor import Descriptor, ImageIndex, dump_json
from cocoguest.oci.image_name import LayoutImageName

_LAYOUT_FILE = "oci-layout"
_INDEX_FILE = "index.json"


def blob_path(root: Path, digest: Digest) -> Path:
    """Where a blob lives in a layout (safe: the digest is validated hex)."""
    return root / "blobs" / digest.algorithm / digest.hex


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except FileNotFoundError as e:
        msg = f"{what}: {path} does not exist"
        raise ResourceNotFoundError(msg) from e
    except OSError as e:
        msg = f"{what}: cannot read {path}: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > cap:
        msg = f"{what}: {path} is larger than the {cap}-byte limit"
        raise ProtocolError(msg)
    return data


class OciLayoutSource:
    """Reads one image from an OCI layout. Its content is untrusted until verified."""

    def __init__(self, reference: LayoutImageName, limits: Limits = DEFAULT_LIMITS) -> None:
        self.reference = reference
        self.root = reference.path
        self._limits = limits
        if not (self.root / _LAYOUT_FILE).is_file():
            msg = f"{reference}: not an OCI image layout (no {_LAYOUT_FILE} file in {self.root})"
            raise ResourceNotFoundError(msg)
        layout = _read_capped(self.root / _LAYOUT_FILE, limits.max_index_json_bytes, str(reference))
        version = load_object(layout, f"{reference}: {_LAYOUT_FILE}").get("imageLayoutVersion")
        if not isinstance(version, str) or not version.startswith("1."):
            msg = f"{reference}: unsupported imageLayoutVersion {version!r}"
            raise ProtocolError(msg)

    def index(self) -> ImageIndex:
        """The layout's ``index.json``."""
        what = f"{self.reference}: {_INDEX_FILE}"
        data = _read_capped(self.root / _INDEX_FILE, self._limits.max_index_json_bytes, what)
        try:
            return ImageIndex.from_bytes(data, what)
        except ValueError as e:
            raise ProtocolError(str(e)) from e

    def manifest_descriptor(self) -> Descriptor:
        """The descriptor the reference selects.

        Raises:
            ResourceNotFoundError: no manifest with that ref name, or no REF and several images.
        """
        manifests = self.index().manifests
        ref = self.reference.ref
        if ref is None:
            if len(manifests) != 1:
                msg = f"{self.reference}: the layout holds {len(manifests)} images; name one as oci:PATH:REF"
                raise ResourceNotFoundError(msg)
            return manifests[0]
        matches = [m for m in manifests if m.annotations.get(REF_NAME) == ref]
        if not matches:
            names = sorted({m.annotations[REF_NAME] for m in manifests if REF_NAME in m.annotations})
            msg = f"{self.reference}: no image named {ref!r} in the layout (names: {', '.join(names) or 'none'})"
            raise ResourceNotFoundError(msg)
        return matches[0]

    def read_verified(self, desc: Descriptor, cap: int, what: str) -> bytes:
        """Read a small blob (manifest, config) fully and verify its digest and size.

        Raises:
            ProtocolError: larger than ``cap``.
            VerificationError: digest or size mismatch.
        """
        if desc.size > cap:
            msg = f"{what}: {desc.size} bytes is over the {cap}-byte limit"
            raise ProtocolError(msg)
        data = _read_capped(blob_path(self.root, desc.digest), cap, what)
        actual = Digest.of_bytes(data, desc.digest.algorithm)
        if actual != desc.digest or len(data) != desc.size:
            msg = f"{what}: content has digest {actual} ({len(data)} bytes), expected {desc.digest} ({desc.size})"
            raise DigestMismatchError(msg)
        return data

    def open_blob(self, digest: Digest) -> BinaryIO:
        """Open a blob for streaming; the caller verifies it.

        Raises:
            ResourceNotFoundError: the blob is missing.
        """
        path = blob_path(self.root, digest)
        try:
            return path.open("rb")
        except FileNotFoundError as e:
            msg = f"{self.reference}: blob {digest} is missing"
            raise ResourceNotFoundError(msg) from e


class OciLayoutDestination:
    """Writes one image into an OCI layout, atomically: see the module invariants."""

    def __init__(self, reference: LayoutImageName) -> None:
        self.reference = reference
        self.root = reference.path
        parent = self.root.absolute().parent
        if not parent.is_dir():
            msg = f"{reference}: parent directory {parent} does not exist"
            raise ConfigError(msg)
        is_layout = (self.root / _LAYOUT_FILE).is_file()
        if self.root.exists() and not is_layout and (not self.root.is_dir() or any(self.root.iterdir())):
            msg = f"{reference}: {self.root} exists and is not an OCI image layout"
            raise ConfigError(msg)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".partial", dir=parent))
        (self._staging / "blobs").mkdir()
        self._committed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self.abort()

    def has_blob(self, digest: Digest) -> bool:
        """True if the blob is already staged or in the target layout."""
        return blob_path(self._staging, digest).exists() or blob_path(self.root, digest).exists()

    @contextlib.contextmanager
    def blob_writer(self) -> Iterator[tuple[BinaryIO, StagedBlob]]:
        """A temporary file in the staging area; name it with :meth:`StagedBlob.store` once its digest is known."""
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self._staging)
        staged = StagedBlob(Path(name), self._staging)
        with os.fdopen(fd, "wb") as f:
            yield f, staged
        if not staged.stored:
            Path(name).unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> Digest:
        """Stage a small blob (manifest, config)."""
        digest = Digest.of_bytes(data)
        path = blob_path(self._staging, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return digest

    def commit(self, manifest: Descriptor) -> None:
        """Make the staged image visible under the reference's name; replaces an image of the same name."""
        desc = manifest
        if self.reference.ref is not None:
            desc = manifest.with_changes(annotations={**manifest.annotations, REF_NAME: self.reference.ref})
        if not (self.root / _LAYOUT_FILE).is_file():
            self._write_new_layout(desc)
        else:
            self._merge_into_existing(desc)
        self._committed = True

    def _write_new_layout(self, desc: Descriptor) -> None:
        index = ImageIndex(media_types.OCI_INDEX, (desc,))
        (self._staging / _INDEX_FILE).write_bytes(dump_json(index.to_json()))
        (self._staging / _LAYOUT_FILE).write_bytes(dump_json({"imageLayoutVersion": media_types.OCI_LAYOUT_VERSION}))
        if self.root.is_dir():
            self.root.rmdir()  # checked empty in __init__
        os.rename(self._staging, self.root)

    def _merge_into_existing(self, desc: Descriptor) -> None:
        old = OciLayoutSource(LayoutImageName(self.root, None)).index()
        ref = desc.annotations.get(REF_NAME)
        kept = tuple(m for m in old.manifests if not (ref is not None and m.annotations.get(REF_NAME) == ref))
        index = ImageIndex(old.media_type or media_types.OCI_INDEX, (*kept, desc), old.annotations, old.extra)
        for algorithm_dir in (self._staging / "blobs").iterdir():
            target_dir = self.root / "blobs" / algorithm_dir.name
            target_dir.mkdir(parents=True, exist_ok=True)
            for blob in algorithm_dir.iterdir():
                if not (target_dir / blob.name).exists():
                    os.rename(blob, target_dir / blob.name)
        tmp_index = self._staging / _INDEX_FILE
        tmp_index.write_bytes(dump_json(index.to_json()))
        os.replace(tmp_index, self.root / _INDEX_FILE)
        shutil.rmtree(self._staging, ignore_errors=True)

    def abort(self) -> None:
        """Discard everything staged."""
        shutil.rmtree(self._staging, ignore_errors=True)


class StagedBlob:
    """A blob being written to the staging area."""

    def __init__(self, path: Path, staging: Path) -> None:
        self._path = path
        self._staging = staging
        self.stored = False

    def store(self, digest: Digest) -> None:
        """Move the finished, verified file to its content address."""
        target = blob_path(self._staging, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)
        self.stored = True


class OciLayoutImageSource:
    """An OCI layout as an :class:`~cocoguest.oci.source.ImageSource` (for ``pull oci:...``)."""

    def __init__(self, reference: LayoutImageName, limits: Limits = DEFAULT_LIMITS) -> None:
        self._layout = OciLayoutSource(reference, limits)
        self._limits = limits

    def describe(self) -> str:
        """``oci:PATH[:REF]``."""
        return str(self._layout.reference)

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        """The manifest the reference names (verified against index.json), or the one with ``digest``."""
        if digest is None:
            desc = self._layout.manifest_descriptor()
            what = f"{self.describe()}: manifest {desc.digest}"
            return self._layout.read_verified(desc, self._limits.max_manifest_bytes, what), desc.media_type
        path = blob_path(self._layout.root, digest)
        return _read_capped(path, self._limits.max_manifest_bytes, f"{self.describe()}: manifest {digest}"), None

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """The blob file (unverified)."""
        return self._layout.open_blob(desc.digest)

    def close(self) -> None:
        """Nothing to release."""
