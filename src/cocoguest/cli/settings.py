"""Settings the CLI gathers from flags and the environment (the only place that reads os.environ)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_work_dir(env: Mapping[str, str]) -> Path:
    """``/var/lib/cocoguest`` as root, else ``$XDG_DATA_HOME/cocoguest`` (``~/.local/share/cocoguest``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/cocoguest")
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return Path(data_home) / "cocoguest"


def environment() -> dict[str, str]:
    """A copy of the process environment, taken once."""
    return dict(os.environ)
