"""coco-keyprovider's wrap parameters: ``k=v`` pairs joined by ``::`` (guest-components.md §7.4).

Keys: ``keyid`` (a resource URI ``kbs://[addr]/repo/type/tag``, or ``addr/repo/type/tag``, or ``/repo/type/tag``),
``keypath`` (a file holding the 32-byte KEK), ``algorithm`` (``A256GCM``, the default, or ``A256CTR``) and
``sample`` (``true``/``false``).

Differences from upstream, on purpose:
    * ``algorithm`` is honoured (upstream reads it from the ``keypath`` entry, so it is always A256GCM).
    * An unknown key, a repeated key or a pair without ``=`` is an error naming it (upstream ignores them), so a
      typo such as ``keypth=`` cannot silently produce a random KEK.

Invariants:
    * Pure: no IO. A :class:`WrapParams` always has a supported algorithm and, when ``keyid`` was given, a valid
      resource URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.errors import KeyProviderParamsError
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError

ALGORITHMS: Final = ("A256GCM", "A256CTR")
_KEYS: Final = frozenset({"keyid", "keypath", "algorithm", "sample"})
_BOOLEANS: Final = {"true": True, "false": False}
_SHOWN_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class WrapParams:
    """What one WrapKey call asked for."""

    keyid: ResourceUri | None = None
    keypath: Path | None = None
    algorithm: str = "A256GCM"
    sample: bool = False


def _key_uri(untrusted_keyid: str) -> ResourceUri:
    text = untrusted_keyid if "://" in untrusted_keyid else f"kbs://{untrusted_keyid}"
    try:
        return ResourceUri.parse(text)
    except ResourceUriError as e:
        msg = f"coco-keyprovider parameter keyid={untrusted_keyid[:_SHOWN_CHARS]!r}: {e}"
        raise KeyProviderParamsError(msg) from e


def parse_wrap_params(untrusted: str) -> WrapParams:
    """Parse ``k=v::k=v`` (an empty string means all defaults).

    Raises:
        KeyProviderParamsError: a pair without ``=``, an unknown or repeated key, an empty value, a bad
            ``keyid``, an unsupported ``algorithm`` or a ``sample`` that is neither ``true`` nor ``false``.
    """
    pairs: dict[str, str] = {}
    for item in untrusted.split("::") if untrusted else []:
        key, sep, value = item.partition("=")
        shown = item[:_SHOWN_CHARS]
        if not sep or not value:
            msg = f"coco-keyprovider parameter {shown!r}: expected KEY=VALUE"
            raise KeyProviderParamsError(msg)
        if key not in _KEYS:
            msg = f"coco-keyprovider parameter {shown!r}: unknown key {key[:40]!r} (keyid, keypath, algorithm, sample)"
            raise KeyProviderParamsError(msg)
        if key in pairs:
            msg = f"coco-keyprovider parameter {key!r} given twice"
            raise KeyProviderParamsError(msg)
        pairs[key] = value
    algorithm = pairs.get("algorithm", "A256GCM")
    if algorithm not in ALGORITHMS:
        msg = f"coco-keyprovider parameter algorithm={algorithm[:40]!r}: expected A256GCM or A256CTR"
        raise KeyProviderParamsError(msg)
    sample = pairs.get("sample", "false")
    if sample not in _BOOLEANS:
        msg = f"coco-keyprovider parameter sample={sample[:40]!r}: expected true or false"
        raise KeyProviderParamsError(msg)
    keyid = pairs.get("keyid")
    keypath = pairs.get("keypath")
    return WrapParams(
        keyid=None if keyid is None else _key_uri(keyid),
        keypath=None if keypath is None else Path(keypath),
        algorithm=algorithm,
        sample=_BOOLEANS[sample],
    )
