"""Private/public options JSON: the exact Go form, and strict parsing (ocicrypt.md §4.1)."""

from __future__ import annotations

import base64
import json

import pytest

from cocoguest.errors import ProtocolError, UnsupportedError
from cocoguest.ocicrypt.options import PrivateOptions, PublicOptions

KEY = bytes(range(32))
NONCE = bytes(range(0xF0, 0x100))
DIGEST = "sha256:1165138f7f748f30e4193387eaa02f3923039f076cb7919cbfd1e5682416291d"


def test_private_options_exact_form_is_193_bytes() -> None:
    data = PrivateOptions(KEY, NONCE, DIGEST).to_json()
    assert data == (
        b'{"symkey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","digest":"'
        + DIGEST.encode()
        + b'","cipheroptions":{"nonce":"8PHy8/T19vf4+fr7/P3+/w=="}}'
    )
    assert len(data) == 193


def test_public_options_exact_form() -> None:
    data = PublicOptions("AES_256_CTR_HMAC_SHA256", bytes(32), {}).to_json()
    assert data == (
        b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","cipheroptions":{}}'
    )


def test_round_trip_and_spaces_tolerated() -> None:
    spaced = json.dumps(json.loads(PrivateOptions(KEY, NONCE, DIGEST).to_json()), indent=2).encode()
    assert PrivateOptions.from_json(spaced, "t") == PrivateOptions(KEY, NONCE, DIGEST)


def test_nonce_from_public_options_wins() -> None:
    other = bytes(16)
    private = json.dumps({"symkey": base64.b64encode(KEY).decode(), "cipheroptions": {}}).encode()
    public = PublicOptions("AES_256_CTR_HMAC_SHA256", bytes(32), {"nonce": other})
    assert PrivateOptions.from_json(private, "t", public).nonce == other


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"symkey": base64.b64encode(KEY).decode(), "cipheroptions": {}}, "no nonce"),
        ({"symkey": base64.b64encode(KEY).decode()}, "no nonce"),
        ({"symkey": base64.b64encode(KEY).decode(), "cipheroptions": {"nonce": "AAAA"}}, "nonce is 3 bytes"),
        ({"symkey": base64.b64encode(KEY[:16]).decode(), "cipheroptions": {}}, "symkey is 16 bytes"),
        ({"symkey": "!!", "cipheroptions": {}}, "base64"),
        ({"symkey": 5}, "base64 string"),
        ([], "JSON object"),
    ],
)
def test_private_options_rejects(obj: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        PrivateOptions.from_json(json.dumps(obj).encode(), "layer x")


def test_public_options_rejects_unknown_cipher() -> None:
    data = json.dumps({"cipher": "AES_128_CBC", "hmac": base64.b64encode(bytes(32)).decode()}).encode()
    with pytest.raises(UnsupportedError, match="unknown cipher 'AES_128_CBC'"):
        PublicOptions.from_json(data, "pubopts")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "no cipher type"),
        ({"cipher": "AES_256_CTR_HMAC_SHA256"}, "hmac"),
        ({"cipher": "AES_256_CTR_HMAC_SHA256", "hmac": "AAAA"}, "hmac is 3 bytes"),
    ],
)
def test_public_options_rejects(obj: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        PublicOptions.from_json(json.dumps(obj).encode(), "pubopts")
