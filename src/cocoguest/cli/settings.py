"""Settings the CLI gathers from flags and the environment (the only place that reads os.environ)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits


def default_work_dir(env: Mapping[str, str]) -> Path:
    """``/var/lib/cocoguest`` as root, else ``$XDG_DATA_HOME/cocoguest`` (``~/.local/share/cocoguest``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/cocoguest")
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return Path(data_home) / "cocoguest"


def environment() -> dict[str, str]:
    """A copy of the process environment, taken once."""
    return dict(os.environ)


LIMITS_VARIABLE = "COCOGUEST_LIMITS"
"""``name=value,name=value`` of :class:`~cocoguest.limits.Limits` fields to tighten (advanced; tests)."""


_MINIMUM_FIELDS = frozenset({"registry_blob_min_bytes_per_s"})
"""Limits that are minimums (a larger value is stricter)."""


def limits_from_env(env: Mapping[str, str]) -> Limits:
    """The default limits, tightened by ``COCOGUEST_LIMITS`` (e.g. ``registry_request_deadline_s=5``).

    SECURITY: a value may only tighten a limit (at most the default): the environment of a guest process is
    not a measured source, so it must not be able to switch a protection off.

    Raises:
        ConfigError: an unknown field, a malformed value, or a value above the default.
    """
    text = env.get(LIMITS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LIMITS
    changes: dict[str, int | float] = {}
    fields = {f.name for f in dataclasses.fields(Limits)}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name not in fields:
            msg = f"{LIMITS_VARIABLE}: {item.strip()[:80]!r} is not NAME=VALUE of a Limits field"
            raise ConfigError(msg)
        default = getattr(DEFAULT_LIMITS, name)
        try:
            parsed: int | float = int(value) if isinstance(default, int) else float(value)
        except ValueError as e:
            msg = f"{LIMITS_VARIABLE}: {name}={value[:40]!r} is not a number"
            raise ConfigError(msg) from e
        # A minimum is tightened by raising it; every other limit by lowering it.
        tighter = parsed >= default if name in _MINIMUM_FIELDS else parsed <= default
        if parsed <= 0 or not tighter:
            bound = "at least" if name in _MINIMUM_FIELDS else "at most"
            msg = f"{LIMITS_VARIABLE}: {name}={value[:40]} must be positive and {bound} the default {default}"
            raise ConfigError(msg)
        changes[name] = parsed
    return dataclasses.replace(DEFAULT_LIMITS, **changes)  # type: ignore[arg-type]
