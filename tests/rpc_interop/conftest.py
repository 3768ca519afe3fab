"""Fixtures for ttrpc interop with Go containerd/ttrpc (Debian's golang-github-containerd-ttrpc-dev 1.1.1).

Invariant: when Go or the ttrpc sources are missing, every test here is skipped with a reason naming the
package to install; a failing build is an error, not a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import go_ttrpc_peer


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built Go peer binary (once per session and xdist worker)."""
    reason = go_ttrpc_peer.missing_reason()
    if reason is not None:
        pytest.skip(f"Go ttrpc peer unavailable: {reason}")
    return go_ttrpc_peer.build(tmp_path_factory.mktemp("go-ttrpc-peer"))
