"""Parsing untrusted JSON documents that must be objects.

Invariant: the error names ``what`` and is of the caller's class (ProtocolError for peer data, ConfigError for
configuration), with the decoder's exception chained.
"""

from __future__ import annotations

import json

from cocoguest.errors import CocoError, ProtocolError


def load_object(untrusted: bytes, what: str, error: type[CocoError] = ProtocolError) -> dict[str, object]:
    """``untrusted`` parsed as a JSON object.

    Raises:
        ``error``: not UTF-8 JSON, or not an object.
    """
    try:
        obj = json.loads(untrusted)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"{what}: not valid JSON"
        raise error(msg) from e
    if not isinstance(obj, dict):
        msg = f"{what}: must be a JSON object"
        raise error(msg)
    return obj
