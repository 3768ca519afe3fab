"""``aa_kbc_params``: ``<kbc_name>::<kbs_uri>`` (guest-components.md §5.2), and where it comes from.

Sources, highest first: the ``--aa-kbc-params`` flag, the ``AA_KBC_PARAMS`` environment variable, the kernel
command line's ``agent.aa_kbc_params=``, the config file, then the default ``offline_fs_kbc::null``
(DESIGN.md §5: flags > kernel cmdline > config > defaults; upstream reads env, then cmdline, then the default).
Functions here take text; only the CLI reads the environment and ``/proc/cmdline``.

Invariants:
    * The name is one of :data:`KNOWN_KBCS`; ``cc_kbc`` needs an ``http(s)://host[:port]`` URI.
    * Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from cocoguest.errors import ConfigError

KNOWN_KBCS: Final = ("cc_kbc", "offline_fs_kbc", "sample_kbc")
CMDLINE_KEY: Final = "agent.aa_kbc_params="
DEFAULT_TEXT: Final = "offline_fs_kbc::null"
DEFAULT_SOURCE: Final = "the default"
"""The ``source`` of the default value (nothing configured it)."""
_SEPARATOR: Final = "::"


@dataclass(frozen=True, slots=True)
class AaKbcParams:
    """A KBC name, its KBS URI and the source they came from (for messages)."""

    kbc_name: str
    kbs_uri: str
    source: str


def parse_aa_kbc_params(text: str, source: str) -> AaKbcParams:
    """Parse ``<kbc_name>::<kbs_uri>``.

    Args:
        text: the value, e.g. ``cc_kbc::http://127.0.0.1:8080``.
        source: where it came from (``AA_KBC_PARAMS``, ``kernel command line``, a config file), for messages.

    Raises:
        ConfigError: no ``::``, unknown KBC name, or ``cc_kbc`` without an http(s) URL (names ``source``).
    """
    name, separator, uri = text.strip().partition(_SEPARATOR)
    if not separator:
        msg = f"aa_kbc_params from {source}: {text[:200]!r} is not <kbc_name>::<kbs_uri>"
        raise ConfigError(msg)
    if name not in KNOWN_KBCS:
        msg = f"aa_kbc_params from {source}: unknown KBC {name[:64]!r} (known: {', '.join(KNOWN_KBCS)})"
        raise ConfigError(msg)
    if name == "cc_kbc":
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"aa_kbc_params from {source}: cc_kbc needs an http(s)://host[:port] KBS URL, not {uri[:200]!r}"
            raise ConfigError(msg)
    return AaKbcParams(name, uri, source)


def from_kernel_cmdline(cmdline: str) -> str | None:
    """The value of the first ``agent.aa_kbc_params=`` on the kernel command line (as upstream), if any."""
    for word in cmdline.split():
        if word.startswith(CMDLINE_KEY):
            return word[len(CMDLINE_KEY) :]
    return None


def resolve_aa_kbc_params(
    *,
    flag: str | None = None,
    env: str | None = None,
    cmdline: str | None = None,
    config: str | None = None,
) -> AaKbcParams:
    """The effective ``aa_kbc_params`` from the sources in the module docstring's order.

    Args:
        flag: ``--aa-kbc-params``.
        env: the value of ``AA_KBC_PARAMS`` (an empty value counts as unset).
        cmdline: the whole kernel command line text (``/proc/cmdline``).
        config: the config file's value.

    Raises:
        ConfigError: the chosen value is malformed (a malformed higher source is an error, never skipped).
    """
    kernel = from_kernel_cmdline(cmdline) if cmdline is not None else None
    for value, source in (
        (flag, "--aa-kbc-params"),
        (env, "AA_KBC_PARAMS"),
        (kernel, "the kernel command line"),
        (config, "the config file"),
    ):
        if value:
            return parse_aa_kbc_params(value, source)
    return parse_aa_kbc_params(DEFAULT_TEXT, DEFAULT_SOURCE)
