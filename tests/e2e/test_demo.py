"""``make demo`` (scripts/demo.py) runs to success on this machine and leaves nothing behind.

Checks the key flow's output, the workload's secret fetched with curl through api-server-rest (CDH -> AA token ->
dev KBS), and that the three guest service processes the demo started (their pids are printed) are gone and the
temporary directory removed afterwards.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
    # kata-agent's path: PullImage on the CDH's socket gave a digest and a bundle with the image's motd.
    kata_pull = result.stdout.split("== 11. kata-agent's image pull", 1)
    assert len(kata_pull) == 2, "step 11 (PullImage through the CDH) did not run"
    assert re.search(r"manifest digest sha256:[0-9a-f]{64} ", kata_pull[1])
    assert "etc/motd: Welcome to cocoguest." in kata_pull[1]

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


def _demo_guest() -> ModuleType:
    """scripts/demo_guest.py (not a package) loaded by path, once."""
    if "demo_guest" in sys.modules:
        return sys.modules["demo_guest"]
    spec = importlib.util.spec_from_file_location("demo_guest", ROOT / "scripts" / "demo_guest.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_guest"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_a_service_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    """api-server-rest refuses to start without its backends: the demo's error names it and quotes its log."""
    demo_guest = _demo_guest()
    missing = f"unix://{tmp_path}/missing.sock"
    with (
        pytest.raises(RuntimeError, match=r"api-server-rest did not start \(exited with status 1\)") as caught,
        demo_guest.api_server_rest(tmp_path, 1, missing, missing),
    ):
        pytest.fail("the block must not run")
    assert "error:" in str(caught.value)
    assert "missing.sock" in str(caught.value)


def test_a_started_service_is_stopped_when_its_block_ends(tmp_path: Path) -> None:
    """The AA answers inside the block; after it (even when the block raised) its process is reaped, socket gone."""
    demo_guest = _demo_guest()
    seen: list[subprocess.Popen[bytes]] = []

    def failing_step() -> None:
        with demo_guest.attestation_agent(tmp_path, "http://127.0.0.1:1") as aa:
            seen.append(aa.process)
            assert aa.process.poll() is None
            assert (tmp_path / "aa.sock").exists()
            raise KeyError("the step failed")

    with pytest.raises(KeyError):
        failing_step()
    process = seen[0]
    assert process.returncode == 0  # SIGTERM handled: a clean stop
    assert not (tmp_path / "aa.sock").exists()
