"""The import contract: the boundaries of DESIGN.md §1, checked on the source with ``ast``.

Every module under ``src/cocoguest`` is parsed (nothing is imported or executed); every ``import`` and
``from ... import`` counts, including those inside functions and ``if TYPE_CHECKING:`` blocks. The rules are
data (``RULES``, ``LAYERS``) so they read like the design; a violation prints as ``module -> imported (rule)``.

``PENDING`` lists known violations being fixed elsewhere; the test also fails when one of them is no longer
needed, so the allowance is removed together with the violation.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "cocoguest"


@dataclass(frozen=True)
class Rule:
    """Modules matching ``importers`` (minus ``exempt``) must not import ``forbidden`` (minus ``allowed``).

    Every entry is a dotted prefix: ``cocoguest.rpc`` matches ``cocoguest.rpc`` and ``cocoguest.rpc.x``.
    """

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()


_IO = ("httpx", "subprocess", "socket", "sqlite3")

RULES: tuple[Rule, ...] = (
    Rule(
        "domain code never imports rpc, rest or cli",
        importers=(ROOT,),
        exempt=(f"{ROOT}.rpc", f"{ROOT}.rest", f"{ROOT}.cli", f"{ROOT}.__main__"),
        forbidden=(f"{ROOT}.rpc", f"{ROOT}.rest", f"{ROOT}.cli"),
    ),
    Rule(
        "only rpc imports rpc._generated",
        importers=(ROOT,),
        exempt=(f"{ROOT}.rpc",),
        forbidden=(f"{ROOT}.rpc._generated",),
    ),
    Rule(
        "attestation and kbs never import image, registry or signature",
        importers=(f"{ROOT}.attestation", f"{ROOT}.kbs"),
        forbidden=(f"{ROOT}.image", f"{ROOT}.registry", f"{ROOT}.signature"),
    ),
    Rule(
        "oci and policy evaluation do no IO",
        importers=(f"{ROOT}.oci", f"{ROOT}.signature.policy"),
        forbidden=(f"{ROOT}.registry", f"{ROOT}.image", f"{ROOT}.kbs", f"{ROOT}.ocicrypt", *_IO),
        allowed=(f"{ROOT}.registry.types",),  # pure value types
    ),
    Rule(
        "only crypto imports cryptography.hazmat",
        importers=(ROOT,),
        exempt=(f"{ROOT}.crypto",),
        forbidden=("cryptography.hazmat",),
    ),
)

# Low -> high. A module may import its own layer or a lower one, never a higher one. Every top-level package
# or module of cocoguest must be placed here (a new one fails the test until it is).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "limits", "digest", "jsonutil", "fileio"),
    ("oci", "crypto"),
    ("ocicrypt", "kbs", "attestation"),
    ("devkbs", "keyprovider"),
    ("registry",),
    ("signature",),
    ("image",),
    ("cdh",),
    ("rpc", "rest"),  # rest calls the AA and CDH through their rpc clients
    ("cli", "__main__"),
)

LAYERING = "layering: a lower layer never imports a higher one"
CYCLES = "no import cycles between top-level packages"

# Known violations being fixed by another change. Each entry must still occur (checked below).
PENDING: frozenset[tuple[str, str, str]] = frozenset()
"""Known violations being fixed elsewhere, as (module, imported, rule); empty: the code keeps every rule."""


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module} -> {self.imported} ({self.rule})"


# --- collecting imports ---------------------------------------------------------------------------------


def module_names(src: Path, root: str) -> dict[str, Path]:
    """Dotted name -> file, for every ``.py`` file of the package ``root`` under ``src``."""
    names: dict[str, Path] = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``module`` imports, anywhere in its body (functions and TYPE_CHECKING blocks included).

    ``from a import b`` yields ``a.b`` when that is a module of the tree, else ``a``.
    """
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    found.discard(module)
    return found


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _top(module: str, root: str) -> str | None:
    """The top-level package or module of ``root`` that ``module`` belongs to (``None``: outside ``root``)."""
    parts = module.split(".")
    if parts[0] != root:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


# --- checking -------------------------------------------------------------------------------------------


def check(
    src: Path,
    root: str = ROOT,
    rules: tuple[Rule, ...] = RULES,
    layers: tuple[tuple[str, ...], ...] = LAYERS,
) -> list[Violation]:
    """All violations of ``rules``, ``layers`` and the no-cycle rule in the package ``root`` under ``src``."""
    names = module_names(src, root)
    known = set(names)
    graph = {module: imports_of(module, path, known) for module, path in names.items()}
    violations: list[Violation] = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            violations.extend(
                Violation(module, target, rule.name)
                for rule in rules
                if _matches(module, rule.importers)
                and not _matches(module, rule.exempt)
                and _matches(target, rule.forbidden)
                and not _matches(target, rule.allowed)
            )
    violations.extend(_layering(graph, root, layers))
    violations.extend(_cycles(graph, root, layers))
    return sorted(set(violations), key=str)


def _layering(graph: dict[str, set[str]], root: str, layers: tuple[tuple[str, ...], ...]) -> list[Violation]:
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    violations: list[Violation] = []
    for module, imported in graph.items():
        top = _top(module, root)
        assert top is not None
        if top not in rank:
            violations.append(Violation(module, "-", f"{LAYERING}: '{top}' is in no layer"))
            continue
        for target in imported:
            target_top = _top(target, root)
            if target_top is not None and _upward(top, target_top, rank):
                violations.append(Violation(module, target, LAYERING))
    return violations


def _upward(top: str, target_top: str, rank: dict[str, int]) -> bool:
    return top in rank and target_top in rank and rank[target_top] > rank[top]


def _cycles(graph: dict[str, set[str]], root: str, layers: tuple[tuple[str, ...], ...]) -> list[Violation]:
    """Module imports that close a cycle between two or more top-level packages.

    An upward import is already a layering violation; it is left out here so that one bad import is reported
    once (a cycle across layers always contains one), and the cycles left are those within one layer.
    """
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    edges: dict[str, set[str]] = {}
    for module, imported in graph.items():
        top = _top(module, root)
        assert top is not None
        for target in imported:
            target_top = _top(target, root)
            if target_top is not None and target_top != top and not _upward(top, target_top, rank):
                edges.setdefault(top, set()).add(target_top)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))
        return False

    violations: list[Violation] = []
    for module, imported in graph.items():
        top = _top(module, root)
        for target in imported:
            target_top = _top(target, root)
            if target_top is None or top is None or target_top == top or _upward(top, target_top, rank):
                continue
            if reaches(target_top, top):
                violations.append(Violation(module, target, CYCLES))
    return violations


# --- the contract ---------------------------------------------------------------------------------------


def test_the_source_keeps_the_import_contract() -> None:
    violations = check(SRC)
    unexpected = [v for v in violations if (v.module, v.imported, v.rule) not in PENDING]
    assert not unexpected, "import contract broken:\n" + "\n".join(map(str, unexpected))


def test_every_pending_allowance_is_still_needed() -> None:
    found = {(v.module, v.imported, v.rule) for v in check(SRC)}
    stale = sorted(PENDING - found)
    assert not stale, "remove from PENDING (fixed): " + ", ".join(" -> ".join(entry[:2]) for entry in stale)


def test_the_checker_sees_the_whole_source() -> None:
    names = module_names(SRC, ROOT)
    assert "cocoguest.image.pull" in names
    assert "cocoguest.rpc._generated" in names
    pull = imports_of("cocoguest.image.pull", names["cocoguest.image.pull"], set(names))
    assert "cocoguest.signature.policy" in pull


# --- the checker can fail -------------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "cocoguest" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in itertools.chain([tmp_path / "cocoguest"], (tmp_path / "cocoguest").rglob("*")):
        if directory.is_dir() and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("", encoding="utf-8")
    return tmp_path


def _report(tmp_path: Path, files: dict[str, str]) -> set[str]:
    return {str(v) for v in check(_tree(tmp_path, files))}


def test_a_clean_tree_has_no_violation(tmp_path: Path) -> None:
    files = {"errors.py": "", "oci/model.py": "from cocoguest import errors\n", "cli/main.py": "import cocoguest.oci\n"}
    assert _report(tmp_path, files) == set()


def test_an_upward_import_inside_a_function_is_reported(tmp_path: Path) -> None:
    files = {
        "oci/model.py": "def f():\n    from cocoguest.image import pull\n",
        "image/pull.py": "",
    }
    report = _report(tmp_path, files)
    assert f"cocoguest.oci.model -> cocoguest.image.pull ({LAYERING})" in report
    assert "cocoguest.oci.model -> cocoguest.image.pull (oci and policy evaluation do no IO)" in report


def test_a_type_checking_import_of_cli_is_reported(tmp_path: Path) -> None:
    files = {
        "image/pull.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main\n",
        "cli/main.py": "",
    }
    report = _report(tmp_path, files)
    assert "cocoguest.image.pull -> cocoguest.cli.main (domain code never imports rpc, rest or cli)" in report


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"registry/http.py": "import cocoguest.rpc._generated.x\n", "rpc/_generated/x.py": ""},
            "cocoguest.registry.http -> cocoguest.rpc._generated.x (only rpc imports rpc._generated)",
        ),
        (
            {"kbs/client.py": "from cocoguest.signature import gate\n", "signature/gate.py": ""},
            "cocoguest.kbs.client -> cocoguest.signature.gate "
            "(attestation and kbs never import image, registry or signature)",
        ),
        (
            {"signature/policy/evaluate.py": "import subprocess\n"},
            "cocoguest.signature.policy.evaluate -> subprocess (oci and policy evaluation do no IO)",
        ),
        (
            {"image/pull.py": "from cryptography.hazmat.primitives import hashes\n"},
            "cocoguest.image.pull -> cryptography.hazmat.primitives (only crypto imports cryptography.hazmat)",
        ),
        (
            {"newthing/x.py": ""},
            f"cocoguest.newthing.x -> - ({LAYERING}: 'newthing' is in no layer)",
        ),
    ],
)
def test_each_rule_reports_its_violation(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert expected in _report(tmp_path, files)


def test_registry_types_is_allowed_in_policy_evaluation(tmp_path: Path) -> None:
    files = {"signature/policy/evaluate.py": "from cocoguest.registry.types import X\n", "registry/types.py": ""}
    assert _report(tmp_path, files) == set()


def test_a_cycle_between_packages_is_reported(tmp_path: Path) -> None:
    files = {"oci/a.py": "from cocoguest.crypto import b\n", "crypto/b.py": "import cocoguest.oci.a\n"}
    report = _report(tmp_path, files)
    assert f"cocoguest.oci.a -> cocoguest.crypto.b ({CYCLES})" in report
    assert f"cocoguest.crypto.b -> cocoguest.oci.a ({CYCLES})" in report
