"""containers-policy.json: a typed model and a paranoid parser (containers/image ``signature/policy_config.go``).

The parser is as strict as containers/image's ``ParanoidUnmarshalJSONObject``: unknown keys, duplicate keys,
wrong types and missing mandatory fields are a :class:`~cocoguest.errors.ConfigError` naming the source and the
JSON path (``transports.docker["quay.io/x"][0].keyPath``).

Differences from containers/image, all fail-closed:
    * ``keyType`` values other than ``GPGKeys`` parse (``signedByGPGKeys``, ``X509Certificates``,
      ``signedByX509CAs``: containers/image parses them too) and are refused at evaluation;
      ``signedBaseLayer`` and ``sigstoreSigned.pki`` likewise.
    * An empty requirement list is a parse error as in containers/image; a programmatically built empty list is
      rejected at evaluation.
    * ``keyPaths`` entries must be non-empty strings.

``keyData``/``keyDatas``/``caData``/``rekorPublicKeyData(s)`` are base64 (Go ``[]byte`` JSON), also for
``sigstoreSigned`` where image-rs takes ``keyData`` as raw PEM text: a raw PEM there is an error here, not a key.

Invariants:
    * A :class:`Policy` always satisfies every structural rule above; evaluation never re-validates.
    * ``Policy.raw`` is exactly the bytes given; :meth:`Policy.digest` hashes them.
    * No IO: key paths are names for a :class:`~cocoguest.signature.policy.types.ResourceReader`, read at evaluation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal, TypeVar

from cocoguest import jsonutil
from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.signature.policy.identity import (
    ExactReference,
    ExactRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ReferenceFormatError,
    RemapIdentity,
    SignedIdentity,
)
from cocoguest.signature.policy.scopes import go_clean_path

KEY_TYPES: Final = frozenset({"GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs"})
"""``signedBy.keyType`` values containers/image accepts at parse time; only ``GPGKeys`` is implemented."""
_PATH_SCOPED_TRANSPORTS: Final = frozenset({"dir", "oci", "oci-archive"})
"""Transports whose scopes containers/image validates as clean absolute paths other than ``/``."""


@dataclass(frozen=True, slots=True)
class InsecureAcceptAnything:
    """Accept without any check."""

    type_name: ClassVar[str] = "insecureAcceptAnything"


@dataclass(frozen=True, slots=True)
class Reject:
    """Reject unconditionally."""

    type_name: ClassVar[str] = "reject"


@dataclass(frozen=True, slots=True)
class SignedBy:
    """A GPG simple-signing signature by one of the given keys. Exactly one key source is set."""

    key_type: str
    signed_identity: SignedIdentity
    key_path: str | None = None
    key_paths: tuple[str, ...] | None = None
    key_data: bytes | None = None
    type_name: ClassVar[str] = "signedBy"


@dataclass(frozen=True, slots=True)
class SignedBaseLayer:
    """Parsed for compatibility; refused at evaluation (containers/image never implemented it)."""

    base_layer_identity: SignedIdentity
    type_name: ClassVar[str] = "signedBaseLayer"


@dataclass(frozen=True, slots=True)
class Fulcio:
    """Keyless trust root: a Fulcio CA (exactly one of path/data), the OIDC issuer and the subject e-mail."""

    oidc_issuer: str
    subject_email: str
    ca_path: str | None = None
    ca_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Pki:
    """``sigstoreSigned.pki``: parsed, refused at evaluation."""

    ca_roots_path: str | None = None
    ca_roots_data: bytes | None = None
    ca_intermediates_path: str | None = None
    ca_intermediates_data: bytes | None = None
    subject_email: str | None = None
    subject_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class SigstoreSigned:
    """A cosign signature. Exactly one of the key sources / ``fulcio`` / ``pki``; at most one Rekor source."""

    signed_identity: SignedIdentity
    key_path: str | None = None
    key_paths: tuple[str, ...] | None = None
    key_data: bytes | None = None
    key_datas: tuple[bytes, ...] | None = None
    fulcio: Fulcio | None = None
    pki: Pki | None = None
    rekor_public_key_path: str | None = None
    rekor_public_key_paths: tuple[str, ...] | None = None
    rekor_public_key_data: bytes | None = None
    rekor_public_key_datas: tuple[bytes, ...] | None = None
    type_name: ClassVar[str] = "sigstoreSigned"

    @property
    def has_rekor(self) -> bool:
        """Whether a Rekor public key source is configured (then a Rekor SET is required)."""
        return any(
            x is not None
            for x in (
                self.rekor_public_key_path,
                self.rekor_public_key_paths,
                self.rekor_public_key_data,
                self.rekor_public_key_datas,
            )
        )


Requirement = InsecureAcceptAnything | Reject | SignedBy | SignedBaseLayer | SigstoreSigned
"""Any policy requirement."""


@dataclass(frozen=True, slots=True)
class FulcioTrustRoot:
    """Loaded keyless trust material."""

    ca_pem: bytes
    """One or more PEM certificates of the Fulcio CA."""
    oidc_issuer: str
    subject_email: str


@dataclass(frozen=True, slots=True)
class SigstoreKeys:
    """Key material for one ``sigstoreSigned`` requirement, loaded by the evaluator.

    Exactly one of ``public_keys`` (non-empty) and ``fulcio`` is set. ``rekor_public_keys`` is non-empty when the
    policy names Rekor keys: then a valid Rekor SET is required (always with ``fulcio``).
    """

    public_keys: tuple[bytes, ...] = ()
    """PEM public keys (ECDSA P-256, RSA, Ed25519)."""
    fulcio: FulcioTrustRoot | None = None
    rekor_public_keys: tuple[bytes, ...] = ()
    """PEM Rekor public keys."""


@dataclass(frozen=True)
class Policy:
    """A parsed containers-policy.json. Not hashable (holds mappings)."""

    default: tuple[Requirement, ...]
    transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]]
    raw: bytes = field(repr=False, default=b"")
    source: str = "<policy>"

    @classmethod
    def from_json(cls, data: bytes, source: str, *, limits: Limits = DEFAULT_LIMITS) -> Policy:
        """Parse ``data``; ``source`` names it in errors (a path or URI); ``limits`` caps its size
        (``max_policy_bytes``), its JSON and the references it names.

        Raises:
            ConfigError: invalid JSON or an invalid policy; the message names ``source`` and the JSON path.
        """
        if len(data) > limits.max_policy_bytes:
            msg = f"policy {source}: larger than {limits.max_policy_bytes} bytes (max_policy_bytes)"
            raise ConfigError(msg)
        # SECURITY: duplicate keys, NaN and over-deep nesting are refused by the one strict parser.
        document = jsonutil.loads(data, f"policy {source}", ConfigError, limits=limits)
        parser = _Parser(source, limits)
        default, transports = parser.policy(document)
        return cls(default, transports, data, source)

    def digest(self) -> str:
        """``sha256:<hex>`` of the policy bytes as given (recorded in the store with each decision)."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()


# --- parsing -------------------------------------------------------------------------------------------------


_T = TypeVar("_T")
_ValueParser = Callable[[object, str], _T]


def _key_path(parent: str, key: str) -> str:
    if key.isidentifier():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key)}]"


class _Parser:
    def __init__(self, source: str, limits: Limits) -> None:
        self.source = source
        self.limits = limits

    def error(self, path: str, message: str) -> ConfigError:
        where = f"{path}: " if path else ""
        return ConfigError(f"policy {self.source}: {where}{message}")

    # generic JSON shape checks

    def obj(self, value: object, path: str, allowed: frozenset[str] | None) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a JSON object, got {_json_type(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.error(_key_path(path, key), "unknown key")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_json_type(value)}")
        return value

    def non_empty_string(self, value: object, path: str) -> str:
        text = self.string(value, path)
        if not text:
            raise self.error(path, "must not be empty")
        return text

    def string_list(self, value: object, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of strings, got {_json_type(value)}")
        return tuple(self.non_empty_string(item, f"{path}[{i}]") for i, item in enumerate(value))

    def base64(self, value: object, path: str) -> bytes:
        text = self.string(value, path)
        try:
            # Go's base64.StdEncoding (encoding/json []byte) skips CR and LF; everything else must be valid.
            return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as e:
            raise self.error(path, f"invalid base64: {e}") from e

    def base64_list(self, value: object, path: str) -> tuple[bytes, ...]:
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of base64 strings, got {_json_type(value)}")
        return tuple(self.base64(item, f"{path}[{i}]") for i, item in enumerate(value))

    # policy structure

    def policy(self, document: object) -> tuple[tuple[Requirement, ...], dict[str, dict[str, tuple[Requirement, ...]]]]:
        top = self.obj(document, "", frozenset({"default", "transports"}))
        if "default" not in top:
            raise self.error("default", "missing (a default policy is mandatory)")
        default = self.requirements(top["default"], "default")
        transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
        if "transports" in top:
            transports_obj = self.obj(top["transports"], "transports", None)
            for transport, scopes_value in transports_obj.items():
                transports[transport] = self.scopes(transport, scopes_value, _key_path("transports", transport))
        return default, transports

    def scopes(self, transport: str, value: object, path: str) -> dict[str, tuple[Requirement, ...]]:
        scopes_obj = self.obj(value, path, None)
        out: dict[str, tuple[Requirement, ...]] = {}
        for scope, requirements in scopes_obj.items():
            scope_path = f"{path}[{json.dumps(scope)}]"
            if scope and transport in _PATH_SCOPED_TRANSPORTS:
                self.check_path_scope(scope, scope_path)
            out[scope] = self.requirements(requirements, scope_path)
        return out

    def check_path_scope(self, scope: str, path: str) -> None:
        if not scope.startswith("/"):
            raise self.error(path, "scope must be an absolute path")
        if scope == "/":
            raise self.error(path, 'scope "/" is not allowed; use the default scope ""')
        cleaned = go_clean_path(scope)
        if cleaned != scope:
            raise self.error(path, f"scope is not a canonical path (use {cleaned!r})")

    def requirements(self, value: object, path: str) -> tuple[Requirement, ...]:
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of requirements, got {_json_type(value)}")
        if not value:
            raise self.error(path, "the list of requirements must not be empty")
        return tuple(self.requirement(item, f"{path}[{i}]") for i, item in enumerate(value))

    def type_field(self, value: object, path: str, kind: str) -> str:
        raw = self.obj(value, path, None)
        if "type" not in raw:
            raise self.error(_key_path(path, "type"), f"missing {kind} type")
        return self.string(raw["type"], _key_path(path, "type"))

    def requirement(self, value: object, path: str) -> Requirement:
        type_name = self.type_field(value, path, "requirement")
        parse = _REQUIREMENT_PARSERS.get(type_name)
        if parse is None:
            raise self.error(_key_path(path, "type"), f"unknown policy requirement type {type_name!r}")
        return parse(self, value, path)

    def insecure_accept_anything(self, value: object, path: str) -> Requirement:
        self.obj(value, path, frozenset({"type"}))
        return InsecureAcceptAnything()

    def reject(self, value: object, path: str) -> Requirement:
        self.obj(value, path, frozenset({"type"}))
        return Reject()

    def signed_by(self, value: object, path: str) -> Requirement:
        raw = self.obj(value, path, frozenset({"type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"}))
        if "keyType" not in raw:
            raise self.error(_key_path(path, "keyType"), 'missing (use "GPGKeys")')
        key_type = self.string(raw["keyType"], _key_path(path, "keyType"))
        if key_type not in KEY_TYPES:
            raise self.error(_key_path(path, "keyType"), f"unrecognized keyType {key_type!r}")
        sources: list[str] = [k for k in ("keyPath", "keyPaths", "keyData") if k in raw]
        if len(sources) != 1:
            raise self.error(
                path, f"exactly one of keyPath, keyPaths and keyData must be specified, got {_names(sources)}"
            )
        key_path = self.non_empty_string(raw["keyPath"], _key_path(path, "keyPath")) if "keyPath" in raw else None
        key_paths = self.string_list(raw["keyPaths"], _key_path(path, "keyPaths")) if "keyPaths" in raw else None
        key_data = self.base64(raw["keyData"], _key_path(path, "keyData")) if "keyData" in raw else None
        identity = self.identity_or_default(raw, path)
        return SignedBy(key_type, identity, key_path, key_paths, key_data)

    def signed_base_layer(self, value: object, path: str) -> Requirement:
        raw = self.obj(value, path, frozenset({"type", "baseLayerIdentity"}))
        if "baseLayerIdentity" not in raw:
            raise self.error(_key_path(path, "baseLayerIdentity"), "missing")
        return SignedBaseLayer(self.identity(raw["baseLayerIdentity"], _key_path(path, "baseLayerIdentity")))

    def sigstore_signed(self, value: object, path: str) -> Requirement:
        raw = self.obj(value, path, _SIGSTORE_KEYS)

        def opt(key: str, parse: _ValueParser[_T]) -> _T | None:
            return parse(raw[key], _key_path(path, key)) if key in raw else None

        key_path = opt("keyPath", self.string) or None  # "" counts as absent, as in containers/image
        key_paths = opt("keyPaths", self.string_list)
        if key_paths is not None and not key_paths:
            raise self.error(_key_path(path, "keyPaths"), "contains no entries")
        key_data = opt("keyData", self.base64)
        key_datas = opt("keyDatas", self.base64_list)
        if key_datas is not None and not key_datas:
            raise self.error(_key_path(path, "keyDatas"), "contains no entries")
        fulcio = opt("fulcio", self.fulcio)
        pki = opt("pki", self.pki)
        present = [
            name
            for name, v in (
                ("keyPath", key_path),
                ("keyPaths", key_paths),
                ("keyData", key_data),
                ("keyDatas", key_datas),
                ("fulcio", fulcio),
                ("pki", pki),
            )
            if v is not None
        ]
        if len(present) != 1:
            raise self.error(
                path,
                f"exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be specified, "
                f"got {_names(present)}",
            )
        rekor_path = opt("rekorPublicKeyPath", self.string) or None
        rekor_paths = opt("rekorPublicKeyPaths", self.string_list)
        if rekor_paths is not None and not rekor_paths:
            raise self.error(_key_path(path, "rekorPublicKeyPaths"), "contains no entries")
        rekor_data = opt("rekorPublicKeyData", self.base64)
        rekor_datas = opt("rekorPublicKeyDatas", self.base64_list)
        if rekor_datas is not None and not rekor_datas:
            raise self.error(_key_path(path, "rekorPublicKeyDatas"), "contains no entries")
        rekor = [v for v in (rekor_path, rekor_paths, rekor_data, rekor_datas) if v is not None]
        if len(rekor) > 1:
            raise self.error(
                path,
                "at most one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData and "
                "rekorPublicKeyDatas can be used",
            )
        if fulcio is not None and not rekor:
            raise self.error(
                path,
                "fulcio requires one of rekorPublicKeyPath, rekorPublicKeyPaths, "
                "rekorPublicKeyData and rekorPublicKeyDatas",
            )
        if pki is not None and rekor:
            raise self.error(path, "rekorPublicKey* is not supported with pki")
        identity = self.identity_or_default(raw, path)
        return SigstoreSigned(
            identity,
            key_path=key_path,
            key_paths=key_paths,
            key_data=key_data,
            key_datas=key_datas,
            fulcio=fulcio,
            pki=pki,
            rekor_public_key_path=rekor_path,
            rekor_public_key_paths=rekor_paths,
            rekor_public_key_data=rekor_data,
            rekor_public_key_datas=rekor_datas,
        )

    def fulcio(self, value: object, path: str) -> Fulcio:
        raw = self.obj(value, path, frozenset({"caPath", "caData", "oidcIssuer", "subjectEmail"}))
        ca_path = (self.string(raw["caPath"], _key_path(path, "caPath")) or None) if "caPath" in raw else None
        ca_data = self.base64(raw["caData"], _key_path(path, "caData")) if "caData" in raw else None
        if ca_path is not None and ca_data is not None:
            raise self.error(path, "caPath and caData cannot be used simultaneously")
        if ca_path is None and ca_data is None:
            raise self.error(path, "one of caPath and caData must be specified")
        issuer = self.string(raw.get("oidcIssuer", ""), _key_path(path, "oidcIssuer"))
        if not issuer:
            raise self.error(_key_path(path, "oidcIssuer"), "not specified")
        email = self.string(raw.get("subjectEmail", ""), _key_path(path, "subjectEmail"))
        if not email:
            raise self.error(_key_path(path, "subjectEmail"), "not specified")
        return Fulcio(issuer, email, ca_path, ca_data)

    def pki(self, value: object, path: str) -> Pki:
        keys = ("caRootsPath", "caRootsData", "caIntermediatesPath", "caIntermediatesData")
        raw = self.obj(value, path, frozenset({*keys, "subjectEmail", "subjectHostname"}))
        roots_path = self.string(raw["caRootsPath"], _key_path(path, "caRootsPath")) if "caRootsPath" in raw else None
        roots_data = self.base64(raw["caRootsData"], _key_path(path, "caRootsData")) if "caRootsData" in raw else None
        inter_path = (
            self.string(raw["caIntermediatesPath"], _key_path(path, "caIntermediatesPath"))
            if "caIntermediatesPath" in raw
            else None
        )
        inter_data = (
            self.base64(raw["caIntermediatesData"], _key_path(path, "caIntermediatesData"))
            if "caIntermediatesData" in raw
            else None
        )
        if bool(roots_path) == (roots_data is not None):
            raise self.error(path, "exactly one of caRootsPath and caRootsData must be specified")
        if inter_path and inter_data is not None:
            raise self.error(path, "caIntermediatesPath and caIntermediatesData cannot be used simultaneously")
        email = self.string(raw.get("subjectEmail", ""), _key_path(path, "subjectEmail"))
        hostname = self.string(raw.get("subjectHostname", ""), _key_path(path, "subjectHostname"))
        if not email and not hostname:
            raise self.error(path, "at least one of subjectEmail and subjectHostname must be specified")
        return Pki(roots_path or None, roots_data, inter_path or None, inter_data, email or None, hostname or None)

    # signedIdentity

    def identity_or_default(self, raw: dict[str, object], path: str) -> SignedIdentity:
        if "signedIdentity" not in raw:
            return MatchRepoDigestOrExact()  # containers/image's default for signedBy and sigstoreSigned
        return self.identity(raw["signedIdentity"], _key_path(path, "signedIdentity"))

    def identity(self, value: object, path: str) -> SignedIdentity:
        type_name = self.type_field(value, path, "signedIdentity")
        fields = _IDENTITY_FIELDS.get(type_name)
        if fields is None:
            raise self.error(_key_path(path, "type"), f"unknown policy reference match type {type_name!r}")
        raw = self.obj(value, path, frozenset({"type", *fields}))
        args: list[str] = []
        for name in fields:
            if name not in raw:
                raise self.error(_key_path(path, name), "missing")
            args.append(self.string(raw[name], _key_path(path, name)))
        rule: SignedIdentity
        match type_name:
            case "matchExact":
                rule = MatchExact()
            case "matchRepoDigestOrExact":
                rule = MatchRepoDigestOrExact()
            case "matchRepository":
                rule = MatchRepository()
            case "exactReference":
                rule = ExactReference(args[0])
            case "exactRepository":
                rule = ExactRepository(args[0])
            case _:
                rule = RemapIdentity(args[0], args[1])
        try:
            rule.validate(limits=self.limits)
        except ReferenceFormatError as e:
            raise self.error(path, str(e)) from e
        return rule


_SIGSTORE_KEYS: Final = frozenset(
    {
        "type",
        "keyPath",
        "keyPaths",
        "keyData",
        "keyDatas",
        "fulcio",
        "pki",
        "rekorPublicKeyPath",
        "rekorPublicKeyPaths",
        "rekorPublicKeyData",
        "rekorPublicKeyDatas",
        "signedIdentity",
    }
)

_REQUIREMENT_PARSERS: Final[dict[str, Callable[[_Parser, object, str], Requirement]]] = {
    "insecureAcceptAnything": _Parser.insecure_accept_anything,
    "reject": _Parser.reject,
    "signedBy": _Parser.signed_by,
    "signedBaseLayer": _Parser.signed_base_layer,
    "sigstoreSigned": _Parser.sigstore_signed,
}

_IDENTITY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "matchExact": (),
    "matchRepoDigestOrExact": (),
    "matchRepository": (),
    "exactReference": ("dockerReference",),
    "exactRepository": ("dockerRepository",),
    "remapIdentity": ("prefix", "signedPrefix"),
}


def _names(keys: list[str]) -> str:
    return ", ".join(keys) if keys else "none"


def _json_type(value: object) -> str:
    kind: Literal["object", "array", "string", "boolean", "null", "number"]
    if isinstance(value, dict):
        kind = "object"
    elif isinstance(value, list):
        kind = "array"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, bool):
        kind = "boolean"
    elif value is None:
        kind = "null"
    else:
        kind = "number"
    return kind
