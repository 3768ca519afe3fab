"""The shipped attestation policies (``default_cpu.rego``, ``default_gpu.rego``) evaluated in Python.

regopy spends ~3-6 ms per query of ``trust_claims`` (a fresh input term, then the rego-cpp query), most of an RCAR
handshake. Each handshake's input is new (its nonce is in ``report_data``), so a verdict cache cannot help; these
functions give the same ``trust_claims`` in microseconds.

Invariants:
    * SECURITY: a native evaluator is used only for a policy whose text has exactly the SHA-256 pinned in
      :data:`_NATIVE` (the shipped file as reviewed against this module); any other text, including an edited
      shipped file, is evaluated by regopy. tests/unit/test_devkbs_native_policy.py fails when a shipped file
      changes, and proves native == regopy on the recorded claims and on generated claims and reference values.
    * Exactness by restriction: where Rego's or rego-cpp's semantics are subtle (floats, integers beyond
      +-10**15, ``to_number`` of anything but an integer or a canonical decimal string, ordering across types),
      the evaluator raises :class:`Unsupported` and the caller asks regopy. So a native answer is only given
      inside the domain the property test covers.
    * Pure: no IO, no state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Final


class Unsupported(Exception):  # noqa: N818  (a signal to fall back, not an error)
    """The value is outside the domain where native evaluation is proven equal to regopy: ask regopy."""


class _Undefined:
    """Rego's *undefined* (a missing document path)."""


UNDEFINED: Final = _Undefined()
_MAX_INT: Final = 10**15
_DECIMAL: Final = re.compile(r"0|-?[1-9][0-9]{0,14}")


def _plain(value: object) -> None:
    """Raise :class:`Unsupported` unless ``value`` is JSON without floats or huge integers."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) >= _MAX_INT:
            raise Unsupported
        return
    if isinstance(value, list):
        for item in value:
            _plain(item)
        return
    if isinstance(value, dict):
        for item in value.values():
            _plain(item)
        return
    raise Unsupported


def _equal(a: object, b: object) -> bool:
    """Rego ``==`` on plain JSON (checked by :func:`_plain`): type-strict (``true != 1``), structural."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)  # noqa: S101  (same type)
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)  # noqa: S101  (same type)
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _get(document: object, *path: str) -> object:
    """``document.path...``; :data:`UNDEFINED` where a step is missing or not an object."""
    node = document
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return UNDEFINED
        node = node[name]
    return node


def _accepts(rv: object, value: object) -> bool:
    """``accepts(rv, value)``: ``value in rv`` for an array, else ``value == rv``; false when either is undefined."""
    if rv is UNDEFINED or value is UNDEFINED:
        return False
    if isinstance(rv, list):
        return any(_equal(value, item) for item in rv)
    return _equal(value, rv)


def _single(rv: object) -> object:
    """``single(rv)``: ``rv[0]`` of an array (undefined when empty), else ``rv``."""
    if isinstance(rv, list):
        return rv[0] if rv else UNDEFINED
    return rv


def _to_number(value: object) -> object:
    """``to_number`` where it is unambiguous (integers, canonical decimal strings); undefined stays undefined."""
    if value is UNDEFINED:
        return UNDEFINED
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    raise Unsupported  # rego-cpp's to_number of " 1", "01", "1e0", true, null... is not ours to guess


def _int_at_least(value: object, floor: object) -> bool:
    """``value >= floor`` for integers; false when either is undefined; cross-type ordering is unsupported."""
    if value is UNDEFINED or floor is UNDEFINED:
        return False
    if isinstance(value, bool) or not isinstance(value, int) or not isinstance(floor, int):
        raise Unsupported
    return value >= floor


def default_cpu_trust_claims(untrusted_input: object, data: Mapping[str, object]) -> dict[str, int]:
    """``data.policy.trust_claims`` of the shipped ``default_cpu.rego``.

    Raises:
        Unsupported: a value outside the proven domain (ask regopy).
    """
    _plain(untrusted_input)
    reference = _get(data, "reference")
    _plain(reference)
    sample = _get(untrusted_input, "sample")

    def rv(name: str) -> object:
        return _get(reference, name)

    executables = 3 if _accepts(rv("launch_digest"), _get(sample, "launch_digest")) else 33
    # Every operand is checked before any short-circuit, so an unsupported value is found whatever Rego's order.
    major = _to_number(_single(rv("major_version")))
    minimum_minor = _to_number(_single(rv("minimum_minor_version")))
    input_major = _get(sample, "platform_version", "major")
    minor_ok = _int_at_least(_get(sample, "platform_version", "minor"), minimum_minor)
    major_ok = major is not UNDEFINED and input_major is not UNDEFINED and _equal(input_major, major)
    hardware = 2 if _accepts(rv("svn"), _get(sample, "svn")) and major_ok and minor_ok else 97
    debug = _get(sample, "debug")
    configuration = 2 if debug is not UNDEFINED and _equal(debug, False) else 36
    return {"executables": executables, "hardware": hardware, "configuration": configuration}


def default_gpu_trust_claims(untrusted_input: object, data: Mapping[str, object]) -> dict[str, int]:
    """``data.policy.trust_claims`` of the shipped ``default_gpu.rego``.

    Raises:
        Unsupported: a value outside the proven domain (ask regopy).
    """
    _plain(untrusted_input)
    reference = _get(data, "reference")
    _plain(reference)
    svn = _get(untrusted_input, "sampledevice", "svn")
    return {"hardware": 2 if _accepts(_get(reference, "sampledevice_svn"), svn) else 97}


NativeRule = Callable[[object, Mapping[str, object]], object]

# SECURITY: SHA-256 of the exact policy texts these functions implement (src/cocoguest/devkbs/policies/).
_NATIVE: Final[dict[str, dict[str, NativeRule]]] = {
    "55f4afdf83e4ac4170ce46e9f31426c0ab6ae8d6037d196a37b56f82633a624d": {"trust_claims": default_cpu_trust_claims},
    "daf010812c57b530e27276399bab86e872720e804ced5160681a69ccb5a42427": {"trust_claims": default_gpu_trust_claims},
}


def native_rules(policy_text: str) -> dict[str, NativeRule]:
    """The natively evaluated rules of ``policy_text`` (empty unless it is exactly a shipped policy)."""
    return _NATIVE.get(hashlib.sha256(policy_text.encode("utf-8")).hexdigest(), {})
