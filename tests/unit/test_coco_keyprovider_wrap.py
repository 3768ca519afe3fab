"""coco-keyprovider's parameters and WrapKey logic (guest-components.md §7.2, §7.4), without a network.

Packets are checked with pyca's AES (independent of cocoguest's kek_wrap) and read back with cocoguest's guest-side
parser (parse_annotation_packet + decrypt_with_kek), so wrap and unwrap must agree. The KEK store here is an
in-memory implementation of the KekStore protocol; the real KBS store is exercised in
tests/e2e/test_coco_keyprovider.py and tests/e2e/test_key_flow.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.errors import ConfigError, KeyProviderParamsError, ProtocolError
from cocoguest.kbs.annotation_packet import decrypt_with_kek, parse_annotation_packet
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.keyprovider.params import WrapParams, parse_wrap_params
from cocoguest.keyprovider.wrap import KeyWrapper
from cocoguest.ocicrypt.keyprovider.protocol import build_unwrap_request, build_wrap_request, parse_wrap_response

OPTIONS = b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"aG1hYw==","cipheroptions":{"symkey":"c3lt","cipheriv":"aXY="}}'
SAMPLE_KEY = bytes.fromhex("d99b7705b0ba7a168295b3a3367270b0dd9b371bf514ca8b9ba7f0a33711daea")  # spec §7.1


class MemoryStore:
    def __init__(self) -> None:
        self.keks: dict[str, bytes] = {}

    def store(self, kid: ResourceUri, kek: bytes) -> None:
        self.keks[kid.path] = kek


def request(params: str | None, options: bytes = OPTIONS, name: str = "attestation-agent") -> bytes:
    return build_wrap_request({name: [params.encode()] if params is not None else []}, options)


def packet_of(answer: bytes) -> dict[str, str]:
    # The answer is the Rust form: a JSON array of byte values.
    assert json.loads(answer)["keywrapresults"]["annotation"][0] == ord("{")
    document: dict[str, str] = json.loads(parse_wrap_response(answer, "test"))
    return document


# ------------------------------------------------------------------------------------------- parameters


def test_params_all_keys() -> None:
    p = parse_wrap_params("keyid=kbs:///default/image-kek/k1::keypath=/k::algorithm=A256CTR::sample=false")
    assert p == WrapParams(ResourceUri.parse("kbs:///default/image-kek/k1"), Path("/k"), "A256CTR", False)


@pytest.mark.parametrize(
    ("keyid", "expected"),
    [
        ("kbs:///default/key/a", "kbs:///default/key/a"),
        ("/default/key/a", "kbs:///default/key/a"),
        ("kbs.example:8080/default/key/a", "kbs://kbs.example:8080/default/key/a"),
    ],
)
def test_keyid_forms(keyid: str, expected: str) -> None:
    assert str(parse_wrap_params(f"keyid={keyid}").keyid) == expected


def test_empty_params_are_the_defaults() -> None:
    assert parse_wrap_params("") == WrapParams()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("keypth=/k", "unknown key 'keypth'"),
        ("keyid", "expected KEY=VALUE"),
        ("keyid=", "expected KEY=VALUE"),
        ("algorithm=A128GCM", "algorithm='A128GCM'"),
        ("sample=yes", "sample='yes'"),
        ("keyid=/a/b::keyid=/a/b/c", "'keyid' given twice"),
        ("keyid=/default/../x", "keyid='/default/../x'"),
    ],
)
def test_bad_params_are_refused_naming_the_parameter(params: str, fragment: str) -> None:
    with pytest.raises(KeyProviderParamsError) as info:
        parse_wrap_params(params)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------- wrap


@pytest.mark.parametrize("algorithm", ["A256GCM", "A256CTR"])
def test_random_kek_is_stored_and_opens_the_packet(algorithm: str) -> None:
    store = MemoryStore()
    answer = KeyWrapper(store).handle(request(f"keyid=kbs:///default/image-kek/k1::algorithm={algorithm}"))
    packet = packet_of(answer)
    assert list(packet) == ["kid", "wrapped_data", "iv", "wrap_type"]
    assert packet["kid"] == "kbs:///default/image-kek/k1"
    assert packet["wrap_type"] == algorithm  # honoured, unlike upstream
    kek = store.keks["default/image-kek/k1"]
    assert len(kek) == 32
    iv, data = base64.b64decode(packet["iv"]), base64.b64decode(packet["wrapped_data"])
    if algorithm == "A256GCM":
        assert len(iv) == 12
        assert AESGCM(kek).decrypt(iv, data, None) == OPTIONS
    else:
        assert len(iv) == 16
        decryptor = Cipher(algorithms.AES(kek), modes.CTR(iv)).decryptor()
        assert decryptor.update(data) + decryptor.finalize() == OPTIONS
    parsed = parse_annotation_packet(json.dumps(packet).encode())
    assert decrypt_with_kek(parsed, kek) == OPTIONS


def test_each_wrap_has_a_fresh_kek_and_iv_and_a_default_kid() -> None:
    store = MemoryStore()
    wrapper = KeyWrapper(store)
    first, second = (packet_of(wrapper.handle(request(""))) for _ in range(2))
    assert first["kid"].startswith("kbs:///default/image-kek/")
    assert first["kid"] != second["kid"]
    assert first["iv"] != second["iv"]
    assert len(set(store.keks.values())) == 2


def test_keypath_kek_is_used_and_registered(tmp_path: Path) -> None:
    kek = bytes(range(32))
    (tmp_path / "kek").write_bytes(kek)
    store = MemoryStore()
    packet = packet_of(KeyWrapper(store).handle(request(f"keyid=/default/key/mine::keypath={tmp_path / 'kek'}")))
    assert store.keks == {"default/key/mine": kek}
    iv, data = base64.b64decode(packet["iv"]), base64.b64decode(packet["wrapped_data"])
    assert AESGCM(kek).decrypt(iv, data, None) == OPTIONS


def test_keypath_without_a_kbs_works_and_registers_nothing(tmp_path: Path) -> None:
    (tmp_path / "kek").write_bytes(bytes(32))
    packet = packet_of(KeyWrapper(None).handle(request(f"keypath={tmp_path / 'kek'}")))
    assert packet["kid"].startswith("kbs:///default/image-kek/")


@pytest.mark.parametrize(("size", "shown"), [(31, "the file has 31"), (33, "more than 32"), (0, "the file has 0")])
def test_a_kek_file_of_the_wrong_size_is_refused(tmp_path: Path, size: int, shown: str) -> None:
    (tmp_path / "kek").write_bytes(b"k" * size)
    with pytest.raises(ConfigError) as info:
        KeyWrapper(MemoryStore()).handle(request(f"keypath={tmp_path / 'kek'}"))
    assert shown in str(info.value)
    assert str(tmp_path / "kek") in str(info.value)


def test_a_missing_kek_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keypath .*absent"):
        KeyWrapper(MemoryStore()).handle(request(f"keypath={tmp_path / 'absent'}"))


def test_a_random_kek_without_a_kbs_is_refused() -> None:
    with pytest.raises(ConfigError, match="no --kbs"):
        KeyWrapper(None).handle(request("keyid=/default/image-kek/k1"))


def test_sample_mode_uses_the_sample_kbc_key_and_a_zero_iv() -> None:
    store = MemoryStore()
    packet = packet_of(KeyWrapper(store).handle(request("sample=true")))
    assert packet["kid"] == "kbs:///default/test-key/1"
    assert base64.b64decode(packet["iv"]) == bytes(12)
    assert AESGCM(SAMPLE_KEY).decrypt(bytes(12), base64.b64decode(packet["wrapped_data"]), None) == OPTIONS
    assert store.keks == {}


def test_a_differently_named_provider_entry_is_used_when_it_is_the_only_one() -> None:
    store = MemoryStore()
    packet = packet_of(KeyWrapper(store).handle(request("keyid=/default/k/x", name="coco")))
    assert packet["kid"] == "kbs:///default/k/x"


def test_keyunwrap_is_refused() -> None:
    with pytest.raises(KeyProviderParamsError, match="only keywrap"):
        KeyWrapper(MemoryStore()).handle(build_unwrap_request({}, b"{}"))


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        KeyWrapper(MemoryStore()).handle(b"\xff not json")


def test_one_random_kek_per_kid_across_layers() -> None:
    # ocicrypt calls WrapKey once per layer with the same keyid: every layer must open with the one KEK in the KBS.
    store = MemoryStore()
    wrapper = KeyWrapper(store)
    packets = [packet_of(wrapper.handle(request("keyid=/default/image-kek/same"))) for _ in range(3)]
    kek = store.keks["default/image-kek/same"]
    for packet in packets:
        iv, data = base64.b64decode(packet["iv"]), base64.b64decode(packet["wrapped_data"])
        assert AESGCM(kek).decrypt(iv, data, None) == OPTIONS
    assert len({p["iv"] for p in packets}) == 3


def test_remembered_keks_are_bounded() -> None:
    from cocoguest.limits import Limits  # noqa: PLC0415

    store = MemoryStore()
    wrapper = KeyWrapper(store, Limits(keyprovider_max_remembered_keks=2))
    for name in ("a", "b", "c", "a"):
        wrapper.handle(request(f"keyid=/default/image-kek/{name}"))
    first_a = store.keks["default/image-kek/a"]
    wrapper.handle(request("keyid=/default/image-kek/c"))
    assert store.keks["default/image-kek/a"] == first_a  # "a" was re-made once after eviction, then remembered
