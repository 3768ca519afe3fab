"""The one OCI image-layout builder: small images from directory trees or layer tars (demo, tests, bench).

Host-side tooling, not part of the pull: it writes only under the layout directory it is given, from
trusted input (files of the repository, tars a test made).

Invariants:
    * Deterministic: tar entries sorted, mtimes 0, owners 0/0 with empty names, modes normalised (0755 for
      directories and executables, 0644 otherwise), gzip header without a timestamp, compact JSON in
      containers/image's field order (so a manifest that ``cocoguest copy`` encrypts and decrypts again gets
      its original digest back). The same arguments give byte-identical blobs and digests.
    * The config's ``rootfs.diff_ids`` are the sha256 of the uncompressed tars, in layer order; the layer
      descriptors carry the digest and size of the blobs actually written.
    * ``index.json`` gains (or, for a ``ref`` already there, replaces) one entry; other images stay.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import zstandard

from cocoguest.oci import media_types
from cocoguest.oci.annotations import REF_NAME

Compression = Literal["gzip", "zstd", "none"]

LAYER_MEDIA_TYPES: Final[Mapping[str, str]] = {
    "gzip": media_types.OCI_LAYER_GZIP,
    "zstd": media_types.OCI_LAYER_ZSTD,
    "none": media_types.OCI_LAYER,
}
"""The layer media type of each compression."""

DEFAULT_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class WrittenImage:
    """What :func:`write_image` wrote (digests as ``sha256:<hex>`` strings)."""

    path: Path
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, compression: Compression) -> bytes:
    """``data`` compressed as a layer blob (gzip without a timestamp)."""
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def dump_json(document: object) -> bytes:
    """The builder's JSON encoding: compact, members in the order given (containers/image's order)."""
    return json.dumps(document, separators=(",", ":")).encode()


def tar_directory(root: Path, extra: Mapping[str, bytes] | None = None) -> bytes:
    """A normalised (see the module invariants) tar of the tree under ``root``, then the ``extra`` files.

    Regular files, directories and symlinks are archived; ``extra`` maps archive names to file contents.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_symlink():
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(info)
            elif path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                tar.addfile(info, io.BytesIO(data))
        for name, data in sorted((extra or {}).items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_blob(layout: Path, data: bytes) -> str:
    """Store ``data`` under ``layout/blobs/sha256/``; returns its digest."""
    digest = sha256_digest(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def write_image(
    layout: Path,
    layers: Sequence[bytes],
    *,
    ref: str = "latest",
    compression: Compression = "gzip",
    config: Mapping[str, object] | None = None,
    architecture: str = "amd64",
    os_name: str = "linux",
    layer_annotations: Sequence[Mapping[str, str] | None] = (),
    manifest_annotations: Mapping[str, str] | None = None,
) -> WrittenImage:
    """Write one image with ``layers`` (uncompressed tars, bottom first) into the OCI layout ``layout``.

    Args:
        layout: the layout directory (created if missing; an existing layout gains one more image).
        layers: uncompressed layer tars, bottom first.
        ref: the ``org.opencontainers.image.ref.name`` of the manifest in ``index.json``.
        compression: how every layer blob is compressed.
        config: the image config's ``config`` object (Env, Cmd, User, ...); default: a standard ``PATH``.
        architecture: config and index platform architecture.
        os_name: config and index platform OS.
        layer_annotations: annotations of layer ``i`` (``None`` or missing: none).
        manifest_annotations: manifest annotations.
    """
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_bytes(dump_json({"imageLayoutVersion": media_types.OCI_LAYOUT_VERSION}))
    diff_ids = tuple(sha256_digest(layer) for layer in layers)
    descriptors: list[dict[str, object]] = []
    for i, layer in enumerate(layers):
        blob = compress(layer, compression)
        descriptor: dict[str, object] = {
            "mediaType": LAYER_MEDIA_TYPES[compression],
            "digest": write_blob(layout, blob),
            "size": len(blob),
        }
        annotations = layer_annotations[i] if i < len(layer_annotations) else None
        if annotations:
            descriptor["annotations"] = dict(annotations)
        descriptors.append(descriptor)
    config_document = {
        "architecture": architecture,
        "os": os_name,
        "config": dict(config) if config is not None else {"Env": [DEFAULT_ENV]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_bytes = dump_json(config_document)
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": {
            "mediaType": media_types.OCI_CONFIG,
            "digest": write_blob(layout, config_bytes),
            "size": len(config_bytes),
        },
        "layers": descriptors,
    }
    if manifest_annotations:
        manifest["annotations"] = dict(manifest_annotations)
    manifest_bytes = dump_json(manifest)
    manifest_digest = write_blob(layout, manifest_bytes)
    _add_to_index(
        layout,
        {
            "mediaType": media_types.OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {REF_NAME: ref},
            "platform": {"architecture": architecture, "os": os_name},
        },
        ref,
    )
    return WrittenImage(
        path=layout,
        manifest_digest=manifest_digest,
        config_digest=sha256_digest(config_bytes),
        layer_digests=tuple(str(d["digest"]) for d in descriptors),
        diff_ids=diff_ids,
    )


def _add_to_index(layout: Path, entry: dict[str, object], ref: str) -> None:
    """Point ``ref`` in ``index.json`` at ``entry`` (replacing an entry of that ref, keeping the others)."""
    index_path = layout / "index.json"
    manifests: list[dict[str, object]] = []
    if index_path.exists():
        existing = json.loads(index_path.read_bytes())  # a layout this builder (or a test) wrote
        manifests = [m for m in existing["manifests"] if m.get("annotations", {}).get(REF_NAME) != ref]
    manifests.append(entry)
    index_path.write_bytes(dump_json({"schemaVersion": 2, "mediaType": media_types.OCI_INDEX, "manifests": manifests}))


def build_layout(
    layout: Path,
    layer_trees: Sequence[Path],
    ref: str = "latest",
    *,
    architecture: str = "amd64",
    extra_layer_annotations: Mapping[str, str] | None = None,
) -> str:
    """Write an image with one gzip layer per directory tree (the demo's images); returns the manifest digest."""
    written = write_image(
        layout,
        [tar_directory(tree) for tree in layer_trees],
        ref=ref,
        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        architecture=architecture,
        layer_annotations=[extra_layer_annotations] * len(layer_trees),
    )
    return written.manifest_digest
