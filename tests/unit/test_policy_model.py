"""containers-policy.json parsing.

Cases ported from containers/image ``signature/policy_config_test.go`` and ``policy_config_sigstore_test.go``
(the ``breakFns``/``duplicateFields`` tables and ``fixtures/policy.json``), plus image-rs's
``test_data/signature/policy.json`` (tests/vectors/image-rs/signature/policy.json).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS
from cocoguest.signature.policy.identity import (
    ExactReference,
    ExactRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
)
from cocoguest.signature.policy.model import (
    Fulcio,
    InsecureAcceptAnything,
    Pki,
    Policy,
    Reject,
    SignedBaseLayer,
    SignedBy,
    SigstoreSigned,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "image-rs" / "signature"

Json = dict[str, Any]
Edit = Callable[[Json], None]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signed_by(key_type: str, **fields: Any) -> Json:
    return {"type": "signedBy", "keyType": key_type, **fields}


# containers/image signature/fixtures/policy.json, re-typed as data.
CONTAINERS_IMAGE_FIXTURE: Json = {
    "default": [{"type": "reject"}],
    "transports": {
        "dir": {"": [{"type": "insecureAcceptAnything"}]},
        "docker": {
            "example.com/playground": [{"type": "insecureAcceptAnything"}],
            "example.com/production": [_signed_by("GPGKeys", keyPath="/keys/employee-gpg-keyring")],
            "example.com/hardened": [
                _signed_by("GPGKeys", keyPath="/keys/employee-gpg-keyring", signedIdentity={"type": "matchRepository"}),
                _signed_by(
                    "signedByGPGKeys",
                    keyPath="/keys/public-key-signing-gpg-keyring",
                    signedIdentity={"type": "matchExact"},
                ),
                {
                    "type": "signedBaseLayer",
                    "baseLayerIdentity": {
                        "type": "exactRepository",
                        "dockerRepository": "registry.access.redhat.com/rhel7/rhel",
                    },
                },
            ],
            "example.com/hardened-x509": [
                _signed_by(
                    "X509Certificates", keyPath="/keys/employee-cert-file", signedIdentity={"type": "matchRepository"}
                ),
                _signed_by("signedByX509CAs", keyPath="/keys/public-key-signing-ca-file"),
            ],
            "registry.access.redhat.com": [
                _signed_by(
                    "signedByGPGKeys",
                    keyPath="/keys/RH-key-signing-key-gpg-keyring",
                    signedIdentity={"type": "matchRepoDigestOrExact"},
                )
            ],
            "registry.redhat.io/beta": [
                _signed_by(
                    "GPGKeys",
                    keyPaths=["/keys/RH-production-signing-key-gpg-keyring", "/keys/RH-beta-signing-key-gpg-keyring"],
                )
            ],
            "private-mirror:5000/vendor-mirror": [
                _signed_by(
                    "GPGKeys",
                    keyPath="/keys/vendor-gpg-keyring",
                    signedIdentity={
                        "type": "remapIdentity",
                        "prefix": "private-mirror:5000/vendor-mirror",
                        "signedPrefix": "vendor.example.com",
                    },
                )
            ],
            "*.access.redhat.com": [
                _signed_by("signedByGPGKeys", keyPath="/keys/RH-key-signing-key-gpg-keyring"),
            ],
            "bogus/key-data-example": [_signed_by("signedByGPGKeys", keyData="bm9uc2Vuc2U=")],
            "bogus/signed-identity-example": [
                {
                    "type": "signedBaseLayer",
                    "baseLayerIdentity": {
                        "type": "exactReference",
                        "dockerReference": "registry.access.redhat.com/rhel7/rhel:latest",
                    },
                }
            ],
            "example.com/sigstore/key-data-example": [{"type": "sigstoreSigned", "keyData": "bm9uc2Vuc2U="}],
            "example.com/sigstore/key-path-example": [
                {"type": "sigstoreSigned", "keyPath": "/keys/public-key", "signedIdentity": {"type": "matchRepository"}}
            ],
        },
    },
}


def _parse(document: object) -> Policy:
    return Policy.from_json(json.dumps(document).encode(), "test.json")


def _fails(document: object, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _parse(document)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "test.json" in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_containers_image_fixture_parses() -> None:
    policy = _parse(CONTAINERS_IMAGE_FIXTURE)
    assert policy.default == (Reject(),)
    assert policy.transports["dir"][""] == (InsecureAcceptAnything(),)
    docker = policy.transports["docker"]
    assert docker["example.com/production"] == (
        SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_path="/keys/employee-gpg-keyring"),
    )
    assert docker["example.com/hardened"] == (
        SignedBy("GPGKeys", MatchRepository(), key_path="/keys/employee-gpg-keyring"),
        SignedBy("signedByGPGKeys", MatchExact(), key_path="/keys/public-key-signing-gpg-keyring"),
        SignedBaseLayer(ExactRepository("registry.access.redhat.com/rhel7/rhel")),
    )
    assert docker["registry.redhat.io/beta"][0] == SignedBy(
        "GPGKeys",
        MatchRepoDigestOrExact(),
        key_paths=("/keys/RH-production-signing-key-gpg-keyring", "/keys/RH-beta-signing-key-gpg-keyring"),
    )
    assert docker["private-mirror:5000/vendor-mirror"][0] == SignedBy(
        "GPGKeys",
        RemapIdentity("private-mirror:5000/vendor-mirror", "vendor.example.com"),
        key_path="/keys/vendor-gpg-keyring",
    )
    assert docker["bogus/key-data-example"][0] == SignedBy(
        "signedByGPGKeys", MatchRepoDigestOrExact(), key_data=b"nonsense"
    )
    assert docker["bogus/signed-identity-example"][0] == SignedBaseLayer(
        ExactReference("registry.access.redhat.com/rhel7/rhel:latest")
    )
    assert docker["example.com/sigstore/key-data-example"][0] == SigstoreSigned(
        MatchRepoDigestOrExact(), key_data=b"nonsense"
    )
    assert docker["example.com/sigstore/key-path-example"][0] == SigstoreSigned(
        MatchRepository(), key_path="/keys/public-key"
    )


def test_image_rs_policy_parses_with_every_identity_kind() -> None:
    data = (VECTORS / "policy.json").read_bytes()
    policy = Policy.from_json(data, str(VECTORS / "policy.json"))
    docker = policy.transports["docker"]
    identities = {type(req.signed_identity) for reqs in docker.values() for req in reqs if isinstance(req, SignedBy)}
    assert identities == {MatchRepoDigestOrExact, MatchExact, ExactReference, ExactRepository, RemapIdentity}
    assert docker["*.access.redhat.com"][1] == SignedBy(
        "GPGKeys", ExactReference("docker.io/example/busybox:latest"), key_path="/keys/public-gpg-keyring"
    )
    assert docker["*.com"][1].signed_identity == RemapIdentity("example", "example")  # type: ignore[union-attr]
    assert docker["example.com/hardened"][1] == SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_data=b"nonsense")
    assert policy.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert policy.raw == data


# --- Policy level (TestPolicyUnmarshalJSON) ------------------------------------------------------------------

VALID_POLICY: Json = {
    "default": [_signed_by("GPGKeys", keyData=_b64(b"abc"))],
    "transports": {
        "docker": {
            "docker.io/library/busybox": [_signed_by("GPGKeys", keyData=_b64(b"def"))],
            "registry.access.redhat.com": [
                _signed_by("signedByGPGKeys", keyData=_b64(b"RH"), signedIdentity={"type": "matchRepository"})
            ],
        },
        "atomic": {
            "registry.access.redhat.com/rhel7": [
                _signed_by("signedByGPGKeys", keyData=_b64(b"RHatomic"), signedIdentity={"type": "matchRepository"})
            ]
        },
        "unknown": {"registry.access.redhat.com/rhel7": [_signed_by("GPGKeys", keyData=_b64(b"x"))]},
    },
}


def _edited(base: Json, edit: Edit) -> Json:
    document = copy.deepcopy(base)
    edit(document)
    return document


def test_valid_policy_parses() -> None:
    policy = _parse(VALID_POLICY)
    assert policy.default == (SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_data=b"abc"),)
    assert set(policy.transports) == {"docker", "atomic", "unknown"}


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.pop("default"), "default: missing"),
        (lambda v: v.update(unexpected=1), "unexpected: unknown key"),
        (lambda v: v.update(default=1), "default: expected an array"),
        (lambda v: v.update(default={}), "default: expected an array"),
        (lambda v: v.update(transports=1), "transports: expected a JSON object"),
        (lambda v: v.update(transports=[]), "transports: expected a JSON object"),
        (lambda v: v.update(default=[]), "must not be empty"),
        (lambda v: v["transports"]["docker"].update({"docker.io/library/busybox": 1}), "expected an array"),
        (lambda v: v["transports"]["docker"].update({"": {}}), 'transports.docker[""]: expected an array'),
        (lambda v: v["transports"]["docker"].update({"": []}), "must not be empty"),
        (lambda v: v["transports"].update(docker=[]), "transports.docker: expected a JSON object"),
    ],
)
def test_policy_break(edit: Edit, fragment: str) -> None:
    _fails(_edited(VALID_POLICY, edit), fragment)


@pytest.mark.parametrize(
    "edit", [lambda v: v.pop("transports"), lambda v: v.update(transports={}), lambda v: v["transports"].clear()]
)
def test_policy_allowed_modifications(edit: Edit) -> None:
    assert _parse(_edited(VALID_POLICY, edit)).default


def _with_duplicate(text: str, key: str, value: object) -> bytes:
    assert text.endswith("}")
    return (text[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}").encode()


@pytest.mark.parametrize("key", ["default", "transports"])
def test_policy_duplicate_fields(key: str) -> None:
    with pytest.raises(ConfigError, match="duplicate member"):
        Policy.from_json(_with_duplicate(json.dumps(VALID_POLICY), key, VALID_POLICY[key]), "dup.json")


@pytest.mark.parametrize("scope", ["docker.io/library/busybox", ""])
def test_scope_duplicate_fields(scope: str) -> None:
    scopes = {"docker.io/library/busybox": [{"type": "reject"}], "": [{"type": "reject"}]}
    text = _with_duplicate(json.dumps(scopes), scope, [{"type": "reject"}]).decode()
    document = '{"default": [{"type": "reject"}], "transports": {"docker": ' + text + "}}"
    with pytest.raises(ConfigError, match="duplicate member"):
        Policy.from_json(document.encode(), "dup.json")


@pytest.mark.parametrize("bad", [b"", b"&", b"1", b"[]", b'{"default": [{"type": "reject"}]} x', b"\xff{}"])
def test_invalid_json(bad: bytes) -> None:
    with pytest.raises(ConfigError, match=r"policy bad\.json"):
        Policy.from_json(bad, "bad.json")


def test_nan_and_oversize_refused() -> None:
    with pytest.raises(ConfigError):
        Policy.from_json(b'{"default": [{"type": "reject", "x": NaN}]}', "nan.json")
    with pytest.raises(ConfigError, match="larger than"):
        Policy.from_json(b" " * (DEFAULT_LIMITS.max_policy_bytes + 1), "big.json")


@pytest.mark.parametrize(
    ("transport", "scope", "ok"),
    [
        ("oci", "/var/lib/x", True),
        ("oci", "relative/x", False),
        ("oci", "/", False),
        ("oci", "/var//lib", False),
        ("oci", "/var/lib/", False),
        ("dir", "docker.io/library/busybox", False),  # docker scopes are relative paths for dir
        ("docker", "anything goes", True),
        ("unknown-transport", "whatever", True),
    ],
)
def test_path_scopes_validated(transport: str, scope: str, ok: bool) -> None:
    document = {"default": [{"type": "reject"}], "transports": {transport: {scope: [{"type": "reject"}]}}}
    if ok:
        assert _parse(document).transports[transport][scope] == (Reject(),)
    else:
        _fails(document, f"transports.{transport}")


# --- requirements --------------------------------------------------------------------------------------------


def _policy_with(requirement: object) -> Json:
    return {"default": [{"type": "reject"}], "transports": {"docker": {"quay.io/x": [requirement]}}}


def _requirement_fails(requirement: object, *fragments: str) -> ConfigError:
    return _fails(_policy_with(requirement), 'transports.docker["quay.io/x"][0]', *fragments)


@pytest.mark.parametrize(
    "invalid",
    [1, {}, {"type": 1}, {"type": "this is invalid"}, {"type": "signedBy", "keyType": "this is invalid"}],
)
def test_requirement_invalid(invalid: object) -> None:
    _requirement_fails(invalid)


@pytest.mark.parametrize("type_name", ["insecureAcceptAnything", "reject"])
def test_simple_requirement_extra_fields(type_name: str) -> None:
    _requirement_fails({"type": type_name, "unknown": "foo"}, ".unknown: unknown key")
    text = _with_duplicate(json.dumps({"type": type_name}), "type", type_name).decode()
    document = '{"default": [' + text + "]}"
    with pytest.raises(ConfigError, match="duplicate member"):
        Policy.from_json(document.encode(), "dup.json")


VALID_SIGNED_BY: Json = _signed_by("GPGKeys", keyData=_b64(b"abc"), signedIdentity={"type": "matchRepoDigestOrExact"})


def _del_key_data_and(**updates: object) -> Edit:
    def edit(v: Json) -> None:
        del v["keyData"]
        v.update(updates)

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.pop("type"), "missing requirement type"),
        (lambda v: v.update(type=1), "expected a string"),
        (lambda v: v.update(type="this is invalid"), "unknown policy requirement type"),
        (lambda v: v.update(unexpected=1), "unknown key"),
        (lambda v: v.pop("keyType"), "keyType: missing"),
        (lambda v: v.update(keyType="this is invalid"), "unrecognized keyType"),
        (lambda v: v.pop("keyData"), "exactly one of keyPath, keyPaths and keyData"),
        (lambda v: v.update(keyPath="/foo/bar", keyPaths=["/1", "/2"]), "got keyPath, keyPaths, keyData"),
        (_del_key_data_and(keyPath="/foo/bar", keyPaths=["/1", "/2"]), "got keyPath, keyPaths"),
        (lambda v: v.update(keyPath="/foo/bar"), "exactly one of"),
        (lambda v: v.update(keyPaths=["/1", "/2"]), "exactly one of"),
        (_del_key_data_and(keyPath=1), ".keyPath: expected a string"),
        (_del_key_data_and(keyPath=""), ".keyPath: must not be empty"),
        (_del_key_data_and(keyPaths=1), ".keyPaths: expected an array"),
        (_del_key_data_and(keyPaths=[1]), ".keyPaths[0]: expected a string"),
        (lambda v: v.update(keyData=1), ".keyData: expected a string"),
        (lambda v: v.update(keyData="this is invalid base64"), ".keyData: invalid base64"),
        (lambda v: v.update(signedIdentity="this is invalid"), ".signedIdentity: expected a JSON object"),
        (lambda v: v.update(signedIdentity=None), ".signedIdentity: expected a JSON object"),
    ],
)
def test_signed_by_break(edit: Edit, fragment: str) -> None:
    _requirement_fails(_edited(VALID_SIGNED_BY, edit), fragment)


@pytest.mark.parametrize("key", ["type", "keyType", "keyData", "signedIdentity"])
def test_signed_by_duplicate_fields(key: str) -> None:
    text = _with_duplicate(json.dumps(VALID_SIGNED_BY), key, VALID_SIGNED_BY[key]).decode()
    with pytest.raises(ConfigError, match="duplicate member"):
        Policy.from_json(('{"default": [' + text + "]}").encode(), "dup.json")


def test_signed_by_variants_and_default_identity() -> None:
    no_identity = _edited(VALID_SIGNED_BY, lambda v: v.pop("signedIdentity"))
    assert _parse({"default": [no_identity]}).default[0] == SignedBy(
        "GPGKeys", MatchRepoDigestOrExact(), key_data=b"abc"
    )
    key_path = _signed_by("GPGKeys", keyPath="/foo/bar")
    assert _parse({"default": [key_path]}).default[0] == SignedBy(
        "GPGKeys", MatchRepoDigestOrExact(), key_path="/foo/bar"
    )
    key_paths = _signed_by("GPGKeys", keyPaths=["/1", "/2"])
    parsed = _parse({"default": [key_paths]}).default[0]
    assert isinstance(parsed, SignedBy)
    assert parsed.key_paths == ("/1", "/2")
    # Go's base64 decoder skips CR/LF inside the string.
    wrapped = _signed_by("GPGKeys", keyData="YW\r\nJj")
    assert _parse({"default": [wrapped]}).default[0] == SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_data=b"abc")


@pytest.mark.parametrize("key_type", ["GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs"])
def test_key_types_recognised(key_type: str) -> None:
    parsed = _parse({"default": [_signed_by(key_type, keyPath="/k")]}).default[0]
    assert isinstance(parsed, SignedBy)
    assert parsed.key_type == key_type


def test_key_type_empty_refused() -> None:
    _requirement_fails(_signed_by("", keyPath="/k"), "unrecognized keyType")


VALID_BASE_LAYER: Json = {
    "type": "signedBaseLayer",
    "baseLayerIdentity": {"type": "exactReference", "dockerReference": "registry.access.redhat.com/rhel7/rhel:7.2.3"},
}


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.pop("type"), "missing"),
        (lambda v: v.update(type=1), "expected a string"),
        (lambda v: v.update(unexpected=1), "unknown key"),
        (lambda v: v.pop("baseLayerIdentity"), "baseLayerIdentity: missing"),
        (lambda v: v.update(baseLayerIdentity="this is invalid"), "expected a JSON object"),
        (lambda v: v.update(baseLayerIdentity=None), "expected a JSON object"),
    ],
)
def test_signed_base_layer_break(edit: Edit, fragment: str) -> None:
    _requirement_fails(_edited(VALID_BASE_LAYER, edit), fragment)


# --- sigstoreSigned (policy_config_sigstore_test.go) -----------------------------------------------------------

VALID_SIGSTORE: Json = {"type": "sigstoreSigned", "keyData": _b64(b"abc"), "signedIdentity": {"type": "matchExact"}}
FULCIO: Json = {"caPath": "/foo/baz", "oidcIssuer": "https://example.com", "subjectEmail": "test@example.com"}
PKI: Json = {"caRootsPath": "/foo/bar", "caIntermediatesPath": "/foo/baz", "subjectHostname": "example.com"}


def _drop_key_data(**updates: object) -> Edit:
    return _del_key_data_and(**updates)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.pop("type"), "missing"),
        (lambda v: v.update(type=1), "expected a string"),
        (lambda v: v.update(type="this is invalid"), "unknown policy requirement type"),
        (lambda v: v.update(unexpected=1), "unknown key"),
        (lambda v: v.pop("keyData"), "got none"),
        (lambda v: v.update(keyPath="/foo/bar"), "got keyPath, keyData"),
        (lambda v: v.update(keyPaths=["/foo/bar", "/foo/baz"]), "got keyPaths, keyData"),
        (lambda v: v.update(keyDatas=[_b64(b"abc"), _b64(b"def")]), "got keyData, keyDatas"),
        (lambda v: v.update(fulcio=FULCIO), "got keyData, fulcio"),
        (lambda v: v.update(pki=PKI), "got keyData, pki"),
        (_drop_key_data(keyPath=1), ".keyPath: expected a string"),
        (_drop_key_data(keyPaths=1), "expected an array"),
        (_drop_key_data(keyPaths={}), "expected an array"),
        (_drop_key_data(keyPaths=[]), "contains no entries"),
        (lambda v: v.update(keyData=1), "expected a string"),
        (lambda v: v.update(keyData="this is invalid base64"), "invalid base64"),
        (_drop_key_data(keyDatas=1), "expected an array"),
        (_drop_key_data(keyDatas={}), "expected an array"),
        (_drop_key_data(keyDatas=[]), "contains no entries"),
        (_drop_key_data(fulcio=1), ".fulcio: expected a JSON object"),
        (_drop_key_data(fulcio={}), "one of caPath and caData"),
        (_drop_key_data(fulcio=None), "expected a JSON object"),
        (_drop_key_data(pki=1), "expected a JSON object"),
        (_drop_key_data(pki={}), "caRootsPath and caRootsData"),
        (_drop_key_data(pki=None), "expected a JSON object"),
        (lambda v: v.update(rekorPublicKeyPath="/foo/baz", rekorPublicKeyData=""), "at most one of rekorPublicKey"),
        (lambda v: v.update(rekorPublicKeyPath=1), "expected a string"),
        (
            lambda v: v.update(rekorPublicKeyPath="/foo/baz", rekorPublicKeyPaths=["/baz/a", "/baz/b"]),
            "at most one of",
        ),
        (lambda v: v.update(rekorPublicKeyPaths=1), "expected an array"),
        (lambda v: v.update(rekorPublicKeyPaths={}), "expected an array"),
        (lambda v: v.update(rekorPublicKeyPaths=[]), "contains no entries"),
        (lambda v: v.update(rekorPublicKeyData=1), "expected a string"),
        (lambda v: v.update(rekorPublicKeyData="this is invalid base64"), "invalid base64"),
        (lambda v: v.update(rekorPublicKeyData="", rekorPublicKeyDatas=[_b64(b"a")]), "at most one of"),
        (lambda v: v.update(rekorPublicKeyDatas=1), "expected an array"),
        (lambda v: v.update(rekorPublicKeyDatas={}), "expected an array"),
        (lambda v: v.update(rekorPublicKeyDatas=[]), "contains no entries"),
        (lambda v: v.update(signedIdentity="this is invalid"), "expected a JSON object"),
        (lambda v: v.update(signedIdentity=None), "expected a JSON object"),
        (_drop_key_data(fulcio=FULCIO), "fulcio requires one of rekorPublicKeyPath"),
        (_drop_key_data(pki=PKI, rekorPublicKeyPath="/r"), "not supported with pki"),
    ],
)
def test_sigstore_signed_break(edit: Edit, fragment: str) -> None:
    _requirement_fails(_edited(VALID_SIGSTORE, edit), fragment)


def test_sigstore_signed_variants() -> None:
    def one(requirement: Json) -> object:
        return _parse({"default": [requirement]}).default[0]

    base = {"type": "sigstoreSigned"}
    assert one({**base, "keyData": _b64(b"abc")}) == SigstoreSigned(MatchRepoDigestOrExact(), key_data=b"abc")
    assert one({**base, "keyPaths": ["/a", "/b"]}) == SigstoreSigned(MatchRepoDigestOrExact(), key_paths=("/a", "/b"))
    assert one({**base, "keyDatas": [_b64(b"a"), _b64(b"b")]}) == SigstoreSigned(
        MatchRepoDigestOrExact(), key_datas=(b"a", b"b")
    )
    keyless = one({**base, "fulcio": FULCIO, "rekorPublicKeyPath": "/r", "signedIdentity": {"type": "matchExact"}})
    assert keyless == SigstoreSigned(
        MatchExact(),
        fulcio=Fulcio("https://example.com", "test@example.com", ca_path="/foo/baz"),
        rekor_public_key_path="/r",
    )
    assert isinstance(keyless, SigstoreSigned)
    assert keyless.has_rekor
    with_ca_data = one(
        {**base, "fulcio": {**_without(FULCIO, "caPath"), "caData": _b64(b"PEM")}, "rekorPublicKeyData": _b64(b"R")}
    )
    assert isinstance(with_ca_data, SigstoreSigned)
    assert with_ca_data.fulcio == Fulcio("https://example.com", "test@example.com", ca_data=b"PEM")
    assert with_ca_data.rekor_public_key_data == b"R"
    pki = one({**base, "pki": PKI})
    assert isinstance(pki, SigstoreSigned)
    assert pki.pki == Pki(ca_roots_path="/foo/bar", ca_intermediates_path="/foo/baz", subject_hostname="example.com")
    # An empty keyPath counts as absent, as in containers/image.
    _requirement_fails({**base, "keyPath": ""}, "got none")


def test_sigstore_key_data_is_base64_not_raw_pem() -> None:
    # image-rs takes keyData as raw PEM text; containers/image (and we) require base64.
    _requirement_fails({"type": "sigstoreSigned", "keyData": "-----BEGIN PUBLIC KEY-----"}, "invalid base64")


def _without(document: Json, key: str) -> Json:
    return {k: v for k, v in document.items() if k != key}


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.update(unexpected=1), "unknown key"),
        (lambda v: v.pop("caPath"), "one of caPath and caData"),
        (lambda v: v.update(caData=""), "cannot be used simultaneously"),
        (lambda v: v.update(caPath=1), "expected a string"),
        (lambda v: v.update(oidcIssuer=1), "expected a string"),
        (lambda v: v.pop("oidcIssuer"), "oidcIssuer: not specified"),
        (lambda v: v.update(subjectEmail=1), "expected a string"),
        (lambda v: v.pop("subjectEmail"), "subjectEmail: not specified"),
    ],
)
def test_fulcio_break(edit: Edit, fragment: str) -> None:
    requirement = {"type": "sigstoreSigned", "fulcio": _edited(FULCIO, edit), "rekorPublicKeyPath": "/r"}
    _requirement_fails(requirement, ".fulcio", fragment)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda v: v.update(unexpected=1), "unknown key"),
        (lambda v: v.pop("caRootsPath"), "caRootsPath and caRootsData"),
        (lambda v: v.update(caRootsData=""), "caRootsPath and caRootsData"),
        (lambda v: v.update(caRootsPath=1), "expected a string"),
        (lambda v: v.update(caIntermediatesData=""), "cannot be used simultaneously"),
        (lambda v: v.update(caIntermediatesPath=1), "expected a string"),
        (lambda v: v.update(subjectHostname=1), "expected a string"),
        (lambda v: v.update(subjectEmail=1), "expected a string"),
        (lambda v: v.pop("subjectHostname"), "subjectEmail and subjectHostname"),
        (lambda v: v.update(caRootsData="this is invalid base64"), "invalid base64"),
    ],
)
def test_pki_break(edit: Edit, fragment: str) -> None:
    _requirement_fails({"type": "sigstoreSigned", "pki": _edited(PKI, edit)}, ".pki", fragment)


# --- signedIdentity (TestNewPolicyReferenceMatchFromJSON and the PRM*UnmarshalJSON tests) -----------------------


@pytest.mark.parametrize(
    ("identity", "fragment"),
    [
        (1, "expected a JSON object"),
        ({}, "missing signedIdentity type"),
        ({"type": 1}, "expected a string"),
        ({"type": "this is invalid"}, "unknown policy reference match type"),
        ({"type": "exactReference", "dockerReference": ""}, "signedIdentity"),
        ({"type": "matchExact", "unknown": "foo"}, "unknown key"),
        ({"type": "matchRepoDigestOrExact", "unknown": "foo"}, "unknown key"),
        ({"type": "matchRepository", "unknown": "foo"}, "unknown key"),
        ({"type": "exactReference"}, "dockerReference: missing"),
        ({"type": "exactReference", "dockerReference": 1}, "expected a string"),
        ({"type": "exactReference", "dockerReference": "library/busybox"}, "neither a tag nor a digest"),
        ({"type": "exactReference", "dockerReference": "INVALIDUPPERCASE:latest"}, "lowercase"),
        ({"type": "exactReference", "dockerReference": "x:1", "unexpected": 1}, "unknown key"),
        ({"type": "exactRepository"}, "dockerRepository: missing"),
        ({"type": "exactRepository", "dockerRepository": 1}, "expected a string"),
        ({"type": "exactRepository", "dockerRepository": "INVALIDUPPERCASE"}, "signedIdentity"),
        ({"type": "remapIdentity", "signedPrefix": "docker.io/library"}, "prefix: missing"),
        ({"type": "remapIdentity", "prefix": 1, "signedPrefix": "docker.io/library"}, "expected a string"),
        ({"type": "remapIdentity", "prefix": "this is invalid", "signedPrefix": "docker.io"}, "is not valid"),
        ({"type": "remapIdentity", "prefix": "example.com/docker-library"}, "signedPrefix: missing"),
        ({"type": "remapIdentity", "prefix": "example.com", "signedPrefix": "this is invalid"}, "is not valid"),
        ({"type": "remapIdentity", "prefix": "example.com/UPPERCASEISINVALID", "signedPrefix": "a.io"}, "not valid"),
    ],
)
def test_signed_identity_invalid(identity: object, fragment: str) -> None:
    _requirement_fails(_signed_by("GPGKeys", keyPath="/k", signedIdentity=identity), fragment)


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"type": "matchExact"}, MatchExact()),
        ({"type": "matchRepoDigestOrExact"}, MatchRepoDigestOrExact()),
        ({"type": "matchRepository"}, MatchRepository()),
        (
            {"type": "exactReference", "dockerReference": "library/busybox:latest"},
            ExactReference("library/busybox:latest"),
        ),
        (
            {"type": "exactRepository", "dockerRepository": "library/busybox:latest"},
            ExactRepository("library/busybox:latest"),
        ),
        (
            {"type": "remapIdentity", "prefix": "example.com/docker-library", "signedPrefix": "docker.io/library"},
            RemapIdentity("example.com/docker-library", "docker.io/library"),
        ),
    ],
)
def test_signed_identity_valid(identity: Json, expected: object) -> None:
    parsed = _parse({"default": [_signed_by("GPGKeys", keyPath="/k", signedIdentity=identity)]}).default[0]
    assert isinstance(parsed, SignedBy)
    assert parsed.signed_identity == expected


def test_error_path_names_nested_location() -> None:
    document = _policy_with(_signed_by("GPGKeys", keyPath=7))
    error = _fails(document)
    assert 'transports.docker["quay.io/x"][0].keyPath: expected a string, got number' in str(error)
