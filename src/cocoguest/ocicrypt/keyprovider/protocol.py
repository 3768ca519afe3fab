"""The key provider protocol JSON (ocicrypt.md §5.5), IO-free, for both the client and the provider side.

Client side (what Go ocicrypt sends; we send the same bytes)::

    {"op":"keywrap","keywrapparams":{"ec":{"Parameters":{...},"DecryptConfig":{"Parameters":{}}},
     "optsdata":"<b64>"},"keyunwrapparams":{"dc":null,"annotation":null}}
    {"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},
     "keyunwrapparams":{"dc":{"Parameters":{...}},"annotation":"<b64>"}}

Invariants:
    * Requests are in Go ``encoding/json`` form: compact, Go's field order, ``[]byte`` as standard base64,
      both params objects always present (the unused one with ``null`` members), map keys sorted.
    * Byte fields in answers are parsed leniently, as Go's decoder does: a base64 string or a JSON array of
      byte values (CoCo's Rust providers answer ``"annotation":[123,34,...]``). Unknown members are ignored.
    * An answer without the expected result, or with an empty one, is a
      :class:`~cocoguest.errors.ProtocolError` naming the provider.
    * Provider-side helpers (:func:`parse_request`, :func:`build_wrap_response`,
      :func:`build_unwrap_response`) also accept ocicrypt-rs requests, whose ``optsdata`` is the raw
      private-options JSON string instead of base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from cocoguest.errors import ProtocolError, TransportError
from cocoguest.jsonutil import load_object

Operation = Literal["wrap", "unwrap"]

OP_KEYWRAP: Final = "keywrap"
OP_KEYUNWRAP: Final = "keyunwrap"

_BYTE_MAX: Final = 0xFF


class KeyProviderTransport(Protocol):
    """Carries one protocol request to a provider and returns its answer (both JSON bytes)."""

    def call(self, op: Operation, request: bytes) -> bytes:
        """Send ``request`` for ``op`` and return the provider's answer.

        Raises:
            TransportError: the provider could not be reached or did not answer in time.
            ProviderFailedError: the provider ran and reported a failure (non-zero exit, gRPC error status).
            ProtocolError: the answer is too large.
        """
        ...


class ProviderFailedError(TransportError):
    """The provider ran and answered with a failure (non-zero exit status, or an error status from a handler).

    Distinguished from other transport failures because on unwrap it means "this provider cannot unwrap this
    key", which the unwrapper turns into a :class:`~cocoguest.errors.KeyUnwrapError` so the next key is tried.
    """


@dataclass(frozen=True)
class KeyProviderRequest:
    """A parsed protocol request, as a provider sees it."""

    op: Operation
    parameters: dict[str, list[bytes]]
    """``ec.Parameters`` for wrap, ``dc.Parameters`` for unwrap."""
    optsdata: bytes | None
    """The private options to wrap (wrap only)."""
    annotation: bytes | None
    """The annotation bytes to unwrap (unwrap only)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _go_parameters(parameters: Mapping[str, Sequence[bytes]]) -> dict[str, list[str]]:
    # Go marshals map[string][][]byte with sorted keys and base64 values.
    return {name: [_b64(v) for v in parameters[name]] for name in sorted(parameters)}


def build_wrap_request(parameters: Mapping[str, Sequence[bytes]], optsdata: bytes) -> bytes:
    """The ``keywrap`` request: ``ec.Parameters`` = ``parameters``, ``optsdata`` = the private options."""
    ec = {"Parameters": _go_parameters(parameters), "DecryptConfig": {"Parameters": {}}}
    return _dumps(
        {
            "op": OP_KEYWRAP,
            "keywrapparams": {"ec": ec, "optsdata": _b64(optsdata)},
            "keyunwrapparams": {"dc": None, "annotation": None},
        }
    )


def build_unwrap_request(parameters: Mapping[str, Sequence[bytes]], annotation: bytes) -> bytes:
    """The ``keyunwrap`` request: ``dc.Parameters`` = ``parameters``, ``annotation`` = the entry bytes."""
    return _dumps(
        {
            "op": OP_KEYUNWRAP,
            "keywrapparams": {"ec": None, "optsdata": None},
            "keyunwrapparams": {
                "dc": {"Parameters": _go_parameters(parameters)},
                "annotation": _b64(annotation),
            },
        }
    )


def _load_object(data: bytes, what: str) -> dict[str, object]:
    return load_object(data, what)


def _member(obj: dict[str, object], key: str, what: str) -> dict[str, object] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        msg = f"{what}: {key!r} must be an object"
        raise ProtocolError(msg)
    return value


def decode_bytes(value: object, what: str) -> bytes | None:
    """Decode a Go ``[]byte`` JSON value: ``null``, a standard base64 string, or an array of byte values.

    Raises:
        ProtocolError: anything else (names ``what``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            # Go's StdEncoding skips CR and LF; everything else must be valid padded base64.
            return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as e:
            msg = f"{what}: not valid base64"
            raise ProtocolError(msg) from e
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= _BYTE_MAX for b in value
    ):
        return bytes(value)
    msg = f"{what}: must be a base64 string or an array of byte values"
    raise ProtocolError(msg)


def _result(data: bytes, provider: str, results_key: str, field: str) -> bytes:
    what = f"key provider {provider!r}: answer"
    results = _member(_load_object(data, what), results_key, what)
    if results is None:
        msg = f"{what}: missing {results_key!r}"
        raise ProtocolError(msg)
    value = decode_bytes(results.get(field), f"{what}: {results_key}.{field}")
    if not value:
        msg = f"{what}: missing or empty {results_key}.{field}"
        raise ProtocolError(msg)
    return value


def parse_wrap_response(data: bytes, provider: str) -> bytes:
    """The annotation bytes from a ``keywrap`` answer.

    Raises:
        ProtocolError: not JSON, or ``keywrapresults.annotation`` missing or empty.
    """
    return _result(data, provider, "keywrapresults", "annotation")


def parse_unwrap_response(data: bytes, provider: str) -> bytes:
    """The private options from a ``keyunwrap`` answer.

    Raises:
        ProtocolError: not JSON, or ``keyunwrapresults.optsdata`` missing or empty.
    """
    return _result(data, provider, "keyunwrapresults", "optsdata")


# --- provider side -----------------------------------------------------------------------------------------


def _parameters(config: dict[str, object] | None, what: str) -> dict[str, list[bytes]]:
    if config is None:
        return {}
    raw = config.get("Parameters")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        msg = f"{what}: 'Parameters' must be an object"
        raise ProtocolError(msg)
    out: dict[str, list[bytes]] = {}
    for name, values in raw.items():
        if not isinstance(values, list):
            msg = f"{what}: Parameters[{name!r}] must be an array"
            raise ProtocolError(msg)
        out[name] = [decode_bytes(v, f"{what}: Parameters[{name!r}]") or b"" for v in values]
    return out


def _optsdata(value: object, what: str) -> bytes | None:
    # ocicrypt-rs sends the private options JSON itself as a string; base64 never contains "{".
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return value.encode("utf-8")
    return decode_bytes(value, what)


def parse_request(data: bytes) -> KeyProviderRequest:
    """Parse a request from Go ocicrypt, ocicrypt-rs or cocoguest (provider side).

    Raises:
        ProtocolError: not JSON, an unknown ``op``, or a malformed member.
    """
    what = "key provider request"
    obj = _load_object(data, what)
    op = obj.get("op")
    wrap_params = _member(obj, "keywrapparams", what) or {}
    unwrap_params = _member(obj, "keyunwrapparams", what) or {}
    if op == OP_KEYWRAP:
        ec = _member(wrap_params, "ec", f"{what}: keywrapparams")
        optsdata = _optsdata(wrap_params.get("optsdata"), f"{what}: keywrapparams.optsdata")
        return KeyProviderRequest("wrap", _parameters(ec, f"{what}: ec"), optsdata, None)
    if op == OP_KEYUNWRAP:
        dc = _member(unwrap_params, "dc", f"{what}: keyunwrapparams")
        annotation = decode_bytes(unwrap_params.get("annotation"), f"{what}: keyunwrapparams.annotation")
        return KeyProviderRequest("unwrap", _parameters(dc, f"{what}: dc"), None, annotation)
    msg = f"{what}: unknown op {op!r} (expected 'keywrap' or 'keyunwrap')"
    raise ProtocolError(msg)


def build_wrap_response(annotation: bytes, *, number_array: bool = False) -> bytes:
    """A ``keywrap`` answer: Go form (base64, both result objects) or Rust form (byte array, one object)."""
    if number_array:
        return _dumps({"keywrapresults": {"annotation": list(annotation)}})
    return _dumps({"keywrapresults": {"annotation": _b64(annotation)}, "keyunwrapresults": {"optsdata": None}})


def build_unwrap_response(optsdata: bytes, *, number_array: bool = False) -> bytes:
    """A ``keyunwrap`` answer: Go form (base64, both result objects) or Rust form (byte array, one object)."""
    if number_array:
        return _dumps({"keyunwrapresults": {"optsdata": list(optsdata)}})
    return _dumps({"keywrapresults": {"annotation": None}, "keyunwrapresults": {"optsdata": _b64(optsdata)}})
