"""A real loop device for the secure-mount tests (root and losetup, else skipped with the reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for losetup"
    for tool in ("cryptsetup", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run scripts/install-peers.sh)"
    return None


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    attach = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False)
    if attach.returncode != 0:
        pytest.skip(f"no loop device available: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
