"""Sigstore (cosign) cryptography: payload signatures, Fulcio certificates, Rekor SETs and cosign private keys.

What is verified, and how (facts from containers/image ``signature/internal`` and ``signature/fulcio_cert.go``,
sigstore/cosign ``pkg/cosign/keys.go``):

* Payload signatures (the ``dev.cosignproject.cosign/signature`` annotation, standard base64) are checked
  with the public key over the raw payload bytes: ECDSA (P-256, P-384, P-521; ASN.1 DER signature) over
  SHA-256, the hash containers/image hard-codes; for P-384 and P-521 the curve's own hash (SHA-384, SHA-512,
  what newer cosign uses by default) is accepted too. RSA (2048 to 16384 bits): PKCS#1 v1.5 with SHA-256
  only; RSA-PSS is NOT accepted (neither containers/image nor cosign's default verifiers accept it).
  Ed25519: pure Ed25519 over the payload.
* Fulcio certificates: the leaf must chain, through the untrusted intermediates of the
  ``dev.sigstore.cosign/chain`` annotation (its last certificate, the root, is ignored), to one of the
  configured CA certificates, at the Rekor SET's ``integratedTime`` (not now: Fulcio certificates live ten
  minutes); its extended key usage must allow code signing; its OIDC issuer extension
  (1.3.6.1.4.1.57264.1.1, raw string, or 1.3.6.1.4.1.57264.1.8, DER string; both must agree if both are
  present) must equal the configured issuer and one of its SAN e-mail addresses the configured one.
* Rekor SETs (``dev.sigstore.cosign/bundle``): ``{"SignedEntryTimestamp": b64, "Payload": {"body": b64,
  "integratedTime": int, "logIndex": int, "logID": str}}`` with exactly these members; the SET is an ECDSA
  signature by a configured Rekor key over SHA-256 of the RFC 8785 canonical JSON of ``Payload``; the body
  must be a ``hashedrekord`` 0.0.1 entry naming the same public key or certificate (DER compared), the same
  signature bytes, and the SHA-256 of the payload.
* Cosign private keys: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` / ``ENCRYPTED COSIGN PRIVATE KEY`` holding
  JSON ``{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"}, "cipher": {"name":
  "nacl/secretbox", "nonce"}, "ciphertext"}`` (secure-systems-lab's ``encrypted`` format) around a PKCS#8
  DER key. Unencrypted PKCS#8/PKCS#1/SEC1 PEM keys are accepted too (for keys made with openssl).

Invariants:
    * Every function here either returns a verified result or raises :class:`SignatureError` (for untrusted
      signature material) or :class:`ConfigError` (for keys and roots the owner configured). Nothing from
      an annotation is trusted before the check that covers it passed.
    * JSON from signatures is parsed strictly: duplicate members, unknown or missing members, non-integer
      numbers and NaN/Infinity are rejected.
    * Only this module (of the sigstore code) imports ``cryptography.hazmat`` and ``nacl``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict

import nacl.exceptions
import nacl.secret
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509 import verification as x509_verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from cocoguest import jsonutil
from cocoguest.crypto import der
from cocoguest.errors import ConfigError, ProtocolError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits

# --- limits (lead: candidates for limits.py) -----------------------------------------------------------

# Caps on key files, scrypt cost and certificate chains are fields of Limits (max_private_key_bytes,
# max_scrypt_memory_bytes, max_scrypt_parallelism, max_chain_certificates, max_chain_depth), passed in.
#: Rekor integers go through IEEE doubles in the canonicaliser; larger values would not round-trip.
MAX_JSON_SAFE_INTEGER: Final = 2**53
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 16384

# --- constants ----------------------------------------------------------------------------------------

ENCRYPTED_SIGSTORE_KEY_PEM: Final = "ENCRYPTED SIGSTORE PRIVATE KEY"
ENCRYPTED_COSIGN_KEY_PEM: Final = "ENCRYPTED COSIGN PRIVATE KEY"
OID_FULCIO_ISSUER_V1: Final = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_FULCIO_ISSUER_V2: Final = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
REKOR_HASHEDREKORD_KIND: Final = "hashedrekord"
REKOR_HASHEDREKORD_VERSION: Final = "0.0.1"

_DEFAULT_SCRYPT_N: Final = 32768
_DEFAULT_SCRYPT_R: Final = 8
_DEFAULT_SCRYPT_P: Final = 1
_SALT_BYTES: Final = 32
_SECRETBOX_KEY_BYTES: Final = nacl.secret.SecretBox.KEY_SIZE
_SECRETBOX_NONCE_BYTES: Final = nacl.secret.SecretBox.NONCE_SIZE
_ASN1_STRING_TAGS: Final = frozenset({0x0C, 0x13, 0x16})  # UTF8String, PrintableString, IA5String
_PEM_BLOCK: Final = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----[ \t]*(?:\r?\n|$)",
    re.DOTALL,
)
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_CURVE_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}

KeyKind = Literal["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
_PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


# --- small strict parsers -------------------------------------------------------------------------------


def exact_members(value: object, names: Sequence[str], what: str) -> dict[str, object]:
    """``value`` as a JSON object with exactly the members ``names``.

    Raises:
        ValueError: not an object, or a member is missing or unknown.
    """
    if not isinstance(value, dict):
        msg = f"{what}: expected a JSON object"
        raise ValueError(msg)
    missing = [name for name in names if name not in value]
    unknown = sorted(set(value) - set(names))
    if missing:
        msg = f"{what}: member {missing[0]!r} missing"
        raise ValueError(msg)
    if unknown:
        msg = f"{what}: unknown member {unknown[0]!r}"
        raise ValueError(msg)
    return value


def decode_base64(text: object, what: str) -> bytes:
    """Standard base64 with padding, nothing else (Go's ``base64.StdEncoding``).

    Raises:
        SignatureError: not a string of valid base64.
    """
    if not isinstance(text, str):
        msg = f"{what}: expected a base64 string"
        raise SignatureError(msg)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        msg = f"{what}: invalid base64 ({e})"
        raise SignatureError(msg) from e


def pem_blocks(data: bytes, what: str) -> list[tuple[str, bytes]]:
    """The ``(type, DER)`` of every PEM block in ``data``; anything but whitespace around them is an error.

    Raises:
        ValueError: malformed PEM or non-PEM bytes between blocks.
    """
    blocks: list[tuple[str, bytes]] = []
    pos = 0
    for match in _PEM_BLOCK.finditer(data):
        if data[pos : match.start()].strip():
            msg = f"{what}: unexpected data outside PEM blocks"
            raise ValueError(msg)
        body = b"".join(line.strip() for line in match.group(2).splitlines())
        try:
            der_bytes = base64.b64decode(body, validate=True)
        except binascii.Error as e:
            msg = f"{what}: invalid base64 in PEM block {match.group(1).decode()!r} ({e})"
            raise ValueError(msg) from e
        blocks.append((match.group(1).decode("ascii"), der_bytes))
        pos = match.end()
    if data[pos:].strip():
        msg = f"{what}: unexpected data outside PEM blocks"
        raise ValueError(msg)
    return blocks


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) form of a JSON value made of objects, arrays, strings, integers, booleans and null.

    For these types JCS equals compact JSON with members sorted and only ``"``, ``\\`` and control
    characters escaped (lower-case ``\\u00xx``), which is what :func:`json.dumps` writes without
    ``ensure_ascii``. Member names here are ASCII, so code-point order equals JCS's UTF-16 order.

    Raises:
        ValueError: a float, an integer beyond 2**53, or a string that is not valid Unicode.
    """

    def check(item: object) -> None:
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return
        if isinstance(item, int):
            if abs(item) > MAX_JSON_SAFE_INTEGER:
                msg = f"integer {item} cannot be canonicalised exactly"
                raise ValueError(msg)
            return
        if isinstance(item, dict):
            for key, child in item.items():
                if any(ord(c) > 0x7F for c in key):
                    msg = "non-ASCII member names are not supported"
                    raise ValueError(msg)
                check(child)
            return
        if isinstance(item, list):
            for child in item:
                check(child)
            return
        msg = f"unsupported JSON value of type {type(item).__name__}"
        raise ValueError(msg)

    check(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        msg = "string is not valid Unicode (lone surrogate)"
        raise ValueError(msg) from e


# --- public keys --------------------------------------------------------------------------------------


def _describe_key(key: _PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return "Ed25519"


def _check_public_key(key: object, source: str) -> _PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVE_NAMES:
            msg = f"{source}: EC curve {key.curve.name} is not supported (P-256, P-384, P-521)"
            raise ConfigError(msg)
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            msg = f"{source}: RSA key of {key.key_size} bits (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
            raise ConfigError(msg)
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    msg = f"{source}: unsupported public key type {type(key).__name__} (ECDSA, RSA or Ed25519)"
    raise ConfigError(msg)


@dataclass(frozen=True, slots=True, eq=False)
class SigstorePublicKey:
    """A public key that may sign sigstore payloads (configured by the owner, or taken from a verified cert)."""

    key: _PublicKey
    source: str
    """Where it came from (a policy key path, ``keyData``, or the certificate), for messages."""

    @classmethod
    def from_pem(cls, data: bytes, source: str) -> SigstorePublicKey:
        """Load one PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo; ``RSA PUBLIC KEY`` PKCS#1 accepted too).

        Raises:
            ConfigError: not exactly one supported public key.
        """
        try:
            blocks = pem_blocks(data, source)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if len(blocks) != 1 or blocks[0][0] not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
            msg = f"{source}: expected exactly one PEM PUBLIC KEY block"
            raise ConfigError(msg)
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as e:
            msg = f"{source}: cannot parse the public key ({e})"
            raise ConfigError(msg) from e
        return cls(_check_public_key(key, source), source)

    @property
    def spki_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (what Rekor entries record for keys)."""
        return self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo, as cosign writes ``cosign.pub``."""
        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the DER SubjectPublicKeyInfo."""
        return "sha256:" + hashlib.sha256(self.spki_der).hexdigest()

    def describe(self) -> str:
        """``ECDSA P-256 key sha256:… (<source>)``."""
        return f"{_describe_key(self.key)} key {self.fingerprint} ({self.source})"

    def verify(self, untrusted_payload: bytes, untrusted_signature: bytes) -> bool:
        """Whether ``untrusted_signature`` is this key's signature over ``untrusted_payload`` (see module doc)."""
        key = self.key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                algorithms: list[hashes.HashAlgorithm] = [hashes.SHA256()]
                extra = _CURVE_HASHES.get(key.curve.name)
                if extra is not None:
                    algorithms.append(extra())
                for algorithm in algorithms:
                    try:
                        key.verify(untrusted_signature, untrusted_payload, ec.ECDSA(algorithm))
                    except InvalidSignature:
                        continue
                    return True
                return False
            if isinstance(key, rsa.RSAPublicKey):
                # SECURITY: PKCS#1 v1.5 with SHA-256 only, as sigstore's LoadVerifier(key, SHA256).
                key.verify(untrusted_signature, untrusted_payload, padding.PKCS1v15(), hashes.SHA256())
                return True
            key.verify(untrusted_signature, untrusted_payload)
        except InvalidSignature:
            return False
        return True


def verify_payload_signature(
    keys: Sequence[SigstorePublicKey], untrusted_payload: bytes, untrusted_signature_b64: str, what: str
) -> SigstorePublicKey:
    """Check the base64 signature over the payload with each key; return the first key that verifies.

    Raises:
        SignatureError: bad base64, or no key verifies (the message names the keys tried).
    """
    if not keys:
        msg = f"{what}: no public key to verify the signature with"
        raise SignatureError(msg)
    untrusted_signature = decode_base64(untrusted_signature_b64, f"{what}: signature annotation")
    for key in keys:
        if key.verify(untrusted_payload, untrusted_signature):
            return key
    tried = ", ".join(key.describe() for key in keys)
    msg = f"{what}: the signature does not verify with {tried}"
    raise SignatureError(msg)


# --- Fulcio -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FulcioTrustRoot:
    """The owner's Fulcio configuration: CA certificates, the OIDC issuer and the subject e-mail to require."""

    ca_certificates: tuple[x509.Certificate, ...]
    oidc_issuer: str
    subject_email: str
    source: str

    @classmethod
    def from_pem(cls, ca_pem: bytes, oidc_issuer: str, subject_email: str, source: str) -> FulcioTrustRoot:
        """Load the CA certificates (one or more PEM certificates; each is a trust anchor).

        Raises:
            ConfigError: no certificate, unparsable PEM, or an empty issuer/e-mail.
        """
        if not oidc_issuer or not subject_email:
            msg = f"{source}: Fulcio needs both oidcIssuer and subjectEmail"
            raise ConfigError(msg)
        try:
            certs = tuple(x509.load_pem_x509_certificates(ca_pem))
        except ValueError as e:
            msg = f"{source}: cannot load the Fulcio CA certificates ({e})"
            raise ConfigError(msg) from e
        return cls(certs, oidc_issuer, subject_email, source)


@dataclass(frozen=True, slots=True)
class FulcioIdentity:
    """What a verified Fulcio certificate says."""

    public_key: SigstorePublicKey
    oidc_issuer: str
    emails: tuple[str, ...]
    certificate_der: bytes = field(repr=False)


def _oidc_issuer(cert: x509.Certificate, what: str) -> str:
    v1: str | None = None
    v2: str | None = None
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension) as e:
        msg = f"{what}: malformed certificate extensions ({e})"
        raise SignatureError(msg) from e
    for ext in extensions:
        if ext.oid == OID_FULCIO_ISSUER_V1:
            raw = ext.value.public_bytes()
            try:
                v1 = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                msg = f"{what}: OIDC issuer v1 extension is not UTF-8"
                raise SignatureError(msg) from e
        elif ext.oid == OID_FULCIO_ISSUER_V2:
            try:
                tlv = der.decode(ext.value.public_bytes())
            except ProtocolError as e:
                msg = f"{what}: invalid ASN.1 in the OIDC issuer v2 extension ({e})"
                raise SignatureError(msg) from e
            if tlv.tag not in _ASN1_STRING_TAGS:
                msg = f"{what}: the OIDC issuer v2 extension is not an ASN.1 string"
                raise SignatureError(msg)
            try:
                v2 = tlv.contents.decode("utf-8")
            except UnicodeDecodeError as e:
                msg = f"{what}: OIDC issuer v2 extension is not UTF-8"
                raise SignatureError(msg) from e
    if v1 is not None and v2 is not None and v1 != v2:
        msg = f"{what}: inconsistent OIDC issuer extensions: v1 {v1!r}, v2 {v2!r}"
        raise SignatureError(msg)
    issuer = v1 if v1 is not None else v2
    if issuer is None:
        msg = f"{what}: the Fulcio certificate has no OIDC issuer extension"
        raise SignatureError(msg)
    return issuer


def _eku_allows_code_signing(
    _policy: x509_verification.Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    # Go's x509 semantics (containers/image KeyUsages: CodeSigning): a certificate without EKU allows any
    # usage; one with EKU must list code signing or anyExtendedKeyUsage.
    if eku is None:
        return
    usages = list(eku)
    if ExtendedKeyUsageOID.CODE_SIGNING not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        msg = "extended key usage does not allow code signing"
        raise ValueError(msg)


def _load_untrusted_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        blocks = pem_blocks(data, what)
    except ValueError as e:
        raise SignatureError(str(e)) from e
    certs = []
    for kind, der_bytes in blocks:
        if kind != "CERTIFICATE":
            msg = f"{what}: unexpected PEM block {kind!r}"
            raise SignatureError(msg)
        try:
            certs.append(x509.load_der_x509_certificate(der_bytes))
        except ValueError as e:
            msg = f"{what}: cannot parse a certificate ({e})"
            raise SignatureError(msg) from e
    return certs


def verify_fulcio_certificate(
    trust: FulcioTrustRoot,
    untrusted_certificate_pem: bytes,
    untrusted_chain_pem: bytes | None,
    at: datetime.datetime,
    what: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> FulcioIdentity:
    """Verify a Fulcio leaf certificate at time ``at`` and return its key and identity (see module doc).

    ``limits`` caps the chain annotation (``max_chain_certificates``) and the path (``max_chain_depth``).

    Raises:
        SignatureError: the certificate does not chain to the CA at ``at``, does not allow code signing, or
            names another OIDC issuer or e-mail.
    """
    leaves = _load_untrusted_certificates(untrusted_certificate_pem, f"{what}: certificate annotation")
    if len(leaves) != 1:
        msg = f"{what}: the certificate annotation holds {len(leaves)} certificates, expected 1"
        raise SignatureError(msg)
    leaf = leaves[0]
    intermediates: list[x509.Certificate] = []
    if untrusted_chain_pem:
        chain = _load_untrusted_certificates(untrusted_chain_pem, f"{what}: chain annotation")
        if len(chain) > limits.max_chain_certificates:
            msg = (
                f"{what}: the chain annotation holds {len(chain)} certificates "
                f"(limit {limits.max_chain_certificates}, max_chain_certificates)"
            )
            raise SignatureError(msg)
        # SECURITY: as containers/image, the chain's last certificate (its root) is dropped: only the
        # configured CA certificates are trust anchors.
        intermediates = chain[:-1]
    if not trust.ca_certificates:
        msg = f"{trust.source}: no Fulcio CA certificate configured"
        raise ConfigError(msg)
    # SECURITY: WebPKI profile checks (signatures, validity at `at`, CA basic constraints and key usage, path
    # length, name chaining) with the extended key usage requirement replaced by code signing.
    ee_policy = x509_verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, x509_verification.Criticality.AGNOSTIC, _eku_allows_code_signing
    )
    ca_policy = x509_verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, x509_verification.Criticality.AGNOSTIC, _eku_allows_code_signing
    )
    naive_utc = at.astimezone(datetime.UTC).replace(tzinfo=None)
    try:
        verifier = (
            x509_verification.PolicyBuilder()
            .store(x509_verification.Store(list(trust.ca_certificates)))
            .time(naive_utc)
            .max_chain_depth(limits.max_chain_depth)
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        verifier.verify(leaf, intermediates)
    except (x509_verification.VerificationError, ValueError) as e:
        subject = leaf.subject.rfc4514_string() or "(empty subject)"
        msg = f"{what}: the Fulcio certificate {subject} is not valid at {at.isoformat()} under {trust.source} ({e})"
        raise SignatureError(msg) from e

    issuer = _oidc_issuer(leaf, what)
    if issuer != trust.oidc_issuer:
        msg = (
            f"{what}: the Fulcio certificate's OIDC issuer is {issuer!r}, {trust.source} requires {trust.oidc_issuer!r}"
        )
        raise SignatureError(msg)
    emails: tuple[str, ...] = ()
    for ext in leaf.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            emails = tuple(ext.value.get_values_for_type(x509.RFC822Name))
    if trust.subject_email not in emails:
        msg = f"{what}: the Fulcio certificate is for {list(emails)}, {trust.source} requires {trust.subject_email!r}"
        raise SignatureError(msg)
    try:
        public_key = _check_public_key(leaf.public_key(), f"{what}: Fulcio certificate")
    except ConfigError as e:
        raise SignatureError(str(e)) from e
    source = f"Fulcio certificate for {trust.subject_email} from {issuer}"
    return FulcioIdentity(
        SigstorePublicKey(public_key, source),
        issuer,
        emails,
        leaf.public_bytes(serialization.Encoding.DER),
    )


# --- Rekor --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class RekorPublicKey:
    """A Rekor log's public key (ECDSA only, as containers/image)."""

    key: ec.EllipticCurvePublicKey
    source: str

    @classmethod
    def from_pem(cls, data: bytes, source: str) -> RekorPublicKey:
        """Load a PEM ECDSA public key.

        Raises:
            ConfigError: not an ECDSA public key.
        """
        loaded = SigstorePublicKey.from_pem(data, source)
        if not isinstance(loaded.key, ec.EllipticCurvePublicKey):
            msg = f"{source}: the Rekor public key must be ECDSA, not {_describe_key(loaded.key)}"
            raise ConfigError(msg)
        return cls(loaded.key, source)


@dataclass(frozen=True, slots=True)
class RekorEntry:
    """The verified part of a Rekor SET."""

    integrated_time: int
    log_index: int
    log_id: str
    signed_by: str
    """Which configured Rekor key signed the SET (its source)."""

    @property
    def integrated_at(self) -> datetime.datetime:
        """``integratedTime`` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.integrated_time, datetime.UTC)


def _int_member(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what}: expected an integer"
        raise ValueError(msg)
    return value


def _nested(value: object, path: Sequence[str], what: str) -> object:
    for name in path:
        if not isinstance(value, dict) or name not in value or value[name] is None:
            msg = f"{what}: missing {'.'.join(path)!r}"
            raise SignatureError(msg)
        value = value[name]
    return value


def verify_rekor_set(
    rekor_keys: Sequence[RekorPublicKey],
    untrusted_set_json: bytes,
    signer_der: bytes,
    untrusted_signature_b64: str,
    untrusted_payload: bytes,
    what: str,
) -> RekorEntry:
    """Verify a Rekor SET (``dev.sigstore.cosign/bundle``) and that its entry covers this signature.

    Args:
        rekor_keys: the configured Rekor public keys (any may have signed).
        untrusted_set_json: the bundle annotation.
        signer_der: the DER the entry must name: the signing certificate (keyless) or the
            SubjectPublicKeyInfo of the configured key.
        untrusted_signature_b64: the signature annotation.
        untrusted_payload: the simplesigning payload.
        what: names the signature in messages.

    Raises:
        SignatureError: malformed SET, bad SET signature, or an entry for another key, signature or payload.
    """
    if not rekor_keys:
        msg = f"{what}: no Rekor public key configured"
        raise ConfigError(msg)
    entry, canonical, set_signature = _parse_rekor_set(untrusted_set_json, what)
    digest = hashlib.sha256(canonical).digest()
    signed_by: RekorPublicKey | None = None
    for rekor_key in rekor_keys:
        try:
            rekor_key.key.verify(set_signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            continue
        signed_by = rekor_key
        break
    if signed_by is None:
        tried = ", ".join(key.source for key in rekor_keys)
        msg = f"{what}: the Rekor SET signature does not verify with the Rekor key(s) {tried}"
        raise SignatureError(msg)
    # The SET is authentic: now check that the entry is about this signature.
    _check_hashedrekord(entry["body"], signer_der, untrusted_signature_b64, untrusted_payload, what)
    return RekorEntry(entry["integratedTime"], entry["logIndex"], entry["logID"], signed_by.source)


class _SetPayload(TypedDict):
    body: str
    integratedTime: int
    logIndex: int
    logID: str


def _parse_rekor_set(untrusted_set_json: bytes, what: str) -> tuple[_SetPayload, bytes, bytes]:
    """The SET's payload, its canonical bytes and the SET signature (nothing verified yet)."""
    document = jsonutil.loads(untrusted_set_json, f"{what}: malformed Rekor SET", SignatureError)
    try:
        outer = exact_members(document, ("SignedEntryTimestamp", "Payload"), f"{what}: Rekor SET")
        untrusted = exact_members(
            outer["Payload"], ("body", "integratedTime", "logIndex", "logID"), f"{what}: Rekor SET payload"
        )
        body, log_id = untrusted["body"], untrusted["logID"]
        if not isinstance(body, str) or not isinstance(log_id, str):
            msg = f"{what}: Rekor SET payload: body and logID must be strings"
            raise ValueError(msg)
        entry: _SetPayload = {
            "body": body,
            "integratedTime": _int_member(untrusted["integratedTime"], f"{what}: integratedTime"),
            "logIndex": _int_member(untrusted["logIndex"], f"{what}: logIndex"),
            "logID": log_id,
        }
        # containers/image canonicalises the SET payload as received (RFC 8785); with exactly these members
        # and types, canonicalising the parsed values gives the same bytes.
        canonical = canonical_json(dict(entry))
    except ValueError as e:
        msg = f"{what}: malformed Rekor SET ({e})"
        raise SignatureError(msg) from e
    set_signature = decode_base64(outer["SignedEntryTimestamp"], f"{what}: Rekor SignedEntryTimestamp")
    return entry, canonical, set_signature


def _check_hashedrekord(
    untrusted_body_b64: str, signer_der: bytes, untrusted_signature_b64: str, untrusted_payload: bytes, what: str
) -> None:
    """The (SET-authenticated) entry must name this key or certificate, this signature and this payload."""
    body_bytes = decode_base64(untrusted_body_b64, f"{what}: Rekor entry body")
    body = jsonutil.loads(body_bytes, f"{what}: Rekor entry body", SignatureError)
    if not isinstance(body, dict) or body.get("kind") != REKOR_HASHEDREKORD_KIND:
        kind = body.get("kind") if isinstance(body, dict) else None
        msg = f"{what}: Rekor entry kind {kind!r} is not {REKOR_HASHEDREKORD_KIND!r}"
        raise SignatureError(msg)
    if body.get("apiVersion") != REKOR_HASHEDREKORD_VERSION:
        msg = f"{what}: unsupported hashedrekord version {body.get('apiVersion')!r}"
        raise SignatureError(msg)
    spec = _nested(body, ("spec",), what)
    entry_key_pem = decode_base64(
        _nested(spec, ("signature", "publicKey", "content"), what), f"{what}: Rekor entry public key"
    )
    try:
        entry_blocks = pem_blocks(entry_key_pem, f"{what}: Rekor entry public key")
    except ValueError as e:
        raise SignatureError(str(e)) from e
    if len(entry_blocks) != 1:
        msg = f"{what}: the Rekor entry's public key is not one PEM block"
        raise SignatureError(msg)
    if entry_blocks[0][1] != signer_der:
        msg = f"{what}: the Rekor entry is for another public key or certificate"
        raise SignatureError(msg)
    entry_signature = decode_base64(_nested(spec, ("signature", "content"), what), f"{what}: Rekor entry signature")
    if entry_signature != decode_base64(untrusted_signature_b64, f"{what}: signature annotation"):
        msg = f"{what}: the Rekor entry is for another signature"
        raise SignatureError(msg)
    algorithm = _nested(spec, ("data", "hash", "algorithm"), what)
    if algorithm != "sha256":
        msg = f"{what}: unexpected Rekor entry hash algorithm {algorithm!r}"
        raise SignatureError(msg)
    value = _nested(spec, ("data", "hash", "value"), what)
    if not isinstance(value, str) or value.lower() != hashlib.sha256(untrusted_payload).hexdigest():
        msg = f"{what}: the Rekor entry is for another payload"
        raise SignatureError(msg)


def make_rekor_set(
    rekor_private_key: SigstorePrivateKey,
    signer_pem: bytes,
    signature: bytes,
    payload: bytes,
    *,
    integrated_time: int,
    log_index: int,
    log_id: str,
) -> bytes:
    """A Rekor SET as a log would issue it (for tests and offline signing setups; no log is contacted).

    Raises:
        ValueError: ``rekor_private_key`` is not an ECDSA key.
    """
    if not isinstance(rekor_private_key.key, ec.EllipticCurvePrivateKey):
        msg = "a Rekor key must be ECDSA"
        raise ValueError(msg)
    body = {
        "apiVersion": REKOR_HASHEDREKORD_VERSION,
        "kind": REKOR_HASHEDREKORD_KIND,
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "publicKey": {"content": base64.b64encode(signer_pem).decode()},
            },
        },
    }
    entry = {
        "body": base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode(),
        "integratedTime": integrated_time,
        "logIndex": log_index,
        "logID": log_id,
    }
    set_signature = rekor_private_key.key.sign(canonical_json(entry), ec.ECDSA(hashes.SHA256()))
    return json.dumps(
        {"SignedEntryTimestamp": base64.b64encode(set_signature).decode(), "Payload": entry}, separators=(",", ":")
    ).encode()


# --- private keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SigstorePrivateKey:
    """A signing key for sigstore payloads."""

    key: _PrivateKey
    source: str

    @property
    def public_key(self) -> SigstorePublicKey:
        """The matching public key."""
        return SigstorePublicKey(self.key.public_key(), self.source)

    def sign(self, payload: bytes) -> bytes:
        """Sign as cosign and containers/image do: ECDSA/SHA-256 (DER), RSA PKCS#1 v1.5/SHA-256, pure Ed25519."""
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            # SHA-256 for every curve: the hash containers/image verifies with.
            return key.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(payload)

    def pkcs8_der(self) -> bytes:
        """Unencrypted PKCS#8 DER (what cosign encrypts)."""
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _check_private_key(key: object, source: str) -> _PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        _check_public_key(key.public_key(), source)
        return key
    msg = f"{source}: unsupported private key type {type(key).__name__} (ECDSA, RSA or Ed25519)"
    raise ConfigError(msg)


def _scrypt_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=_SECRETBOX_KEY_BYTES, n=n, r=r, p=p).derive(passphrase)


def _decrypt_cosign_key(blob: bytes, passphrase: bytes, source: str, limits: Limits) -> bytes:
    document = jsonutil.loads(blob, f"{source}: malformed encrypted cosign key", ConfigError, limits=limits)
    try:
        outer = exact_members(document, ("kdf", "cipher", "ciphertext"), source)
        kdf = exact_members(outer["kdf"], ("name", "params", "salt"), f"{source}: kdf")
        params = exact_members(kdf["params"], ("N", "r", "p"), f"{source}: kdf params")
        cipher = exact_members(outer["cipher"], ("name", "nonce"), f"{source}: cipher")
        n = _int_member(params["N"], f"{source}: scrypt N")
        r = _int_member(params["r"], f"{source}: scrypt r")
        p = _int_member(params["p"], f"{source}: scrypt p")
    except ValueError as e:
        msg = f"{source}: malformed encrypted cosign key ({e})"
        raise ConfigError(msg) from e
    if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
        msg = f"{source}: unsupported key encryption {kdf['name']!r}/{cipher['name']!r} (scrypt + nacl/secretbox)"
        raise ConfigError(msg)
    # SECURITY: the key file chooses the scrypt cost; cap the memory and work it can make us spend.
    if (
        n < 2
        or n & (n - 1)
        or r < 1
        or not 1 <= p <= limits.max_scrypt_parallelism
        or 128 * r * n > limits.max_scrypt_memory_bytes
    ):
        msg = (
            f"{source}: scrypt parameters N={n} r={r} p={p} are invalid or too expensive (at most "
            f"{limits.max_scrypt_memory_bytes} bytes, max_scrypt_memory_bytes; p at most "
            f"{limits.max_scrypt_parallelism}, max_scrypt_parallelism)"
        )
        raise ConfigError(msg)
    try:
        salt = decode_base64(kdf["salt"], f"{source}: salt")
        nonce = decode_base64(cipher["nonce"], f"{source}: nonce")
        ciphertext = decode_base64(outer["ciphertext"], f"{source}: ciphertext")
    except SignatureError as e:
        raise ConfigError(str(e)) from e
    if len(nonce) != _SECRETBOX_NONCE_BYTES:
        msg = f"{source}: secretbox nonce of {len(nonce)} bytes, expected {_SECRETBOX_NONCE_BYTES}"
        raise ConfigError(msg)
    box = nacl.secret.SecretBox(_scrypt_key(passphrase, salt, n, r, p))
    try:
        return box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as e:
        msg = f"{source}: cannot decrypt the cosign private key (wrong passphrase or corrupted file)"
        raise ConfigError(msg) from e


def load_sigstore_private_key(
    data: bytes, passphrase: bytes | None, source: str, *, limits: Limits = DEFAULT_LIMITS
) -> SigstorePrivateKey:
    """Load a cosign private key (encrypted ``ENCRYPTED SIGSTORE/COSIGN PRIVATE KEY``) or a plain PEM key.

    An encrypted key with no passphrase is tried with the empty passphrase (cosign's
    ``COSIGN_PASSWORD=""``).

    Raises:
        ConfigError: unreadable, wrong passphrase, or an unsupported key.
    """
    if len(data) > limits.max_private_key_bytes:
        msg = f"{source}: key file larger than {limits.max_private_key_bytes} bytes (max_private_key_bytes)"
        raise ConfigError(msg)
    try:
        blocks = pem_blocks(data, source)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if len(blocks) != 1:
        msg = f"{source}: expected exactly one PEM block, found {len(blocks)}"
        raise ConfigError(msg)
    kind, body = blocks[0]
    if kind in (ENCRYPTED_SIGSTORE_KEY_PEM, ENCRYPTED_COSIGN_KEY_PEM):
        pkcs8 = _decrypt_cosign_key(body, passphrase or b"", source, limits)
        try:
            key = serialization.load_der_private_key(pkcs8, password=None)
        except (ValueError, UnsupportedAlgorithm) as e:
            msg = f"{source}: the decrypted key is not a PKCS#8 private key ({e})"
            raise ConfigError(msg) from e
        return SigstorePrivateKey(_check_private_key(key, source), source)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as e:
        msg = f"{source}: the private key is encrypted and needs a passphrase"
        raise ConfigError(msg) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        msg = f"{source}: cannot load the private key ({e})"
        raise ConfigError(msg) from e
    return SigstorePrivateKey(_check_private_key(key, source), source)


def encrypt_sigstore_private_key(
    key: SigstorePrivateKey,
    passphrase: bytes,
    *,
    pem_type: str = ENCRYPTED_SIGSTORE_KEY_PEM,
    scrypt_n: int = _DEFAULT_SCRYPT_N,
) -> bytes:
    """The key in cosign's encrypted PEM format (``cosign generate-key-pair``'s ``cosign.key``).

    Raises:
        ValueError: an unknown ``pem_type``.
    """
    if pem_type not in (ENCRYPTED_SIGSTORE_KEY_PEM, ENCRYPTED_COSIGN_KEY_PEM):
        msg = f"unknown PEM type {pem_type!r}"
        raise ValueError(msg)
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_SECRETBOX_NONCE_BYTES)
    box = nacl.secret.SecretBox(_scrypt_key(passphrase, salt, scrypt_n, _DEFAULT_SCRYPT_R, _DEFAULT_SCRYPT_P))
    ciphertext = box.encrypt(key.pkcs8_der(), nonce).ciphertext
    document = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": _DEFAULT_SCRYPT_R, "p": _DEFAULT_SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    encoded = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return (f"-----BEGIN {pem_type}-----\n" + "\n".join(lines) + f"\n-----END {pem_type}-----\n").encode()


def generate_sigstore_key(kind: KeyKind = "ecdsa-p256", source: str = "generated key") -> SigstorePrivateKey:
    """A fresh signing key (cosign's default is ECDSA P-256)."""
    key: _PrivateKey
    if kind == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ecdsa-p384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(kind.removeprefix("rsa-")))
    return SigstorePrivateKey(key, source)
