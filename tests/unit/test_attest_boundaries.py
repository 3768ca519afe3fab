"""The attestation package keeps its boundaries (DESIGN.md §1): checked on the source, import by import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent.parent / "src" / "cocoguest" / "attestation"
FORBIDDEN = (
    "cocoguest.image",
    "cocoguest.registry",
    "cocoguest.signature",
    "cocoguest.kbs",
    "cocoguest.rpc",
    "cocoguest.rest",
    "cocoguest.cli",
    "cryptography.hazmat",
)
MODULES = sorted(PACKAGE.rglob("*.py"))
AGENT_MODULES = frozenset({PACKAGE / "agent.py", PACKAGE / "config.py"})
"""The AA core composes the attesters with the KBS client (GetToken) and its config names the TEE key: these two
may import ``cocoguest.kbs`` (which never imports ``attestation``); drivers, detection and the event log may not."""


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_the_package_has_modules() -> None:
    assert len(MODULES) > 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_forbidden_imports(path: Path) -> None:
    forbidden = tuple(f for f in FORBIDDEN if not (path in AGENT_MODULES and f == "cocoguest.kbs"))
    bad = [n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert bad == []


def test_kbs_never_imports_attestation() -> None:
    kbs = PACKAGE.parent / "kbs"
    for path in sorted(kbs.rglob("*.py")):
        assert not [n for n in _imports(path) if n.startswith("cocoguest.attestation")], path


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_environment_reads(path: Path) -> None:
    # configuration (OCCLUM, ENABLE_SAMPLE_DEVICE, AAEL_PATH, AA_TPM_DEVICE) arrives as parameters, set by the CLI
    assert "os.environ" not in path.read_text()
    assert "getenv" not in path.read_text()
