"""The one untrusted-JSON loader: depth, number size, constants, duplicates, encodings, error classes."""

from __future__ import annotations

import pytest

from cocoguest.errors import ConfigError, ProtocolError
from cocoguest.jsonutil import load_object, loads
from cocoguest.limits import Limits


def test_ordinary_document_parses() -> None:
    assert load_object(b'{"a": [1, 2.5, {"b": null}], "c": "d"}', "doc") == {"a": [1, 2.5, {"b": None}], "c": "d"}


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deep_nesting_is_a_typed_error(depth: int) -> None:
    untrusted = b"[" * depth + b"]" * depth
    with pytest.raises(ProtocolError, match=r"manifest: not valid JSON \(nested deeper than 64 levels\)"):
        loads(untrusted, "manifest")


def test_depth_limit_is_read_from_the_callers_limits() -> None:
    assert loads(b"[[[]]]", "doc", limits=Limits(max_json_depth=3)) == [[[]]]
    with pytest.raises(ProtocolError, match="deeper than 2"):
        loads(b"[[[]]]", "doc", limits=Limits(max_json_depth=2))
    nested_objects = b'{"a":' * 70 + b"1" + b"}" * 70
    with pytest.raises(ProtocolError, match="deeper than 64"):
        loads(nested_objects, "doc")


@pytest.mark.parametrize(
    "number", [b"9" * 5000, b"1" + b"0" * 100, b"-" + b"9" * 65, b"1." + b"5" * 80, b"1e" + b"9" * 70]
)
def test_huge_numbers_are_refused_before_conversion(number: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"token response: not valid JSON \(a number of \d+"):
        loads(b'{"expires_in": ' + number + b"}", "token response")


def test_largest_ordinary_numbers_pass() -> None:
    assert loads(b"[18446744073709551615, -1.7976931348623157e308]", "doc") == [2**64 - 1, -1.7976931348623157e308]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_are_refused(constant: bytes) -> None:
    with pytest.raises(ProtocolError, match=f"{constant.decode().lstrip('-')} is not JSON"):
        loads(b"[" + constant + b"]", "doc")


def test_duplicate_members_are_refused() -> None:
    with pytest.raises(ProtocolError, match="duplicate member 'digest'"):
        loads(b'{"digest": "a", "digest": "b"}', "manifest")


def test_not_utf8_and_not_json_name_the_document() -> None:
    with pytest.raises(ProtocolError, match=r"config: not valid JSON \(not UTF-8\)"):
        loads(b'{"a": "\xff"}', "config")
    with pytest.raises(ProtocolError, match=r"config: not valid JSON \(.* line 1 column"):
        loads(b'{"a": ', "config")


def test_error_class_is_the_callers() -> None:
    with pytest.raises(ConfigError, match="auth file x: not valid JSON"):
        loads(b"{", "auth file x", ConfigError)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_object(b"[]", "auth file x", ConfigError)
