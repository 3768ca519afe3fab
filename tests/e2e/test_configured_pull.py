"""The library pull (image/configured_pull.py): what the CLI and the CDH call, exercised without the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError, PolicyRejectedError
from cocoguest.image.configured_pull import PolicySettings, PullConfig, pull
from cocoguest.limits import Limits
from tests.e2e.conftest import read_config
from tests.fixtures.oci_images import WrittenImage


def _policy(tmp_path: Path, requirement: str) -> str:
    path = tmp_path / f"policy-{requirement}.json"
    path.write_text(json.dumps({"default": [{"type": requirement}]}))
    return str(path)


def test_pull_from_a_config_honours_the_policy_file(image: WrittenImage, tmp_path: Path, work_dir: Path) -> None:
    reject = _policy(tmp_path, "reject")
    rejecting = PullConfig(work_dir, PolicySettings(reject), snapshotter="copy")
    with pytest.raises(PolicyRejectedError, match=f"rejected by the signature policy {reject}: default"):
        pull(rejecting, f"oci:{image.path}:latest", tmp_path / "rejected")
    assert not (tmp_path / "rejected").exists()

    accepting = PullConfig(work_dir, PolicySettings(_policy(tmp_path, "insecureAcceptAnything")), snapshotter="copy")
    result = pull(accepting, f"oci:{image.path}:latest", tmp_path / "bundle")
    assert result.decision.accepted
    assert not result.decision.insecure
    assert read_config(tmp_path / "bundle")["root"] == {"path": "rootfs", "readonly": False}


def test_no_policy_is_refused_before_anything_is_read(image: WrittenImage, tmp_path: Path) -> None:
    config = PullConfig(tmp_path / "w", PolicySettings(), limits=Limits(max_manifest_bytes=1))
    with pytest.raises(ConfigError, match="no signature policy configured"):
        pull(config, f"oci:{image.path}:latest", tmp_path / "bundle")
    assert not (tmp_path / "w").exists()
    assert not (tmp_path / "bundle").exists()
