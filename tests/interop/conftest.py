"""Fixtures for the ocicrypt interop tests against Debian's skopeo 1.9.3.

Invariants:
    * Keys are generated once per xdist worker (session scope) with openssl and gpg in that worker's
      ``tmp_path_factory`` directory; the scratch gpg agent is stopped at the end of the session.
    * ``source_image`` is shared and read-only; a test that tampers with a layout copies it first.
    * Missing peers skip the interop tests with a reason naming the binary.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.images import build_layout
from tests.fixtures.keys import KeySet, make_keyset

PEERS = ("skopeo", "openssl", "gpg", "gpgconf")


@pytest.fixture(scope="session", autouse=True)
def _require_peers() -> None:
    missing = [tool for tool in PEERS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"interop peers not installed: {', '.join(missing)} (run scripts/install-peers.sh)")


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeySet]:
    """Every test key (rsa2048, rsa4096, ec-p256, pkcs7, pgp) and the scratch GNUPGHOME."""
    keys = make_keyset(tmp_path_factory.mktemp("keys"))
    yield keys
    keys.close()


@pytest.fixture(scope="session")
def source_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain 3-layer gzip image layout (ref ``latest``). Read-only: copy it before tampering."""
    return build_layout(tmp_path_factory.mktemp("source") / "layout")
