"""Fixtures for end-to-end pulls: images built from files in the repo, the CLI run in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.cli.main import main
from cocoguest.image.bundle.rootfs import unmount
from tests.fixtures.layers import TarBuilder
from tests.fixtures.oci_images import WrittenImage, write_image_layout


def run(*args: str) -> int:
    """The CLI in process; returns the exit status."""
    return main(list(args))


def base_layer() -> bytes:
    return (
        TarBuilder()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        .file("etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
        .dir("bin")
        .file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o4755)
        .dir("data")
        .file("data/old.txt", b"old\n")
        .file("data/keep.txt", b"keep\n")
        .dir("opaque")
        .file("opaque/lower.txt", b"lower\n")
        .symlink("bin/sh-link", "tool")
        .build()
    )


def top_layer() -> bytes:
    return (
        TarBuilder()
        .whiteout("data/old.txt")
        .opaque("opaque")
        .file("opaque/upper.txt", b"upper\n")
        .file("data/new.txt", b"new\n")
        .hardlink("data/new-link.txt", "data/new.txt")
        .build()
    )


@pytest.fixture
def image(tmp_path: Path) -> WrittenImage:
    """A 2-layer gzip image with a whiteout, an opaque dir, a hardlink, a symlink and a setuid file."""
    return write_image_layout(
        tmp_path / "image",
        [base_layer(), top_layer()],
        config_extra={"Entrypoint": ["/bin/tool"], "Cmd": ["--help"], "User": "app", "WorkingDir": "/data"},
    )


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def read_config(bundle: Path) -> dict[str, object]:
    return json.loads((bundle / "config.json").read_text())  # type: ignore[no-any-return]


def store_layer_dirs(work_dir: Path) -> list[Path]:
    root = work_dir / "layers" / "sha256"
    return sorted(root.iterdir()) if root.is_dir() else []


@pytest.fixture(autouse=True)
def _unmount_leftover_bundles(tmp_path: Path) -> Iterator[None]:
    """A test that pulls with the overlay snapshotter must unmount; this catches any it forgot."""
    yield
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "overlay" and fields[1].startswith(str(tmp_path)):
            unmount(Path(fields[1].replace("\\040", " ")))
