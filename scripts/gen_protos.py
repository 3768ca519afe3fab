#!/usr/bin/env python3
"""Generate the checked-in protobuf/gRPC Python code from ``protos/*.proto``.

Every ``protos/<name>.proto`` becomes ``src/cocoguest/rpc/_generated/<name>_pb2.py``, ``<name>_pb2.pyi`` and
``<name>_pb2_grpc.py`` (grpc_tools.protoc with ``--python_out``, ``--pyi_out`` and ``--grpc_python_out``); a ``-``
in ``<name>`` becomes ``_``, as protoc writes it.
protoc writes top-level imports (``import keyprovider_pb2 as ...``); they are rewritten to package-relative
imports so the generated modules work inside ``cocoguest.rpc._generated``.

Usage:
    scripts/gen_protos.py            regenerate in place
    scripts/gen_protos.py --check    exit 1 if the checked-in files differ from a fresh generation

Invariant: the output depends only on the .proto files and the grpcio-tools version (which is written into
the generated headers); ``--check`` compares byte for byte and also reports generated files whose .proto
is gone.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "src" / "cocoguest" / "rpc" / "_generated"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

# `import foo_pb2 as foo__pb2` (a sibling generated module) -> `from . import foo_pb2 as foo__pb2`.
# Imports of google.protobuf well-known types start with `from` and are left alone.
_TOP_LEVEL_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def _protoc(args: list[str]) -> int:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415 - dev-only dependency

    include = str(Path(protoc.__file__).parent / "_proto")
    return int(protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", *args]))


def module_stem(proto: Path) -> str:
    """The Python module stem protoc writes for ``proto``: it maps ``-`` to ``_`` (``attestation-agent.proto``
    becomes ``attestation_agent_pb2.py``), so upstream file names can be kept verbatim."""
    return proto.stem.replace("-", "_")


def generate(out_dir: Path) -> list[Path]:
    """Generate code for every proto into ``out_dir``; return the files written."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        return []
    rc = _protoc(
        [
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *(str(p) for p in protos),
        ]
    )
    if rc != 0:
        sys.exit(f"gen_protos: protoc failed with status {rc}")
    written = []
    for proto in protos:
        for suffix in SUFFIXES:
            path = out_dir / f"{module_stem(proto)}{suffix}"
            text = path.read_text(encoding="utf-8")
            path.write_text(_TOP_LEVEL_IMPORT.sub(r"from . import \1 as \2", text), encoding="utf-8")
            written.append(path)
    return written


def check() -> int:
    """Compare a fresh generation with the checked-in files; 0 if identical, 1 otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp))}
    current = {p.name for p in OUT_DIR.iterdir() if p.name.endswith(SUFFIXES)}
    problems = [f"stale (no .proto): {name}" for name in sorted(current - fresh.keys())]
    for name, data in sorted(fresh.items()):
        path = OUT_DIR / name
        if not path.exists():
            problems.append(f"missing: {name}")
        elif path.read_bytes() != data:
            problems.append(f"differs: {name}")
    for problem in problems:
        sys.stderr.write(f"gen_protos --check: {problem}\n")
    if problems:
        sys.stderr.write("gen_protos --check: run `make protos` (scripts/gen_protos.py) and commit\n")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if checked-in code is not current")
    args = parser.parse_args()
    if args.check:
        return check()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for path in generate(OUT_DIR):
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
