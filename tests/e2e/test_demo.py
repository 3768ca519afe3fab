"""``make demo`` (scripts/demo.py) runs to success on this machine and leaves nothing behind.

Checks the key flow's output, the workload's secret fetched with curl through api-server-rest (CDH -> AA token ->
dev KBS), and that the three guest service processes the demo started (their pids are printed) are gone and the
temporary directory removed afterwards.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo.py"
# name -> (console script, module): the demo starts either form.
SERVICES = {
    "attestation-agent": (b"attestation-agent", b"cocoguest.cli.attestation_agent"),
    "confidential-data-hub": (b"confidential-data-hub", b"cocoguest.cli.cdh_server"),
    "api-server-rest": (b"api-server-rest", b"cocoguest.cli.api_server_rest"),
}


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` is still a process whose command line names ``name`` (a reused pid does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(marker in cmdline for marker in SERVICES[name])


def test_demo_succeeds_and_cleans_up() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo succeeded" in result.stdout
    for fragment in ("dev KBS", "coco-keyprovider", "guest pull", "etc/motd: Welcome"):
        assert fragment in result.stdout

    # The secret the demo stored in the KBS came back through curl -> api-server-rest -> CDH -> KBS.
    secret = re.search(r'^SECRET = b"(.*)"$', SCRIPT.read_text(), re.MULTILINE)
    assert secret is not None
    assert f"   secret: {secret.group(1)}\n" in result.stdout
    assert "$ curl -s" in result.stdout or "curl is not installed" in result.stdout
    assert re.search(r"^   token: eyJ\S+\.\.\.\S+ \(\d+ chars\)$", result.stdout, re.MULTILINE)

    for name in SERVICES:
        match = re.search(rf"^   {name} \(pid (\d+)\) answering on ", result.stdout, re.MULTILINE)
        assert match is not None, f"{name} was not started"
        assert not _alive(int(match.group(1)), name), f"{name} (pid {match.group(1)}) is still running"

    temp = Path(result.stdout.split("--work-dir ", 1)[1].split("/store", 1)[0])
    assert not temp.exists()
