"""RFC 8785 JSON Canonicalization Scheme (JCS) for the KBS runtime data (kbs-protocol.md §8.1).

Supported values: objects with string keys, arrays, strings, booleans, ``None`` and integers of magnitude at
most 2**53 (exactly representable as IEEE 754 doubles, so their JCS form is their decimal form). The runtime
data of RCAR holds only strings; anything else is refused rather than approximated.

Invariants:
    * Object members are sorted by the UTF-16 code units of their names (RFC 8785 §3.2.3).
    * Strings are escaped as ECMAScript ``JSON.stringify`` does (RFC 8785 §3.2.2.2): ``\\"``, ``\\\\``,
      ``\\b \\f \\n \\r \\t``, other controls below U+0020 as ``\\u00xx`` (lowercase hex); everything else
      literal, UTF-8 encoded. Lone surrogates are refused.
    * Pure: no IO.
"""

from __future__ import annotations

from typing import Final

_MAX_SAFE_INTEGER: Final = 2**53
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL_LIMIT: Final = 0x20
_SURROGATES: Final = range(0xD800, 0xE000)


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < _CONTROL_LIMIT:
            out.append(f"\\u{code:04x}")
        elif code in _SURROGATES:
            msg = "lone surrogate in a string"
            raise ValueError(msg)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _serialize(value: object, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        msg = "nested too deeply"
        raise ValueError(msg)
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            msg = f"integer {value} is not exactly representable in JCS"
            raise ValueError(msg)
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _serialize(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        names = list(value)
        if not all(isinstance(name, str) for name in names):
            msg = "object member names must be strings"
            raise ValueError(msg)
        for index, name in enumerate(sorted(names, key=_utf16_key)):
            if index:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _serialize(value[name], out, depth + 1)
        out.append("}")
    else:
        msg = f"{type(value).__name__} values are not supported in canonical runtime data"
        raise ValueError(msg)


_MAX_DEPTH: Final = 64


def canonicalize(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 serialization of ``value``.

    Raises:
        ValueError: a value outside the supported subset (floats, huge integers, lone surrogates, non-string
            member names, nesting deeper than 64); a programmer error for runtime data we build ourselves.
    """
    out: list[str] = []
    _serialize(value, out, 0)
    return "".join(out).encode("utf-8")
