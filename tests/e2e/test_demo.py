"""``make demo`` (scripts/demo.py) runs to success on this machine and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_succeeds_and_cleans_up() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo succeeded" in result.stdout
    for fragment in ("dev KBS", "coco-keyprovider", "guest pull", "etc/motd: Welcome"):
        assert fragment in result.stdout
    temp = Path(result.stdout.split("--work-dir ", 1)[1].split("/store", 1)[0])
    assert not temp.exists()
