"""OpenPGP signed messages: verify them against trusted keyrings, and make them (simple signing).

Verification is implemented here over :mod:`cryptography`, not with pysequoia: sequoia's standard policy
(the only one pysequoia exposes) refuses SHA-1 data signatures and SHA-1 self-signatures, which gpg 2.2 and
containers/image accept and which real signatures use (the image-rs test signatures are SHA-1 signatures by
a key with SHA-1 self-signatures). Signing uses pysequoia (SHA-512 by default), whose output gpg, gpgme
(skopeo) and this verifier read.

Invariants:
    * :func:`verify_signed_message` returns a payload only if exactly one v4 signature over exactly one
      literal data packet (one-pass form, optionally inside one compressed data packet) verifies with a
      currently valid signing key of one of the trusted certificates: the primary key, or a subkey with a
      valid binding signature, signing flag and valid back-signature (gpg's rules). Everything else raises
      :class:`SignatureError`; nothing of an unverified message is returned.
    * Keys and self-signatures of the trusted keyring are verified too (revocations, expiry, key flags,
      binding signatures), so a keyring's content is not taken on faith beyond its primary keys.
    * Decompression and every length are bounded by the caller's :class:`~cocoguest.limits.Limits`: the signed
      message by ``max_signature_bytes``, the payload by ``max_signed_payload_bytes``, a keyring by
      ``max_keyring_bytes``.
    * The signer identity returned is the upper-case hex v4 fingerprint of the PRIMARY key (as gpgme reports
      it to containers/image), also when a subkey signed.
    * Error messages are one line and name ``what`` (the signature) and, where known, the key.
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import subprocess
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pysequoia
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from cocoguest.crypto.openpgp_packets import (
    TAG_COMPRESSED,
    TAG_LITERAL,
    TAG_MARKER,
    TAG_ONE_PASS,
    TAG_PUBLIC_KEY,
    TAG_PUBLIC_SUBKEY,
    TAG_SECRET_KEY,
    TAG_SECRET_SUBKEY,
    TAG_SIGNATURE,
    TAG_TRUST,
    TAG_USER_ATTRIBUTE,
    TAG_USER_ID,
    MalformedOpenPgpError,
    dearmor,
    first_line,
    read_mpi,
    read_oid,
    read_packets,
    read_subpackets,
    write_packet,
)
from cocoguest.errors import ConfigError, SignatureError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)


# RFC 4880 §5.2.1 signature types.
_SIG_BINARY: Final = 0x00
_SIG_TEXT: Final = 0x01
_SIG_CERTIFICATIONS: Final = frozenset({0x10, 0x11, 0x12, 0x13})
_SIG_SUBKEY_BINDING: Final = 0x18
_SIG_PRIMARY_BINDING: Final = 0x19
_SIG_DIRECT_KEY: Final = 0x1F
_SIG_KEY_REVOCATION: Final = 0x20
_SIG_SUBKEY_REVOCATION: Final = 0x28
_SIG_CERT_REVOCATION: Final = 0x30

# RFC 4880 §5.2.3.1 subpackets.
_SUB_CREATED: Final = 2
_SUB_SIG_EXPIRES: Final = 3
_SUB_KEY_EXPIRES: Final = 9
_SUB_ISSUER: Final = 16
_SUB_KEY_FLAGS: Final = 27
_SUB_EMBEDDED_SIG: Final = 32
_SUB_ISSUER_FPR: Final = 33
# Subpacket types this verifier understands; an unknown one marked critical invalidates a signature (§5.2.3.1).
_KNOWN_SUBPACKETS: Final = frozenset({2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                      31, 32, 33, 34, 35})  # fmt: skip
_KEY_FLAG_SIGN: Final = 0x02
_SUBKEY_TAGS: Final = frozenset({TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY})

_HASHES: Final[dict[int, Callable[[], hashes.HashAlgorithm]]] = {
    2: hashes.SHA1,
    8: hashes.SHA256,
    9: hashes.SHA384,
    10: hashes.SHA512,
    11: hashes.SHA224,
}
_HASH_SHA1: Final = 2

_PK_RSA: Final = frozenset({1, 3})  # RSA (encrypt or sign), RSA sign-only
_PK_ECDSA: Final = 19
_PK_EDDSA_LEGACY: Final = 22
_PK_ED25519: Final = 27
_CURVES: Final[dict[bytes, ec.EllipticCurve]] = {
    bytes.fromhex("2a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("2b81040022"): ec.SECP384R1(),
    bytes.fromhex("2b81040023"): ec.SECP521R1(),
}
_OID_ED25519: Final = bytes.fromhex("2b06010401da470f01")
_ED25519_PREFIX: Final = 0x40  # native point encoding of EdDSA MPIs (RFC 4880bis §13.3)


# --- keys ---------------------------------------------------------------------------------------------

_Verifier = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(slots=True)
class _Key:
    """A v4 public (sub)key: its public packet body, identity and, if the algorithm can sign, a verifier."""

    body: bytes
    created: int
    algorithm: int
    fingerprint: str
    key_id: str
    verifier: _Verifier | None

    def hash_material(self) -> bytes:
        """The octets a signature over this key hashes (RFC 4880 §5.2.4)."""
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body


def _public_part_length(body: bytes, algorithm: int) -> tuple[int, _Verifier | None]:
    """Length of the public fields of a v4 key body and a verifier for signing algorithms.

    Raises:
        MalformedOpenPgpError: malformed key material or an algorithm whose length is unknown.
    """
    pos = 6
    verifier: _Verifier | None = None
    if algorithm in (1, 2, 3):
        n, pos = read_mpi(body, pos)
        e, pos = read_mpi(body, pos)
        if algorithm in _PK_RSA:
            try:
                verifier = rsa.RSAPublicNumbers(e, n).public_key()
            except ValueError as err:
                raise MalformedOpenPgpError(f"invalid RSA key ({err})") from err
    elif algorithm == 16:  # Elgamal: p, g, y
        for _ in range(3):
            _, pos = read_mpi(body, pos)
    elif algorithm == 17:  # DSA: p, q, g, y (no longer accepted for signatures)
        for _ in range(4):
            _, pos = read_mpi(body, pos)
    elif algorithm in (18, _PK_ECDSA, _PK_EDDSA_LEGACY):
        oid, pos = read_oid(body, pos)
        point_start = pos
        _, pos = read_mpi(body, pos)
        point = body[point_start + 2 : pos]
        if algorithm == 18:  # ECDH KDF parameters
            if pos >= len(body) or pos + 1 + body[pos] > len(body):
                raise MalformedOpenPgpError("malformed ECDH KDF parameters")
            pos += 1 + body[pos]
        elif algorithm == _PK_ECDSA and oid in _CURVES:
            try:
                verifier = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[oid], point)
            except ValueError as err:
                raise MalformedOpenPgpError(f"invalid ECDSA key ({err})") from err
        elif algorithm == _PK_EDDSA_LEGACY and oid == _OID_ED25519:
            if len(point) != 33 or point[0] != _ED25519_PREFIX:
                raise MalformedOpenPgpError("invalid Ed25519 key")
            verifier = ed25519.Ed25519PublicKey.from_public_bytes(point[1:])
    elif algorithm in (25, 26, _PK_ED25519, 28):  # X25519, X448, Ed25519, Ed448: raw octets (RFC 9580)
        size = {25: 32, 26: 56, _PK_ED25519: 32, 28: 57}[algorithm]
        if pos + size > len(body):
            raise MalformedOpenPgpError("truncated key")
        if algorithm == _PK_ED25519:
            verifier = ed25519.Ed25519PublicKey.from_public_bytes(body[pos : pos + size])
        pos += size
    else:
        raise MalformedOpenPgpError(f"unknown public-key algorithm {algorithm}")
    return pos, verifier


def _parse_key(tag: int, body: bytes) -> _Key | None:
    """A v4 key from a (public or secret) key packet; ``None`` for other versions (v3, v5, v6).

    Raises:
        MalformedOpenPgpError: a malformed v4 key.
    """
    if not body or body[0] != 4:
        return None
    if len(body) < 6:
        raise MalformedOpenPgpError("truncated key packet")
    algorithm = body[5]
    secret = tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY)
    try:
        length, verifier = _public_part_length(body, algorithm)
    except MalformedOpenPgpError:
        if secret:
            raise
        length, verifier = len(body), None  # an unknown algorithm in a public packet: still fingerprintable
    public = body[:length]
    fingerprint = hashlib.sha1(b"\x99" + len(public).to_bytes(2, "big") + public).hexdigest().upper()  # noqa: S324 — v4 fingerprints are SHA-1 (RFC 4880 §12.2)
    return _Key(public, int.from_bytes(body[1:5], "big"), algorithm, fingerprint, fingerprint[-16:], verifier)


# --- signatures ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Signature:
    """A parsed v4 signature packet (nothing verified)."""

    sig_type: int
    pk_algorithm: int
    hash_algorithm: int
    hashed_prefix: bytes
    """Version through the hashed subpackets: what the signature hashes after the signed data."""
    left16: bytes
    material: bytes
    created: int | None = None
    sig_expires: int | None = None
    key_expires: int | None = None
    key_flags: int | None = None
    issuer_ids: set[str] = field(default_factory=set)
    issuer_fingerprints: set[str] = field(default_factory=set)
    embedded: list[bytes] = field(default_factory=list)
    unknown_critical: list[int] = field(default_factory=list)


def _parse_signature(body: bytes) -> _Signature | None:
    """A v4 signature; ``None`` for other versions.

    Raises:
        MalformedOpenPgpError: a malformed v4 signature.
    """
    if not body or body[0] != 4:
        return None
    if len(body) < 6:
        raise MalformedOpenPgpError("truncated signature packet")
    hashed_len = int.from_bytes(body[4:6], "big")
    hashed_end = 6 + hashed_len
    if hashed_end + 2 > len(body):
        raise MalformedOpenPgpError("truncated signature packet")
    unhashed_len = int.from_bytes(body[hashed_end : hashed_end + 2], "big")
    unhashed_end = hashed_end + 2 + unhashed_len
    if unhashed_end + 2 > len(body):
        raise MalformedOpenPgpError("truncated signature packet")
    sig = _Signature(
        sig_type=body[1],
        pk_algorithm=body[2],
        hash_algorithm=body[3],
        hashed_prefix=body[:hashed_end],
        left16=body[unhashed_end : unhashed_end + 2],
        material=body[unhashed_end + 2 :],
    )
    for hashed, area in ((True, body[6:hashed_end]), (False, body[hashed_end + 2 : unhashed_end])):
        for kind, critical, value in read_subpackets(area):
            if kind == _SUB_ISSUER and len(value) == 8:
                sig.issuer_ids.add(value.hex().upper())  # a hint only: may be unhashed
            elif kind == _SUB_ISSUER_FPR and len(value) == 21 and value[0] == 4:
                sig.issuer_fingerprints.add(value[1:].hex().upper())
            elif kind == _SUB_EMBEDDED_SIG:
                sig.embedded.append(value)
            if not hashed:
                continue  # SECURITY: only hashed subpackets carry meaning beyond issuer hints
            if kind == _SUB_CREATED and len(value) == 4:
                sig.created = int.from_bytes(value, "big")
            elif kind == _SUB_SIG_EXPIRES and len(value) == 4:
                sig.sig_expires = int.from_bytes(value, "big")
            elif kind == _SUB_KEY_EXPIRES and len(value) == 4:
                sig.key_expires = int.from_bytes(value, "big")
            elif kind == _SUB_KEY_FLAGS and value:
                sig.key_flags = value[0]
            elif critical and kind not in _KNOWN_SUBPACKETS:
                sig.unknown_critical.append(kind)
    return sig


def _signature_bytes(sig: _Signature, key: _Key) -> bytes | None:
    """The algorithm-specific signature octets, or ``None`` if they do not fit ``key``."""
    try:
        if sig.pk_algorithm in _PK_RSA and isinstance(key.verifier, rsa.RSAPublicKey):
            s, _ = read_mpi(sig.material, 0)
            size = (key.verifier.key_size + 7) // 8
            return s.to_bytes(size, "big") if s.bit_length() <= size * 8 else None
        if sig.pk_algorithm == _PK_ECDSA and isinstance(key.verifier, ec.EllipticCurvePublicKey):
            r, pos = read_mpi(sig.material, 0)
            s, _ = read_mpi(sig.material, pos)
            return encode_dss_signature(r, s)
        if sig.pk_algorithm == _PK_EDDSA_LEGACY and isinstance(key.verifier, ed25519.Ed25519PublicKey):
            r, pos = read_mpi(sig.material, 0)
            s, _ = read_mpi(sig.material, pos)
            if r.bit_length() > 256 or s.bit_length() > 256:
                return None
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if sig.pk_algorithm == _PK_ED25519 and isinstance(key.verifier, ed25519.Ed25519PublicKey):
            return sig.material[:64] if len(sig.material) == 64 else None
    except MalformedOpenPgpError:
        return None
    return None


def _verifies(sig: _Signature, key: _Key, signed: bytes) -> bool:
    """Whether ``sig`` is a valid signature by ``key`` over ``signed`` (the data or key material).

    Checks the mathematics only (plus the hash algorithm and unknown critical subpackets); time and
    key-usage rules are the caller's.
    """
    hash_factory = _HASHES.get(sig.hash_algorithm)
    if hash_factory is None or key.verifier is None or sig.unknown_critical or sig.pk_algorithm != key.algorithm:
        # SECURITY: MD5, RIPEMD-160 and unknown hashes are refused; so is an unknown critical subpacket.
        return False
    algorithm = hash_factory()
    hasher = hashes.Hash(algorithm)
    hasher.update(signed)
    hasher.update(sig.hashed_prefix)
    hasher.update(b"\x04\xff" + len(sig.hashed_prefix).to_bytes(4, "big"))
    digest = hasher.finalize()
    if digest[:2] != sig.left16:
        return False
    signature = _signature_bytes(sig, key)
    if signature is None:
        return False
    try:
        verifier = key.verifier
        if isinstance(verifier, rsa.RSAPublicKey):
            verifier.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
        elif isinstance(verifier, ec.EllipticCurvePublicKey):
            verifier.verify(signature, digest, ec.ECDSA(Prehashed(algorithm)))
        else:
            verifier.verify(signature, digest)  # OpenPGP EdDSA signs the hash value
    except InvalidSignature:
        return False
    return True


def _expired(created: int, lifetime: int | None, now: float) -> bool:
    return lifetime is not None and lifetime > 0 and created + lifetime <= now


# --- certificates -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cert:
    """A trusted certificate: the primary fingerprint and its keys currently valid for signing."""

    fingerprint: str
    signing_keys: list[_Key]
    unusable: dict[str, str] = field(default_factory=dict)
    """Key ID -> why that key of the certificate cannot sign (revoked, expired, no signing flag ...)."""


def _valid_self_sigs(
    sigs: list[_Signature], primary: _Key, material: bytes, types: frozenset[int], now: float
) -> list[_Signature]:
    """The self-signatures of ``types`` by ``primary`` over ``material`` that verify and have not expired."""
    return [
        sig
        for sig in sigs
        if sig.sig_type in types
        and sig.created is not None
        and sig.created <= now
        and not _expired(sig.created, sig.sig_expires, now)
        and _verifies(sig, primary, material)
    ]


def _newest(sigs: list[_Signature]) -> _Signature | None:
    return max(sigs, key=lambda s: s.created or 0, default=None)


def _has_back_signature(binding: _Signature, primary: _Key, subkey: _Key, now: float) -> bool:
    material = primary.hash_material() + subkey.hash_material()
    for raw in binding.embedded:
        try:
            back = _parse_signature(raw)
        except MalformedOpenPgpError:
            continue
        if (
            back is not None
            and back.sig_type == _SIG_PRIMARY_BINDING
            and back.created is not None
            and not _expired(back.created, back.sig_expires, now)
            and _verifies(back, subkey, material)
        ):
            return True
    return False


def _subkey_problem(primary: _Key, subkey: _Key, sigs: list[_Signature], now: float) -> str | None:
    """Why ``subkey`` cannot sign for ``primary`` now, or ``None`` if it can."""
    material = primary.hash_material() + subkey.hash_material()
    if _valid_self_sigs(sigs, primary, material, frozenset({_SIG_SUBKEY_REVOCATION}), now):
        return "is revoked"
    binding = _newest(_valid_self_sigs(sigs, primary, material, frozenset({_SIG_SUBKEY_BINDING}), now))
    if binding is None:
        return "has no valid binding signature"
    if _expired(subkey.created, binding.key_expires, now):
        return "has expired"
    # SECURITY: a signing subkey needs the signing flag and a back-signature (cross-certification), as gpg.
    if binding.key_flags is not None and not binding.key_flags & _KEY_FLAG_SIGN:
        return "is not a signing key"
    if not _has_back_signature(binding, primary, subkey, now):
        return "is not cross-certified (no valid back-signature)"
    return None


def _evaluate_cert(group: list[tuple[int, bytes]], now: float, source: str) -> _Cert | None:
    """The signing keys of one transferable key whose validity the keyring's own signatures establish."""
    primary = _parse_key(group[0][0], group[0][1])
    if primary is None:
        _logger.warning("%s: skipping a non-v4 OpenPGP key (v3 keys are not supported)", source)
        return None
    # Split into: signatures on the primary, (user ID, sigs) components, (subkey, sigs) components.
    direct: list[_Signature] = []
    components: list[tuple[int, bytes, list[_Signature]]] = []
    for tag, body in group[1:]:
        if tag == TAG_SIGNATURE:
            sig = _parse_signature(body)
            if sig is not None:
                (components[-1][2] if components else direct).append(sig)
        elif tag in (TAG_USER_ID, TAG_USER_ATTRIBUTE, TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY):
            components.append((tag, body, []))
    primary_material = primary.hash_material()
    cert = _Cert(primary.fingerprint, [])
    all_keys = [primary] + [k for t, b, _ in components if t in _SUBKEY_TAGS and (k := _parse_key(t, b)) is not None]

    def unusable(reason: str) -> _Cert:
        cert.unusable.update({k.key_id: reason for k in all_keys})
        return cert

    if _valid_self_sigs(direct, primary, primary_material, frozenset({_SIG_KEY_REVOCATION}), now):
        return unusable(f"OpenPGP key {primary.fingerprint} is revoked")
    self_sigs = _valid_self_sigs(direct, primary, primary_material, frozenset({_SIG_DIRECT_KEY}), now)
    for tag, body, sigs in components:
        if tag not in (TAG_USER_ID, TAG_USER_ATTRIBUTE):
            continue
        prefix = b"\xb4" if tag == TAG_USER_ID else b"\xd1"
        material = primary_material + prefix + len(body).to_bytes(4, "big") + body
        if _valid_self_sigs(sigs, primary, material, frozenset({_SIG_CERT_REVOCATION}), now):
            continue  # a revoked user ID does not vouch for the key
        self_sigs += _valid_self_sigs(sigs, primary, material, _SIG_CERTIFICATIONS, now)
    newest = _newest(self_sigs)
    if newest is None:
        # SECURITY: as gpg, a primary key without a valid self-signature is not usable.
        return unusable(f"OpenPGP key {primary.fingerprint} has no valid self-signature")
    if _expired(primary.created, newest.key_expires, now):
        return unusable(f"OpenPGP key {primary.fingerprint} has expired")
    if newest.key_flags is None or newest.key_flags & _KEY_FLAG_SIGN:
        cert.signing_keys.append(primary)
    else:
        cert.unusable[primary.key_id] = f"OpenPGP key {primary.fingerprint} is not a signing key"
    for tag, body, sigs in components:
        subkey = _parse_key(tag, body) if tag in _SUBKEY_TAGS else None
        if subkey is None:
            continue
        problem = _subkey_problem(primary, subkey, sigs, now)
        if problem is None:
            cert.signing_keys.append(subkey)
        else:
            cert.unusable[subkey.key_id] = f"OpenPGP subkey {subkey.fingerprint} of {primary.fingerprint} {problem}"
    return cert


def _load_certs(keyrings: Sequence[bytes], now: float, limits: Limits) -> list[_Cert]:
    """Every certificate of the keyrings.

    Raises:
        ConfigError: a keyring is not OpenPGP, is malformed, or no keyring holds a usable key.
    """
    certs: list[_Cert] = []
    for index, keyring in enumerate(keyrings):
        source = f"trusted keyring #{index + 1}"
        if len(keyring) > limits.max_keyring_bytes:
            msg = f"{source}: larger than {limits.max_keyring_bytes} bytes (max_keyring_bytes)"
            raise ConfigError(msg)
        try:
            packets = read_packets(dearmor(keyring))
            groups: list[list[tuple[int, bytes]]] = []
            for tag, body in packets:
                if tag in (TAG_TRUST, TAG_MARKER):
                    continue
                if tag in (TAG_PUBLIC_KEY, TAG_SECRET_KEY):
                    groups.append([(tag, body)])
                elif not groups:
                    msg = f"{source}: not an OpenPGP keyring (starts with packet tag {tag})"
                    raise ConfigError(msg)
                else:
                    groups[-1].append((tag, body))
            certs += [c for g in groups if (c := _evaluate_cert(g, now, source)) is not None]
        except MalformedOpenPgpError as e:
            msg = f"{source}: malformed OpenPGP keyring ({e})"
            raise ConfigError(msg) from e
    if not certs:
        msg = "no OpenPGP v4 key in the trusted keyrings"
        raise ConfigError(msg)
    return certs


def keyring_fingerprints(
    keyrings: Sequence[bytes], *, now: float | None = None, limits: Limits = DEFAULT_LIMITS
) -> list[str]:
    """The primary fingerprints (upper-case hex) of the keys in ``keyrings`` that can currently sign.

    Raises:
        ConfigError: no v4 key at all, or a malformed keyring.
    """
    return [c.fingerprint for c in _load_certs(keyrings, time.time() if now is None else now, limits) if c.signing_keys]


# --- messages ---------------------------------------------------------------------------------------------


def _decompress(body: bytes, what: str, limits: Limits) -> bytes:
    """The content of a compressed data packet, bounded by ``limits.max_signature_bytes``."""
    if not body:
        msg = f"{what}: empty compressed data packet"
        raise SignatureError(msg)
    algorithm, data = body[0], body[1:]
    cap = limits.max_signature_bytes
    try:
        if algorithm == 0:
            return data
        if algorithm in (1, 2):  # ZIP (raw deflate), ZLIB
            zd = zlib.decompressobj(-15 if algorithm == 1 else 15)
            out = zd.decompress(data, cap + 1)
            complete = zd.eof and not zd.unused_data
        elif algorithm == 3:
            bd = bz2.BZ2Decompressor()
            out = bd.decompress(data, cap + 1)
            complete = bd.eof and not bd.unused_data
        else:
            msg = f"{what}: unsupported OpenPGP compression algorithm {algorithm}"
            raise SignatureError(msg)
    except (zlib.error, OSError, EOFError) as e:
        msg = f"{what}: corrupt compressed data ({e})"
        raise SignatureError(msg) from e
    if len(out) > cap:
        # SECURITY: decompression bombs stop at the cap.
        msg = f"{what}: decompressed signature exceeds {cap} bytes"
        raise SignatureError(msg)
    if not complete:
        # SECURITY: a truncated stream, or bytes after its end, is not the message that was signed.
        msg = f"{what}: compressed data is truncated or followed by extra bytes"
        raise SignatureError(msg)
    return out


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """The payload of a signed message whose signature verified with a trusted key."""

    payload: bytes
    signer_fingerprint: str
    """The PRIMARY key's v4 fingerprint, upper-case hex (what policy ``signedBy`` keys are matched on)."""
    signing_key_fingerprint: str
    """The key that made the signature (the primary or a subkey)."""
    hash_algorithm: str


def _parts(untrusted_message: bytes, what: str, limits: Limits) -> tuple[bytes, bytes, bytes]:
    """``(one-pass body, literal body, signature body)`` of a one-pass signed message.

    Raises:
        SignatureError: anything but [compressed(] one-pass, literal, signature [)].
    """
    try:
        packets = read_packets(dearmor(untrusted_message))
        packets = [p for p in packets if p[0] != TAG_MARKER]
        if len(packets) == 1 and packets[0][0] == TAG_COMPRESSED:
            packets = read_packets(_decompress(packets[0][1], what, limits))
    except MalformedOpenPgpError as e:
        msg = f"{what}: not an OpenPGP signed message ({e})"
        raise SignatureError(msg) from e
    tags = [tag for tag, _ in packets]
    # SECURITY: exactly one signature over exactly one literal packet; no nesting, no detached or
    # multiple signatures (containers/image requires one signature too).
    if tags != [TAG_ONE_PASS, TAG_LITERAL, TAG_SIGNATURE]:
        msg = f"{what}: not a one-pass signed OpenPGP message with one signature (packet tags {tags})"
        raise SignatureError(msg)
    return packets[0][1], packets[1][1], packets[2][1]


def _literal_data(body: bytes, what: str, limits: Limits) -> bytes:
    if len(body) < 6 or len(body) < 6 + body[1]:
        msg = f"{what}: truncated literal data packet"
        raise SignatureError(msg)
    data = body[2 + body[1] + 4 :]
    if len(data) > limits.max_signed_payload_bytes:
        msg = f"{what}: signed payload exceeds {limits.max_signed_payload_bytes} bytes (max_signed_payload_bytes)"
        raise SignatureError(msg)
    return data


def _canonical_text(data: bytes) -> bytes:
    """Text-signature canonical form: CRLF line endings (RFC 4880 §5.2.1, type 0x01)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _document_signature(ops: bytes, sig_body: bytes, what: str) -> _Signature:
    """The parsed signature of a signed message, consistent with its one-pass packet.

    Raises:
        SignatureError: malformed, not v4, not a document signature, inconsistent, or a refused hash.
    """
    try:
        sig = _parse_signature(sig_body)
    except MalformedOpenPgpError as e:
        msg = f"{what}: malformed OpenPGP signature packet ({e})"
        raise SignatureError(msg) from e
    if sig is None:
        msg = f"{what}: only v4 OpenPGP signatures are supported (version {sig_body[:1].hex() or '?'})"
        raise SignatureError(msg)
    if len(ops) < 13 or ops[0] != 3:
        msg = f"{what}: malformed one-pass signature packet"
        raise SignatureError(msg)
    if (ops[1], ops[2], ops[3]) != (sig.sig_type, sig.hash_algorithm, sig.pk_algorithm):
        msg = f"{what}: one-pass signature packet does not match the signature"
        raise SignatureError(msg)
    if sig.sig_type not in (_SIG_BINARY, _SIG_TEXT):
        msg = f"{what}: OpenPGP signature type 0x{sig.sig_type:02x} is not a document signature"
        raise SignatureError(msg)
    if sig.hash_algorithm not in _HASHES:
        # SECURITY: MD5 and RIPEMD-160 are refused.
        msg = f"{what}: OpenPGP signature hash algorithm {sig.hash_algorithm} is not accepted"
        raise SignatureError(msg)
    return sig


def verify_signed_message(
    untrusted_message: bytes,
    trusted_keyrings: Sequence[bytes],
    *,
    what: str = "signature",
    now: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedMessage:
    """Verify a one-pass signed OpenPGP message (``gpg --sign`` output) and return what it signs.

    Args:
        untrusted_message: The signed message, binary or armored.
        trusted_keyrings: Public keyrings (``gpg --export`` output, binary or armored); any of their
            currently valid signing keys may have signed.
        what: Names the signature in messages, e.g. ``"docker://host/repo: signature 1"``.
        now: The current time (seconds since the epoch) for expiry checks; defaults to the clock.
        limits: Caps on the message, payload and keyrings.

    Returns:
        The payload and the primary fingerprint of the signer.

    Raises:
        SignatureError: malformed, oversized, not signed by a valid trusted key, bad signature, expired.
        ConfigError: the keyrings are malformed or hold no v4 key at all (expired or revoked keys are
            a SignatureError naming the reason).
    """
    if len(untrusted_message) > limits.max_signature_bytes:
        msg = f"{what}: larger than {limits.max_signature_bytes} bytes (max_signature_bytes)"
        raise SignatureError(msg)
    clock = time.time() if now is None else now
    certs = _load_certs(trusted_keyrings, clock, limits)
    ops, literal, sig_body = _parts(untrusted_message, what, limits)
    untrusted_data = _literal_data(literal, what, limits)
    sig = _document_signature(ops, sig_body, what)
    issuers = sig.issuer_ids | {f[-16:] for f in sig.issuer_fingerprints} | {ops[4:12].hex().upper()}
    candidates = [(c, k) for c in certs for k in c.signing_keys if k.key_id in issuers]
    if not candidates:
        reasons = sorted({r for c in certs for key_id, r in c.unusable.items() if key_id in issuers})
        names = ", ".join(sorted(issuers))
        detail = "; ".join(reasons) if reasons else "not in the trusted keyrings"
        msg = f"{what}: signed by key {names}, which is not a valid trusted signing key: {detail}"
        raise SignatureError(msg)
    signed = _canonical_text(untrusted_data) if sig.sig_type == _SIG_TEXT else untrusted_data
    for cert, key in candidates:
        if not _verifies(sig, key, signed):
            continue
        # SECURITY: the signature's own validity period, and no signature older than its key.
        if sig.created is None:
            msg = f"{what}: signature by key {key.fingerprint} has no (hashed) creation time"
            raise SignatureError(msg)
        if _expired(sig.created, sig.sig_expires, clock):
            msg = f"{what}: signature by key {key.fingerprint} has expired"
            raise SignatureError(msg)
        if sig.created < key.created:
            msg = f"{what}: signature by key {key.fingerprint} predates the key"
            raise SignatureError(msg)
        hash_name = _HASHES[sig.hash_algorithm]().name
        if sig.hash_algorithm == _HASH_SHA1:
            # SECURITY: SHA-1 data signatures are accepted as gpg 2.2 and containers/image accept them
            # (existing signatures use them); they are only collision-weak for signer-chosen content.
            _logger.warning("%s: signature by key %s uses SHA-1", what, key.fingerprint)
        return VerifiedMessage(untrusted_data, cert.fingerprint, key.fingerprint, hash_name)
    msg = f"{what}: invalid signature by key {candidates[0][1].fingerprint} (the signed data or signature was altered)"
    raise SignatureError(msg)


# --- signing (pysequoia) ------------------------------------------------------------------------------


def sign_message(
    payload: bytes,
    secret_key: bytes,
    *,
    passphrase: bytes | None = None,
    fingerprint: str | None = None,
    source: str = "secret key",
) -> bytes:
    """Make a binary one-pass signed message of ``payload`` (what ``gpg --sign`` makes), with pysequoia.

    Args:
        payload: The data to sign.
        secret_key: A transferable secret key (``gpg --export-secret-keys``), binary or armored; may hold
            several keys when ``fingerprint`` selects one.
        passphrase: Unlocks a protected key.
        fingerprint: The primary fingerprint of the key to use (required if ``secret_key`` holds several).
        source: Names the key in messages.

    Returns:
        The binary signed message.

    Raises:
        ConfigError: not a secret key, no key with ``fingerprint``, wrong or missing passphrase, or no
            signing-capable secret key.
    """
    try:
        packets = read_packets(dearmor(secret_key))
    except MalformedOpenPgpError as e:
        msg = f"{source}: not an OpenPGP secret key ({e})"
        raise ConfigError(msg) from e
    groups: list[bytes] = []
    for tag, body in packets:
        if tag in (TAG_TRUST, TAG_MARKER):
            continue
        if tag in (TAG_SECRET_KEY, TAG_PUBLIC_KEY):
            groups.append(b"")
        if not groups:
            msg = f"{source}: not an OpenPGP secret key (starts with packet tag {tag})"
            raise ConfigError(msg)
        groups[-1] += write_packet(tag, body)
    keys: list[pysequoia.Tsk] = []
    for group in groups:
        try:
            keys.append(pysequoia.Tsk.from_bytes(group))
        except (RuntimeError, ValueError) as e:
            msg = f"{source}: malformed OpenPGP secret key ({first_line(e)})"
            raise ConfigError(msg) from e
    if fingerprint is not None:
        wanted = fingerprint.upper().replace(" ", "")
        keys = [k for k in keys if k.extract_certificate().fingerprint.upper() == wanted]
        if not keys:
            msg = f"{source}: no OpenPGP secret key with fingerprint {wanted}"
            raise ConfigError(msg)
    if len(keys) != 1:
        msg = f"{source}: holds {len(keys)} OpenPGP keys; name the one to sign with by its fingerprint"
        raise ConfigError(msg)
    tsk = keys[0]
    name = tsk.extract_certificate().fingerprint.upper()
    try:
        password = passphrase.decode() if passphrase is not None else None
    except UnicodeDecodeError as e:
        msg = f"{source}: the passphrase of OpenPGP key {name} is not UTF-8"
        raise ConfigError(msg) from e
    try:
        signer = tsk.signer(password)
    except (RuntimeError, ValueError) as e:
        detail = "wrong or missing passphrase, or no usable signing key"
        msg = f"{source}: cannot sign with OpenPGP key {name}: {detail} ({first_line(e)})"
        raise ConfigError(msg) from e
    try:
        return pysequoia.sign(signer, payload, mode=pysequoia.SignatureMode.INLINE, armor=False)
    except (RuntimeError, ValueError) as e:
        msg = f"{source}: signing with OpenPGP key {name} failed: {first_line(e)}"
        raise ConfigError(msg) from e


def export_gnupg_secret_key(
    gnupg_home: Path,
    fingerprint: str,
    *,
    passphrase: bytes | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """``gpg --export-secret-keys FINGERPRINT`` from a GnuPG home (binary; still protected by its passphrase).

    gpg is given ``limits.gpg_export_timeout_s``.

    Raises:
        ConfigError: gpg is missing, fails, or knows no secret key ``fingerprint``.
        TransportError: gpg timed out.
    """
    args = ["gpg", "--homedir", str(gnupg_home), "--batch", "--no-tty", "--pinentry-mode", "loopback"]
    args += ["--passphrase-fd", "0", "--export-secret-keys", fingerprint]
    timeout_s = limits.gpg_export_timeout_s
    try:
        result = subprocess.run(args, input=passphrase or b"", capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError as e:
        msg = "gpg is not installed; give the signing key as a file instead"
        raise ConfigError(msg) from e
    except subprocess.TimeoutExpired as e:
        msg = (
            f"gpg --export-secret-keys {fingerprint} (homedir {gnupg_home}) timed out after {timeout_s:g} s "
            "(gpg_export_timeout_s)"
        )
        raise TransportError(msg) from e
    stderr = result.stderr.decode(errors="replace").strip().splitlines()
    if result.returncode != 0 or not result.stdout:
        detail = stderr[-1] if stderr else f"exit status {result.returncode}, no output"
        msg = f"gpg (homedir {gnupg_home}): no exportable secret key {fingerprint}: {detail}"
        raise ConfigError(msg)
    return result.stdout
