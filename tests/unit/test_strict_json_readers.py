"""Every reader of outside JSON uses the one strict loader (cocoguest.jsonutil).

Each reader must refuse, with its own error class, what the strict loader refuses and its old private parser
accepted: a duplicate member nested below the levels it checked, nesting deeper than ``max_json_depth``, and a
number longer than ``max_json_number_chars``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cocoguest.digest import Digest
from cocoguest.errors import CocoError, ConfigError, SignatureError
from cocoguest.kbs.offline_fs import OfflineFsKbc
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.signature.policy.model import Policy
from cocoguest.signature.sigstore import parse_sigstore_payload
from cocoguest.signature.simple_signing import SimpleSigningPayload

DEEP = "[" * (DEFAULT_LIMITS.max_json_depth + 1) + "]" * (DEFAULT_LIMITS.max_json_depth + 1)
LONG_NUMBER = "1" * (DEFAULT_LIMITS.max_json_number_chars + 1)
DUPLICATE = '{"a": 1, "a": 2}'
DIGEST = str(Digest.of_bytes(b"manifest"))


def _policy(extra: str) -> bytes:
    # The odd value sits where the old parser looked last (an unknown key it would have named instead).
    return ('{"default": [{"type": "insecureAcceptAnything"}], "zz": ' + extra + "}").encode()


def _simple_signing(extra: str) -> bytes:
    critical = {
        "type": "atomic container signature",
        "image": {"docker-manifest-digest": DIGEST},
        "identity": {"docker-reference": "example.com/a:b"},
    }
    return ('{"critical": ' + json.dumps(critical) + ', "optional": {"x": ' + extra + "}}").encode()


def _sigstore(extra: str) -> bytes:
    critical = {
        "type": "cosign container image signature",
        "image": {"docker-manifest-digest": DIGEST},
        "identity": {"docker-reference": "example.com/a:b"},
    }
    return ('{"critical": ' + json.dumps(critical) + ', "optional": {"x": ' + extra + "}}").encode()


def _offline_fs(tmp_path: Path) -> Callable[[bytes], object]:
    def load(data: bytes) -> object:
        path = tmp_path / "resources.json"
        path.write_bytes(data)
        return OfflineFsKbc.load([path])

    return load


READERS: dict[str, tuple[Callable[[str], bytes], type[CocoError]]] = {
    "policy": (_policy, ConfigError),
    "simple signing": (_simple_signing, SignatureError),
    "sigstore": (_sigstore, SignatureError),
    "offline_fs": (lambda extra: ('{"a/b/c": ' + extra + "}").encode(), ConfigError),
}


def _parse(reader: str, data: bytes, tmp_path: Path) -> object:
    if reader == "policy":
        return Policy.from_json(data, "p.json")
    if reader == "simple signing":
        return SimpleSigningPayload.parse(data)
    if reader == "sigstore":
        return parse_sigstore_payload(data, "sig")
    return _offline_fs(tmp_path)(data)


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (DUPLICATE, "duplicate member 'a'"),
        (DEEP, f"nested deeper than {DEFAULT_LIMITS.max_json_depth} levels"),
        (LONG_NUMBER, f"a number of {len(LONG_NUMBER)} digits"),
    ],
)
def test_reader_refuses_what_the_strict_loader_refuses(reader: str, extra: str, why: str, tmp_path: Path) -> None:
    build, error = READERS[reader]
    if reader == "offline_fs" and extra == DUPLICATE:
        why = "resource 'a' is defined twice"  # offline_fs words its duplicate error (any level, as before)
    with pytest.raises(error) as info:
        _parse(reader, build(extra), tmp_path)
    assert why in str(info.value)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_reader_accepts_its_well_formed_document(reader: str, tmp_path: Path) -> None:
    # The same documents with a plain value where the odd one was: only the strict rule makes the difference
    # (offline_fs wants a base64 string; the policy refuses an unknown key).
    build, error = READERS[reader]
    plain = '"YQ=="'
    if reader == "policy":
        with pytest.raises(error, match="unknown key"):
            _parse(reader, build(plain), tmp_path)
    else:
        _parse(reader, build(plain), tmp_path)


def test_offline_fs_keeps_its_duplicate_resource_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resource 'a/b/c' is defined twice"):
        _offline_fs(tmp_path)(b'{"a/b/c": "YQ==", "a/b/c": "Yg=="}')
