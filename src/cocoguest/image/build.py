"""Build a small OCI image layout from directory trees (one gzip layer per tree).

Used by the demo, the tests and the benchmarks to make images from files in the repository. Output is
deterministic: entries sorted, mtimes and ownership normalised, gzip header without a timestamp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

from cocoguest.oci import media_types
from cocoguest.oci.annotations import REF_NAME

_EPOCH = 0


def _tar_tree(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = _EPOCH
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def build_layout(
    layout: Path,
    layer_trees: Sequence[Path],
    ref: str = "latest",
    *,
    architecture: str = "amd64",
    extra_layer_annotations: dict[str, str] | None = None,
) -> str:
    """Write an OCI layout at ``layout`` with one gzip layer per tree; returns the manifest digest."""
    layers = []
    diff_ids = []
    for tree in layer_trees:
        tar_bytes = _tar_tree(tree)
        diff_ids.append(f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}")
        blob = gzip.compress(tar_bytes, mtime=0)
        descriptor: dict[str, object] = {
            "mediaType": media_types.OCI_LAYER_GZIP,
            "digest": _write_blob(layout, blob),
            "size": len(blob),
        }
        if extra_layer_annotations:
            descriptor["annotations"] = dict(extra_layer_annotations)
        layers.append(descriptor)
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": {
            "mediaType": media_types.OCI_CONFIG,
            "digest": _write_blob(layout, config_bytes),
            "size": len(config_bytes),
        },
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = _write_blob(layout, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_INDEX,
        "manifests": [
            {
                "mediaType": media_types.OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {REF_NAME: ref},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": media_types.OCI_LAYOUT_VERSION}))
    return manifest_digest
