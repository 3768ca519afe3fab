"""The one parser of untrusted JSON documents.

Invariants:
    * Every failure is a :class:`CocoError` of the caller's class (ProtocolError for peer data, ConfigError for
      configuration) naming ``what``, with the decoder's exception chained; never a bare ValueError or a
      RecursionError.
    * Nesting deeper than ``Limits.max_json_depth`` and numbers longer than ``Limits.max_json_number_chars``
      characters are refused (a million nested arrays or a 100,000-digit integer cost the parser, not us).
    * NaN, Infinity and -Infinity are refused (not JSON).
    * Duplicate member names are refused, at every level (containers/image's "paranoid" decoding: two readers
      of one document must never see different values). A caller may word that error (``duplicate_error``).
    * This is the only place that parses JSON from outside (registries, KBS, signatures, policy and config
      files); ``json.loads`` elsewhere reads only what cocoguest itself wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cocoguest.errors import CocoError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits


class _RefusedJsonError(ValueError):
    """Internal: raised by the decoder hooks, turned into the caller's error class."""


class _DuplicateMemberError(_RefusedJsonError):
    """Internal: a member name given twice in one object (``name`` is the full, untrusted name)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member {name[:64]!r}")
        self.name = name


def loads(
    untrusted: bytes | str,
    what: str,
    error: type[CocoError] = ProtocolError,
    *,
    limits: Limits = DEFAULT_LIMITS,
    duplicate_error: Callable[[str], CocoError] | None = None,
) -> object:
    """``untrusted`` parsed as JSON under the module's rules.

    Args:
        duplicate_error: builds the error for a member name given twice (it gets the name); by default an
            ``error`` saying ``duplicate member``.

    Raises:
        ``error``: not UTF-8, not JSON, or outside the rules of the module docstring.
        whatever ``duplicate_error`` returns: a duplicate member name, when it is given.
    """
    max_number = limits.max_json_number_chars

    def parse_int(text: str) -> int:
        if len(text) > max_number:
            msg = f"a number of {len(text)} digits (at most {max_number})"
            raise _RefusedJsonError(msg)
        return int(text)

    def parse_float(text: str) -> float:
        if len(text) > max_number:
            msg = f"a number of {len(text)} characters (at most {max_number})"
            raise _RefusedJsonError(msg)
        return float(text)

    try:
        text = untrusted.decode("utf-8") if isinstance(untrusted, bytes) else untrusted
        document: object = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_int=parse_int,
            parse_float=parse_float,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError as e:
        msg = f"{what}: not valid JSON (not UTF-8)"
        raise error(msg) from e
    except RecursionError as e:
        msg = f"{what}: not valid JSON (nested deeper than {limits.max_json_depth} levels)"
        raise error(msg) from e
    except _DuplicateMemberError as e:
        if duplicate_error is not None:
            raise duplicate_error(e.name) from None
        msg = f"{what}: not valid JSON ({e})"
        raise error(msg) from e
    except _RefusedJsonError as e:
        msg = f"{what}: not valid JSON ({e})"
        raise error(msg) from e
    except json.JSONDecodeError as e:
        msg = f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        raise error(msg) from e
    if _depth(document) > limits.max_json_depth:
        msg = f"{what}: not valid JSON (nested deeper than {limits.max_json_depth} levels)"
        raise error(msg)
    return document


def load_object(
    untrusted: bytes | str,
    what: str,
    error: type[CocoError] = ProtocolError,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, object]:
    """``untrusted`` parsed as a JSON object (see :func:`loads`).

    Raises:
        ``error``: not valid JSON under the module's rules, or not an object.
    """
    document = loads(untrusted, what, error, limits=limits)
    if not isinstance(document, dict):
        msg = f"{what}: must be a JSON object"
        raise error(msg)
    return document


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateMemberError(name)
            seen.add(name)
    return obj


def _refuse_constant(name: str) -> object:
    msg = f"{name} is not JSON"
    raise _RefusedJsonError(msg)


def _depth(document: object) -> int:
    """Nesting depth of a parsed document (a scalar is 0, ``[]`` is 1), computed without recursion."""
    if not isinstance(document, dict | list):
        return 0
    deepest = 0
    pending: list[tuple[dict[str, object] | list[object], int]] = [(document, 1)]
    while pending:
        container, depth = pending.pop()
        deepest = max(deepest, depth)
        # Only containers are queued (scalars add no depth): most members of a JWE or token are strings.
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))
    return deepest
