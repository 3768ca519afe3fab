"""Tests of the pkcs11 key wrapper (ocicrypt.md §5.4): URI and config parsing, software OAEP, SoftHSM tokens.

Token tests are marked ``interop``; they build one SoftHSM token per xdist worker (session scope, in that
worker's tmp directory) with RSA keys generated on the token by python-pkcs11, and skip when softhsm2 is
not installed. openssl is the independent peer for OAEP blobs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pkcs11 import MGF, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.types import EncryptMixin
from pkcs11.util.rsa import encode_rsa_public_key

from cocoguest.crypto import rsa_oaep
from cocoguest.crypto.keys import PublicKeyMaterial, load_private_key, load_public_key
from cocoguest.crypto.pkcs11_token import loaded_module
from cocoguest.errors import ConfigError, KeyUnwrapError, UnsupportedError
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.keywrap.pkcs11 import ANNOTATION_KEY, Pkcs11Unwrapper, Pkcs11Wrapper
from cocoguest.ocicrypt.pkcs11_config import (
    INTERNAL_MODULE_DIRECTORIES,
    Pkcs11KeyFile,
    Pkcs11ModuleConfig,
    Pkcs11Uri,
    default_pkcs11_config_paths,
    find_pkcs11_module_config,
    load_pkcs11_key_file,
    load_pkcs11_module_config,
    resolve_pkcs11_module,
)

# What ocicrypt wraps: the 193-byte private options JSON of a layer.
OPTIONS = (
    b'{"symkey":"'
    + b"A" * 44
    + b'","digest":"sha256:'
    + b"0" * 64
    + b'","cipheroptions":{"nonce":"'
    + b"B" * 24
    + b'"}}'
)
PIN = "1234"
TOKEN = "cocoguest-test"
KEY1_ID = b"\xa9\x8b\x01"
KEY1_ID_URI = "%A9%8B%01"


def test_options_fixture_is_the_real_size() -> None:
    assert len(OPTIONS) == 193


# --- software RSA-OAEP, with openssl as the peer ---------------------------------------------------------


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("rsa")
    keys = {}
    for bits in (2048, 3072):
        key = out / f"rsa{bits}.pem"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(key))
        _openssl("pkey", "-in", str(key), "-pubout", "-out", str(out / f"rsa{bits}.pub.pem"))
        keys[bits] = key
    return keys


def _public(path: Path) -> PublicKeyMaterial:
    key = load_public_key(path.with_suffix(".pub.pem").read_bytes(), str(path))
    assert key is not None
    return key


def _oaep_decrypt_with_openssl(key: Path, ciphertext: bytes, hash_name: str) -> bytes:
    md = ["-pkeyopt", f"rsa_oaep_md:{hash_name}", "-pkeyopt", f"rsa_mgf1_md:{hash_name}"]
    return _openssl(
        "pkeyutl", "-decrypt", "-inkey", str(key), "-pkeyopt", "rsa_padding_mode:oaep", *md, data=ciphertext
    )


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_software_wrap_is_decrypted_by_openssl(rsa_keys: dict[int, Path], hash_name: str) -> None:
    wrapped = Pkcs11Wrapper([_public(rsa_keys[3072])], hash_name, None).wrap(OPTIONS)
    blob = json.loads(wrapped)
    assert list(blob) == ["version", "recipients"]
    assert list(blob["recipients"][0]) == ["version", "blob", "hash"]
    assert blob["recipients"][0]["hash"] == hash_name
    ciphertext = base64.b64decode(blob["recipients"][0]["blob"])
    assert _oaep_decrypt_with_openssl(rsa_keys[3072], ciphertext, hash_name) == OPTIONS


def test_software_decrypt_of_an_openssl_blob(rsa_keys: dict[int, Path]) -> None:
    md = ["-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"]
    pub = str(rsa_keys[3072].with_suffix(".pub.pem"))
    ciphertext = _openssl(
        "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-pkeyopt", "rsa_padding_mode:oaep", *md, data=OPTIONS
    )
    private = load_private_key(rsa_keys[3072].read_bytes(), "rsa3072")
    assert private is not None
    assert rsa_oaep.oaep_decrypt(private.key, ciphertext, "sha256", "rsa3072") == OPTIONS  # type: ignore[arg-type]
    with pytest.raises(KeyUnwrapError, match="rsa3072"):
        rsa_oaep.oaep_decrypt(private.key, ciphertext, "sha1", "rsa3072")  # type: ignore[arg-type]


def test_default_hash_is_sha256(rsa_keys: dict[int, Path]) -> None:
    blob = json.loads(Pkcs11Wrapper([_public(rsa_keys[3072])], None, None).wrap(OPTIONS))
    assert blob["recipients"][0]["hash"] == "sha256"


def test_rsa2048_sha256_cannot_hold_the_options(rsa_keys: dict[int, Path]) -> None:
    wrapper = Pkcs11Wrapper([_public(rsa_keys[2048])], "sha256", None)
    with pytest.raises(ConfigError, match=r"rsa2048\.pem.*RSA-2048.*at most 190 bytes.*193"):
        wrapper.wrap(OPTIONS)
    # sha1 leaves room for 214 bytes
    assert json.loads(Pkcs11Wrapper([_public(rsa_keys[2048])], "sha1", None).wrap(OPTIONS))["recipients"]


def test_capacity_arithmetic() -> None:
    assert rsa_oaep.oaep_capacity(2048, "sha256") == 190
    assert rsa_oaep.oaep_capacity(2048, "sha1") == 214
    assert rsa_oaep.oaep_capacity(3072, "sha256") == 318


def test_bad_hash_alg_is_a_config_error(rsa_keys: dict[int, Path]) -> None:
    with pytest.raises(ConfigError, match="OCICRYPT_OAEP_HASHALG"):
        Pkcs11Wrapper([_public(rsa_keys[3072])], "md5", None)


def test_ec_public_key_is_refused(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key = tmp_path / "ec.pem"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    public = load_public_key(_openssl("pkey", "-in", str(key), "-pubout"), "ec.pub.pem")
    assert public is not None
    with pytest.raises(ConfigError, match=r"ec\.pub\.pem.*RSA"):
        Pkcs11Wrapper([public], None, None)


def test_wrapper_and_unwrapper_follow_the_protocols(rsa_keys: dict[int, Path]) -> None:
    wrapper = Pkcs11Wrapper([_public(rsa_keys[3072])], None, None)
    unwrapper = Pkcs11Unwrapper([], None)
    assert isinstance(wrapper, KeyWrapper)
    assert isinstance(unwrapper, KeyUnwrapper)
    assert wrapper.annotation_key == "org.opencontainers.image.enc.keys.pkcs11"
    assert unwrapper.handles(ANNOTATION_KEY)
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe")


# --- malformed entries (no token is touched: parsing comes first) -----------------------------------------


def _recipient(blob: str = "AAAA", **extra: object) -> dict[str, object]:
    return {"version": 0, "blob": blob, **extra}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "no recipients"),
        (b'{"version":0}', "no recipients"),
        (json.dumps({"version": 1, "recipients": [_recipient()]}).encode(), "blob version 1"),
        (json.dumps({"version": 0, "recipients": [_recipient(version=1)]}).encode(), "recipient 0 has version 1"),
        (json.dumps({"version": True, "recipients": [_recipient()]}).encode(), "blob version True"),
        (json.dumps({"version": 0, "recipients": []}).encode(), "no usable recipient"),
        (json.dumps({"version": 0, "recipients": [_recipient(hash="md5")]}).encode(), "unsupported hash 'md5'"),
        (json.dumps({"version": 0, "recipients": [_recipient(blob="!!")]}).encode(), "not base64"),
        (json.dumps({"version": 0, "recipients": ["x"]}).encode(), "not an object"),
        (json.dumps({"version": 0, "recipients": [_recipient()] * 65}).encode(), "65 recipients, more than the 64"),
    ],
)
def test_malformed_entries_are_key_unwrap_errors(entry: bytes, match: str) -> None:
    with pytest.raises(KeyUnwrapError, match=match):
        Pkcs11Unwrapper([], None).unwrap(ANNOTATION_KEY, entry)


def test_unwrap_refuses_other_annotations() -> None:
    with pytest.raises(ValueError, match="jwe"):
        Pkcs11Unwrapper([], None).unwrap("org.opencontainers.image.enc.keys.jwe", b"{}")


# --- RFC 7512 URIs ----------------------------------------------------------------------------------------


def test_uri_full_parse() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=my%20token;id=%A9%8B%01;object=image key;type=private;slot-id=7;x-vendor=v"
        "?pin-value=12%2634&module-name=softhsm2&module-path=/usr/lib/softhsm/libsofthsm2.so&x-q=1+1",
        "k.yaml",
    )
    assert uri.token == "my token"
    assert uri.key_id == b"\xa9\x8b\x01"
    assert uri.object_label == "image key"
    assert uri.object_type == "private"
    assert uri.slot_id == 7
    assert uri.pin_value == "12&34"
    assert uri.module_name == "softhsm2"
    assert uri.module_path == "/usr/lib/softhsm/libsofthsm2.so"
    assert uri.other_path == (("x-vendor", "v"),)
    assert uri.other_query == (("x-q", "1+1"),)  # RFC 7512: '+' is not a space
    assert "12&34" not in repr(uri)
    assert "1234" not in uri.describe()
    assert uri.describe() == "token=my token;slot-id=7;object=image key;id=%A9%8B%01"


def test_uri_id_percent_encoding_is_case_insensitive_and_binary() -> None:
    assert Pkcs11Uri.parse("pkcs11:id=%ff%00%Ab", "k").key_id == b"\xff\x00\xab"
    assert Pkcs11Uri.parse("pkcs11:id=a%2Fb", "k").key_id == b"a/b"


def test_uri_minimal_and_empty() -> None:
    assert Pkcs11Uri.parse("pkcs11:", "k") == Pkcs11Uri()
    assert Pkcs11Uri.parse("pkcs11:object=k", "k").object_label == "k"


def test_uri_errors_never_echo_the_pin() -> None:
    with pytest.raises(ConfigError) as info:
        Pkcs11Uri.parse("pkcs11:object=k?pin-value=s3cr=t", "k.yaml")
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("pkcs12:token=a", "prefix"),
        ("token=a", "prefix"),
        ("pkcs11:token=a?x=1?y=2", r"more than one '\?'"),
        ("pkcs11:token=a?", "empty query"),
        ("pkcs11:token", "malformed pkcs11 URI path attribute"),
        ("pkcs11:token=a;", "malformed pkcs11 URI path attribute"),
        ("pkcs11:token=a=b", "malformed"),
        ("pkcs11:token=a;token=b", "duplicate"),
        ("pkcs11:?pin-value=1&pin-value=2", "duplicate"),
        ("pkcs11:id=%A", "percent-escape"),
        ("pkcs11:id=%zz", "percent-escape"),
        ("pkcs11:token=%ff", "not UTF-8"),
        ("pkcs11:slot-id=x", "slot-id"),
        ("pkcs11:slot-id=-1", "slot-id"),
        ("pkcs11:slot-id=4294967296", "slot-id"),
        ("pkcs11:type=secret", "type"),
        ("pkcs11:library-version=1.x", "library-version"),
        ("pkcs11:?pin-value=1&pin-source=/p", "both pin-value and pin-source"),
        ("pkcs11:?module-path=lib/x.so", "absolute"),
    ],
)
def test_uri_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        Pkcs11Uri.parse(text, "key.yaml")
    assert str(info.value).startswith("key.yaml: ")


def test_pin_source_file(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(b"4321")
    assert Pkcs11Uri.parse(f"pkcs11:?pin-source=file:{pin_file}", "k").read_pin("k") == "4321"
    assert Pkcs11Uri.parse(f"pkcs11:?pin-source={pin_file}", "k").read_pin("k") == "4321"
    assert Pkcs11Uri.parse("pkcs11:?pin-value=1", "k").read_pin("k") == "1"
    assert Pkcs11Uri.parse("pkcs11:", "k").read_pin("k") is None
    with pytest.raises(ConfigError, match="cannot read"):
        Pkcs11Uri.parse(f"pkcs11:?pin-source={tmp_path}/missing", "k").read_pin("k")
    with pytest.raises(ConfigError, match="absolute"):
        Pkcs11Uri.parse("pkcs11:?pin-source=relative", "k").read_pin("k")


# --- key files --------------------------------------------------------------------------------------------


def test_key_file_yaml() -> None:
    data = (
        b"pkcs11:\n  uri: pkcs11:token=t;object=k?pin-value=1&module-name=softhsm2\n"
        b"module:\n  env:\n    SOFTHSM2_CONF: /x/softhsm2.conf\n"
    )
    loaded = load_pkcs11_key_file(data, "k.yaml")
    assert loaded is not None
    assert loaded.uri.token == "t"
    assert dict(loaded.module_env) == {"SOFTHSM2_CONF": "/x/softhsm2.conf"}
    assert loaded.source == "k.yaml"
    no_env = load_pkcs11_key_file(b"pkcs11:\n  uri: pkcs11:object=k\n", "k.yaml")
    assert no_env is not None
    assert dict(no_env.module_env) == {}


@pytest.mark.parametrize(
    "data",
    [
        b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n",
        b'0\x82\x01"0\r\x06\t*\x86H\x86\xf7\r\x01\x01\x01\x05\x00pkcs11',
        b'{"kty":"RSA","n":"pkcs11","e":"AQAB"}',
        b"\x99\x01\x0d\x04pkcs11\xff\xfe",
        b"pkcs11: [unclosed",
        b"pkcs11: just a string",
        b"- pkcs11\n",
        b"",
    ],
)
def test_key_file_loader_returns_none_for_other_files(data: bytes) -> None:
    assert load_pkcs11_key_file(data, "f") is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"pkcs11:\n  other: 1\n", "no pkcs11.uri"),
        (b"pkcs11:\n  uri: 'token=t'\n", "prefix"),
        (b"pkcs11:\n  uri: pkcs11:object=k\nmodule:\n  env: [a]\n", "module.env must be a mapping"),
        (b"pkcs11:\n  uri: pkcs11:object=k\nmodule:\n  env:\n    N: 1\n", "strings"),
        (b"pkcs11:\n  uri: pkcs11:object=k\nmodule: 3\n", "module must be a mapping"),
    ],
)
def test_broken_key_files_are_config_errors(data: bytes, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_pkcs11_key_file(data, "k.yaml")


@given(st.binary(max_size=300))
def test_key_file_loader_never_crashes(data: bytes) -> None:
    try:
        result = load_pkcs11_key_file(b"pkcs11:" + data, "fuzz")
    except ConfigError:
        return
    assert result is None or isinstance(result, Pkcs11KeyFile)


# --- module policy ----------------------------------------------------------------------------------------


def test_default_config_paths() -> None:
    assert default_pkcs11_config_paths({"OCICRYPT_CONFIG": "/c.yaml", "HOME": "/h"}) == ["/c.yaml"]
    assert default_pkcs11_config_paths({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == [
        "/x/ocicrypt.conf",
        "/h/.config/ocicrypt.conf",
        "/etc/ocicrypt.conf",
    ]
    assert default_pkcs11_config_paths({}) == ["/etc/ocicrypt.conf"]


def test_module_config_file(tmp_path: Path) -> None:
    path = tmp_path / "ocicrypt.conf"
    path.write_text("pkcs11:\n  module-directories: [/opt/p11, internal]\n  allowed-module-paths: [/a/b.so]\n")
    config = load_pkcs11_module_config(str(path))
    assert config == Pkcs11ModuleConfig(("/opt/p11", *INTERNAL_MODULE_DIRECTORIES), ("/a/b.so",))
    assert "/usr/lib/softhsm" in INTERNAL_MODULE_DIRECTORIES
    assert load_pkcs11_module_config(None) is None
    assert load_pkcs11_module_config(str(tmp_path / "missing")) is None
    assert find_pkcs11_module_config([str(tmp_path / "missing"), str(path)]) == config
    internal = load_pkcs11_module_config("internal")
    assert internal is not None
    assert internal.module_directories == INTERNAL_MODULE_DIRECTORIES


@pytest.mark.parametrize("text", ["pkcs11: [", "pkcs11:\n  module-directories: /one\n", "pkcs11: 3\n", "- a\n"])
def test_malformed_module_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ocicrypt.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"ocicrypt\.conf"):
        load_pkcs11_module_config(str(path))


@pytest.fixture
def module_dirs(tmp_path: Path) -> tuple[Path, Path]:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for directory, name in ((allowed, "libfoo.so"), (other, "libevil.so"), (allowed, "libbar2.so")):
        directory.mkdir(exist_ok=True)
        (directory / name).write_bytes(b"not really a module")
    return allowed, other


def test_module_resolution(module_dirs: tuple[Path, Path]) -> None:
    allowed, other = module_dirs
    config = Pkcs11ModuleConfig((str(allowed),), (str(other / "libevil.so"),))

    def resolve(query: str) -> str:
        return resolve_pkcs11_module(Pkcs11Uri.parse("pkcs11:object=k?" + query, "k.yaml"), config, "k.yaml")

    assert resolve("module-name=foo") == str(allowed / "libfoo.so")
    assert resolve("module-name=bar") == str(allowed / "libbar2.so")
    assert resolve(f"module-path={allowed}/libfoo.so") == str(allowed / "libfoo.so")
    assert resolve(f"module-path={other}/libevil.so") == str(other / "libevil.so")  # listed exactly
    assert resolve(f"module-path={allowed}&module-name=foo") == str(allowed / "libfoo.so")
    with pytest.raises(ConfigError, match="not found"):
        resolve("module-name=nope")
    with pytest.raises(ConfigError, match="names no module"):
        resolve("pin-value=1")
    with pytest.raises(ConfigError, match="plain name"):
        resolve("module-name=../other/libevil")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(f"module-path={allowed}/missing.so")


def test_module_policy_refusals(module_dirs: tuple[Path, Path]) -> None:
    allowed, other = module_dirs
    config = Pkcs11ModuleConfig((str(allowed),), ())

    def resolve(query: str) -> str:
        return resolve_pkcs11_module(Pkcs11Uri.parse("pkcs11:object=k?" + query, "k.yaml"), config, "k.yaml")

    with pytest.raises(ConfigError, match=r"k\.yaml: pkcs11 module .*libevil\.so is not allowed"):
        resolve(f"module-path={other}/libevil.so")
    with pytest.raises(ConfigError, match="not allowed"):
        resolve(f"module-path={allowed}/../other/libevil.so")
    with pytest.raises(ConfigError, match="not allowed"):
        resolve(f"module-path={other}&module-name=evil")
    # an allowed-module-paths directory entry (trailing '/') allows the files directly inside it
    dir_config = Pkcs11ModuleConfig((), (f"{other}/",))
    uri = Pkcs11Uri.parse(f"pkcs11:?module-path={other}/libevil.so", "k")
    assert resolve_pkcs11_module(uri, dir_config, "k") == str(other / "libevil.so")


def test_no_module_config_is_reported_only_when_a_token_is_needed(rsa_keys: dict[int, Path]) -> None:
    uri = Pkcs11Uri.parse("pkcs11:object=k?module-name=softhsm2", "k.yaml")
    with pytest.raises(ConfigError, match="No ocicrypt config file was found"):
        resolve_pkcs11_module(uri, None, "k.yaml")
    # a software recipient needs no config
    assert Pkcs11Wrapper([_public(rsa_keys[3072])], None, None).wrap(OPTIONS)
    key_file = Pkcs11KeyFile(uri, {}, "k.yaml")
    with pytest.raises(ConfigError, match=r"k\.yaml: No ocicrypt config file was found"):
        Pkcs11Wrapper([key_file], None, None).wrap(OPTIONS)


# --- SoftHSM token ----------------------------------------------------------------------------------------


def _softhsm_module() -> Path | None:
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "softhsm2", "libsofthsm2"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        listing = ""
    candidates = [line for line in listing.splitlines() if line.endswith("/libsofthsm2.so")]
    candidates += ["/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/softhsm/libsofthsm2.so"]
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and not path.is_symlink():
            return path
    return None


@dataclass
class SoftHsm:
    """One initialised SoftHSM token with RSA keys, and the files that point at it."""

    root: Path
    conf: Path
    module: Path
    config: Pkcs11ModuleConfig
    spki: dict[str, Path]
    sha256_on_token: bool

    def key_file(self, name: str, uri_path: str, *, pin: str | None = PIN, conf: Path | None = None) -> Pkcs11KeyFile:
        query = f"pin-value={pin}&module-name=softhsm2" if pin is not None else "module-name=softhsm2"
        path = self.root / f"{name}.yaml"
        path.write_text(
            f"pkcs11:\n  uri: pkcs11:{uri_path}?{query}\nmodule:\n  env:\n    SOFTHSM2_CONF: {conf or self.conf}\n"
        )
        loaded = load_pkcs11_key_file(path.read_bytes(), str(path))
        assert loaded is not None
        return loaded

    def public(self, label: str) -> PublicKeyMaterial:
        key = load_public_key(self.spki[label].read_bytes(), str(self.spki[label]))
        assert key is not None
        return key


def _init_token(
    root: Path, module: Path, label: str, keys: dict[str, tuple[bytes, int]]
) -> tuple[Path, dict[str, bytes]]:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        check=True,
    )
    exported = {}
    with (
        loaded_module(str(module), (("SOFTHSM2_CONF", str(conf)),), "fixture") as lib,
        lib.get_token(token_label=label).open(rw=True, user_pin=PIN) as session,
    ):
        for key_label, (key_id, bits) in keys.items():
            public, _ = session.generate_keypair(KeyType.RSA, bits, id=key_id, label=key_label, store=True)
            exported[key_label] = encode_rsa_public_key(public)
    return conf, exported


def _probe_sha256(module: Path, conf: Path) -> bool:
    with (
        loaded_module(str(module), (("SOFTHSM2_CONF", str(conf)),), "fixture") as lib,
        lib.get_token(token_label=TOKEN).open(user_pin=PIN) as session,
    ):
        public = session.get_key(ObjectClass.PUBLIC_KEY, label="imagekey")
        assert isinstance(public, EncryptMixin)
        try:
            public.encrypt(
                b"x", mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(Mechanism.SHA256, MGF.SHA256, None)
            )
        except PKCS11Error:
            return False
        return True


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    module = _softhsm_module()
    if shutil.which("softhsm2-util") is None or module is None or shutil.which("openssl") is None:
        pytest.skip("softhsm2 (softhsm2-util, libsofthsm2.so) or openssl is not installed")
    root = tmp_path_factory.mktemp("softhsm")
    keys = {"imagekey": (KEY1_ID, 3072), "key2": (b"\x02", 3072), "small": (b"\x03", 2048)}
    conf, exported = _init_token(root, module, TOKEN, keys)
    spki = {}
    for label, der in exported.items():
        spki[label] = root / f"{label}.pub.pem"
        _openssl("rsa", "-RSAPublicKey_in", "-inform", "DER", "-pubout", "-out", str(spki[label]), data=der)
    config_path = root / "ocicrypt.conf"
    config_path.write_text(f"pkcs11:\n  module-directories: [{module.parent}]\n")
    config = load_pkcs11_module_config(str(config_path))
    assert config is not None
    return SoftHsm(root, conf, module, config, spki, _probe_sha256(module, conf))


def _blob(entry: bytes) -> dict[str, Any]:
    parsed = json.loads(entry)
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.interop
def test_token_wrap_and_unwrap_sha1(softhsm: SoftHsm) -> None:
    key = softhsm.key_file("k1", f"token={TOKEN};id={KEY1_ID_URI};object=imagekey")
    entry = Pkcs11Wrapper([key], "sha1", softhsm.config).wrap(OPTIONS)
    assert entry.startswith(b'{"version":0,"recipients":[{"version":0,"blob":"')
    assert entry.endswith(b'","hash":"sha1"}]}')
    assert Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_spki_of_the_token_key_unwraps_on_the_token(softhsm: SoftHsm) -> None:
    entry = Pkcs11Wrapper([softhsm.public("imagekey")], "sha1", None).wrap(OPTIONS)
    key = softhsm.key_file("k1-id", f"token={TOKEN};id={KEY1_ID_URI}")
    assert Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
@pytest.mark.parametrize("hash_field", [None, ""])
def test_absent_or_empty_hash_means_sha1(softhsm: SoftHsm, hash_field: str | None) -> None:
    md = ["-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1"]
    pub = str(softhsm.spki["imagekey"])
    ciphertext = _openssl(
        "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-pkeyopt", "rsa_padding_mode:oaep", *md, data=OPTIONS
    )
    recipient: dict[str, object] = {"version": 0, "blob": base64.b64encode(ciphertext).decode()}
    if hash_field is not None:
        recipient["hash"] = hash_field
    entry = json.dumps({"version": 0, "recipients": [recipient]}).encode()
    key = softhsm.key_file("k1-obj", f"token={TOKEN};object=imagekey")
    assert Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_sha256(softhsm: SoftHsm) -> None:
    key = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    entry = Pkcs11Wrapper([softhsm.public("imagekey")], "sha256", None).wrap(OPTIONS)
    (recipient,) = _blob(entry)["recipients"]
    assert recipient["hash"] == "sha256"
    assert len(base64.b64decode(recipient["blob"])) == 384
    unwrapper = Pkcs11Unwrapper([key], softhsm.config)
    token_wrapper = Pkcs11Wrapper([key], "sha256", softhsm.config)
    if softhsm.sha256_on_token:
        assert unwrapper.unwrap(ANNOTATION_KEY, entry) == OPTIONS
        assert unwrapper.unwrap(ANNOTATION_KEY, token_wrapper.wrap(OPTIONS)) == OPTIONS
    else:
        # SoftHSM 2.6 (Debian bookworm) does OAEP with SHA-1 only: a clear error, not "wrong key".
        with pytest.raises(KeyUnwrapError, match="cannot do RSA-OAEP with sha256"):
            unwrapper.unwrap(ANNOTATION_KEY, entry)
        with pytest.raises(UnsupportedError, match="OCICRYPT_OAEP_HASHALG=sha1"):
            token_wrapper.wrap(OPTIONS)


@pytest.mark.interop
def test_two_recipients(softhsm: SoftHsm) -> None:
    key1 = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    key2 = softhsm.key_file("k2", f"token={TOKEN};object=key2")
    entry = Pkcs11Wrapper([softhsm.public("imagekey"), key2], "sha1", softhsm.config).wrap(OPTIONS)
    recipients = _blob(entry)["recipients"]
    assert isinstance(recipients, list)
    assert len(recipients) == 2
    assert recipients[0]["blob"] != recipients[1]["blob"]
    assert Pkcs11Unwrapper([key1], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS
    assert Pkcs11Unwrapper([key2], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS
    # only key2's blob: key1 does not fit, key2 (tried second) does
    only_key2 = json.dumps({"version": 0, "recipients": [recipients[1]]}).encode()
    assert Pkcs11Unwrapper([key1, key2], softhsm.config).unwrap(ANNOTATION_KEY, only_key2) == OPTIONS
    with pytest.raises(KeyUnwrapError, match=r"pkcs11: no key can unwrap.*k1\.yaml"):
        Pkcs11Unwrapper([key1], softhsm.config).unwrap(ANNOTATION_KEY, only_key2)


@pytest.mark.interop
def test_tampered_blob(softhsm: SoftHsm) -> None:
    key = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    entry = _blob(Pkcs11Wrapper([softhsm.public("imagekey")], "sha1", None).wrap(OPTIONS))
    ciphertext = bytearray(base64.b64decode(entry["recipients"][0]["blob"]))
    ciphertext[10] ^= 1
    entry["recipients"][0]["blob"] = base64.b64encode(ciphertext).decode()
    with pytest.raises(KeyUnwrapError, match="decryption failed"):
        Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, json.dumps(entry).encode())


@pytest.mark.interop
def test_rsa2048_token_key_capacity(softhsm: SoftHsm) -> None:
    key = softhsm.key_file("small", f"token={TOKEN};object=small")
    with pytest.raises(ConfigError, match=r"small\.yaml.*RSA-2048 key with OAEP-sha256 holds at most 190 bytes"):
        Pkcs11Wrapper([key], "sha256", softhsm.config).wrap(OPTIONS)
    entry = Pkcs11Wrapper([key], "sha1", softhsm.config).wrap(OPTIONS)
    assert Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_configuration_errors_name_the_key_file(softhsm: SoftHsm) -> None:
    entry = Pkcs11Wrapper([softhsm.public("imagekey")], "sha1", None).wrap(OPTIONS)

    def unwrap(key: Pkcs11KeyFile, config: Pkcs11ModuleConfig | None = softhsm.config) -> bytes:
        return Pkcs11Unwrapper([key], config).unwrap(ANNOTATION_KEY, entry)

    with pytest.raises(ConfigError, match=r"badpin\.yaml: wrong PIN"):
        unwrap(softhsm.key_file("badpin", f"token={TOKEN};object=imagekey", pin="9999"))
    with pytest.raises(ConfigError, match=r"nopin\.yaml: a private-key operation needs pin-value"):
        unwrap(softhsm.key_file("nopin", f"token={TOKEN};object=imagekey", pin=None))
    with pytest.raises(ConfigError, match=r"nokey\.yaml: no private key with token 'cocoguest-test', object 'nope'"):
        unwrap(softhsm.key_file("nokey", f"token={TOKEN};object=nope"))
    with pytest.raises(ConfigError, match=r"notoken\.yaml: no pkcs11 token with token 'other'"):
        unwrap(softhsm.key_file("notoken", "token=other;object=imagekey"))
    with pytest.raises(ConfigError, match=r"noid\.yaml: the pkcs11 URI needs an 'id' or an 'object'"):
        unwrap(softhsm.key_file("noid", f"token={TOKEN}"))
    key = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    with pytest.raises(ConfigError, match=r"k1\.yaml: pkcs11 module 'softhsm2' not found"):
        unwrap(key, Pkcs11ModuleConfig((str(softhsm.root),), ()))
    with pytest.raises(ConfigError, match=r"k1\.yaml: No ocicrypt config file was found"):
        unwrap(key, None)
    # a wrong key file and a right one: the right one wins
    bad = softhsm.key_file("badpin", f"token={TOKEN};object=imagekey", pin="9999")
    assert Pkcs11Unwrapper([bad, key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_module_not_allowed(softhsm: SoftHsm, tmp_path: Path) -> None:
    path = tmp_path / "mp.yaml"
    path.write_text(
        f"pkcs11:\n  uri: pkcs11:token={TOKEN};object=imagekey?pin-value={PIN}&module-path={softhsm.module}\n"
        f"module:\n  env:\n    SOFTHSM2_CONF: {softhsm.conf}\n"
    )
    key = load_pkcs11_key_file(path.read_bytes(), str(path))
    assert key is not None
    entry = Pkcs11Wrapper([softhsm.public("imagekey")], "sha1", None).wrap(OPTIONS)
    elsewhere = Pkcs11ModuleConfig((str(tmp_path),), ("/usr/lib/other.so",))
    with pytest.raises(ConfigError, match=r"mp\.yaml: pkcs11 module .*libsofthsm2\.so is not allowed"):
        Pkcs11Unwrapper([key], elsewhere).unwrap(ANNOTATION_KEY, entry)
    exact = Pkcs11ModuleConfig((), (str(softhsm.module),))
    assert Pkcs11Unwrapper([key], exact).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_internal_policy_finds_the_distro_symlink(softhsm: SoftHsm) -> None:
    # Debian ships /usr/lib/softhsm/libsofthsm2.so as a symlink to the multiarch file the fixture loaded;
    # both names must share one loaded module (initialising it twice would fail).
    internal = load_pkcs11_module_config("internal")
    assert internal is not None
    if str(softhsm.module.parent) not in internal.module_directories:
        pytest.skip(f"{softhsm.module} is not in a built-in module directory")
    key = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    entry = Pkcs11Wrapper([key], "sha1", internal).wrap(OPTIONS)
    assert Pkcs11Unwrapper([key], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS
    assert Pkcs11Unwrapper([key], internal).unwrap(ANNOTATION_KEY, entry) == OPTIONS


@pytest.mark.interop
def test_two_module_environments(softhsm: SoftHsm) -> None:
    # A second SoftHSM configuration (another token directory): the module is re-initialised each time
    # a key file with a different SOFTHSM2_CONF is used.
    other_root = softhsm.root / "second"
    other_conf, exported = _init_token(other_root, softhsm.module, "cocoguest-other", {"o": (b"\x09", 2048)})
    spki = other_root / "o.pub.pem"
    _openssl("rsa", "-RSAPublicKey_in", "-inform", "DER", "-pubout", "-out", str(spki), data=exported["o"])
    other_public = load_public_key(spki.read_bytes(), str(spki))
    assert other_public is not None
    other_key = softhsm.key_file("other", "token=cocoguest-other;object=o", conf=other_conf)
    key = softhsm.key_file("k1", f"token={TOKEN};object=imagekey")
    entry = Pkcs11Wrapper([softhsm.public("imagekey"), other_public], "sha1", None).wrap(OPTIONS)
    for key_file in (other_key, key, other_key):
        assert Pkcs11Unwrapper([key_file], softhsm.config).unwrap(ANNOTATION_KEY, entry) == OPTIONS
    # the token of one configuration is invisible under the other
    wrong_env = softhsm.key_file("wrong-env", "token=cocoguest-other;object=o")
    with pytest.raises(ConfigError, match="no pkcs11 token"):
        Pkcs11Unwrapper([wrong_env], softhsm.config).unwrap(ANNOTATION_KEY, entry)
    assert "SOFTHSM2_CONF" not in os.environ or os.environ["SOFTHSM2_CONF"] not in (str(other_conf), str(softhsm.conf))


@pytest.mark.interop
def test_cli_copy_round_trip_on_the_token(softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cocoguest copy` with pkcs11: recipients (key YAML and SPKI) and the key YAML to decrypt."""
    from cocoguest.cli.main import main  # noqa: PLC0415
    from cocoguest.image.build import build_layout  # noqa: PLC0415

    layers = sorted((Path(__file__).parents[2] / "demo" / "layers").iterdir())
    build_layout(tmp_path / "plain", layers)
    key = softhsm.key_file("cli", f"token={TOKEN};object=imagekey")
    monkeypatch.setenv("OCICRYPT_OAEP_HASHALG", "sha1")
    monkeypatch.setenv("OCICRYPT_CONFIG", str(softhsm.root / "ocicrypt.conf"))
    plain, enc, dec = (f"oci:{tmp_path / name}" for name in ("plain", "enc", "dec"))
    spki = softhsm.spki["key2"]
    assert main(["copy", "-q", "--encryption-key", f"pkcs11:{key.source}", "--encryption-key", f"pkcs11:{spki}",
                 plain, enc]) == 0  # fmt: skip
    index = json.loads((tmp_path / "enc" / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((tmp_path / "enc" / "blobs" / "sha256" / manifest_digest).read_text())
    entry = json.loads(base64.b64decode(manifest["layers"][0]["annotations"][ANNOTATION_KEY]))
    assert [r["hash"] for r in entry["recipients"]] == ["sha1", "sha1"]
    assert main(["copy", "-q", "--decryption-key", key.source, enc, dec]) == 0
    assert (tmp_path / "dec" / "index.json").exists()
    original = json.loads((tmp_path / "plain" / "index.json").read_text())["manifests"][0]["digest"]
    assert json.loads((tmp_path / "dec" / "index.json").read_text())["manifests"][0]["digest"] == original
