"""OpenPGP with pysequoia, no gpg binary: certificates, secret keys, encrypt and decrypt (ocicrypt.md §5.3).

With :mod:`.openpgp_sign` (signing), the only importer of :mod:`pysequoia`; packets are read by
:mod:`.openpgp_packets`. Sequoia does all key handling and encryption, and
decrypts what gpg and sequoia write. It cannot read what Go's ``golang.org/x/crypto/openpgp`` (skopeo
1.9.3) writes: partial body chunks under 512 octets, inside and outside the encryption, and RSA MPIs with a
bit count of ``8 * len``. For those, RSA PKESK v3 + SEIPD v1 (AES, MDC, one literal packet) is decrypted
here with :mod:`cryptography`, using the RSA encryption keys sequoia unlocked.

Invariants:
    * :func:`encrypt` returns a binary (not armored) message that is exactly one PKESK v3 per recipient
      encryption key followed by one SEIPD v1 (with MDC) packet, which Go and ``gpg`` read. Sequoia picks
      SEIPDv2 (RFC 9580) when every recipient advertises it; that output is refused with
      :class:`UnsupportedError` rather than written.
    * :func:`decrypt` only decrypts binary messages whose top level is PKESK packets followed by one SEIPD
      packet (SED, tag 9, is refused); it returns non-empty plaintext whose MDC or AEAD tag was checked
      before the plaintext was parsed, or raises :class:`KeyUnwrapError`. Before sequoia sees a message it
      is re-framed (definite lengths, canonical RSA MPIs); no encrypted octet is changed.
    * A secret key is split into one decryptor per secret encryption-capable key (primary or subkey):
      pysequoia's ``Tsk.decryptor()`` holds only the first such key, and gpg encrypts to the newest subkey.
    * Error messages are one line; pysequoia's multi-line (backtrace) texts are cut to their first line and
      kept as the chained cause.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pysequoia
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pysequoia.packet import Packet, PacketPile, Tag

from cocoguest.crypto.openpgp_packets import (
    TAG_LITERAL,
    TAG_PKESK,
    TAG_SED,
    TAG_SEIPD,
    MalformedOpenPgpError,
    first_line,
    read_mpi,
    read_packets,
    write_packet,
)
from cocoguest.errors import ConfigError, KeyUnwrapError, UnsupportedError

_logger = logging.getLogger(__name__)

_PKESK_V3 = 3
_SEIPD_V1 = 1
# pysequoia's Tsk.decryptor() error when a (split) key has no usable encryption key; such keys are skipped.
_NO_DECRYPTION_KEY = "No suitable decryption subkey"
_MDC_LENGTH = 22  # MDC packet: header 0xD3 0x14 + SHA-1
_AES_KEY_SIZES = {7: 16, 8: 24, 9: 32}  # AES-128/192/256 (RFC 4880 §9.2)
_HASHES = {2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}  # RFC 4880 §9.4
_RSA_ALGORITHMS = (1, 2)  # RSA (encrypt or sign), RSA encrypt-only (RFC 4880 §9.1)
_PKESK_V3_MPI_OFFSET = 10  # version (1) + key ID (8) + algorithm (1)


@dataclass(frozen=True, slots=True)
class UserIdInfo:
    """One User ID: the full text and, when it parses as ``Name (comment) <mail>``, its name and e-mail."""

    text: str
    name: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class OpenPgpCert:
    """A public OpenPGP certificate.

    ``key_handles`` holds the upper-case hex fingerprints and long key IDs of the primary key and all
    subkeys.
    """

    fingerprint: str
    user_ids: tuple[UserIdInfo, ...]
    key_handles: frozenset[str]
    native: pysequoia.Cert = field(repr=False, compare=False)


_RsaKey = tuple[bytes, rsa.RSAPrivateKey]  # (8-octet key ID, key)


@dataclass(frozen=True, slots=True)
class OpenPgpSecretKey:
    """An OpenPGP secret key, unlocked: one decryptor per secret encryption-capable key.

    ``go_compat_keys`` holds the same RSA encryption keys for messages sequoia cannot read (Go's).
    """

    fingerprint: str
    user_ids: tuple[UserIdInfo, ...]
    decryptors: tuple[pysequoia.PyDecryptor, ...] = field(repr=False, compare=False)
    go_compat_keys: tuple[_RsaKey, ...] = field(default=(), repr=False, compare=False)


def _packets(data: bytes) -> list[Packet] | None:
    """Parse binary or armored OpenPGP data into its top-level packets; ``None`` if it is not OpenPGP."""
    try:
        return list(PacketPile.from_bytes(data))
    except (RuntimeError, ValueError):
        return None


def _is_primary(packet: Packet) -> bool:
    return packet.tag in (Tag.PublicKey, Tag.SecretKey)


def _is_subkey(packet: Packet) -> bool:
    return packet.tag in (Tag.PublicSubkey, Tag.SecretSubkey)


def _is_secret(packet: Packet) -> bool:
    return packet.tag in (Tag.SecretKey, Tag.SecretSubkey)


def _split_transferable_keys(packets: list[Packet]) -> list[list[Packet]] | None:
    """Group a keyring's packets into transferable keys; ``None`` if it does not start with a key."""
    groups: list[list[Packet]] = []
    for packet in packets:
        if packet.tag in (Tag.Trust, Tag.Marker):
            continue  # gpg 1 secring trust packets and markers carry nothing we use
        if _is_primary(packet):
            groups.append([packet])
        elif not groups:
            return None
        else:
            groups[-1].append(packet)
    return groups or None


def _user_ids(group: list[Packet]) -> tuple[UserIdInfo, ...]:
    return tuple(
        UserIdInfo(text, p.user_id_name, p.user_id_email)
        for p in group
        if p.tag == Tag.UserID and (text := p.user_id) is not None
    )


def _key_handles(group: list[Packet]) -> frozenset[str]:
    handles: set[str] = set()
    for packet in group:
        if _is_primary(packet) or _is_subkey(packet):
            handles.update(h.upper() for h in (packet.fingerprint, packet.key_id) if h)
    return frozenset(handles)


def parse_certificates(data: bytes, source: str) -> list[OpenPgpCert] | None:
    """Parse a public keyring or certificate (binary or armored; secret parts are dropped).

    Args:
        data: The file contents, e.g. the output of ``gpg --export``.
        source: Where ``data`` came from, for messages.

    Returns:
        The certificates, or ``None`` if ``data`` is not an OpenPGP keyring.

    Raises:
        ConfigError: it is a keyring but none of its certificates can be used.
    """
    packets = _packets(data)
    groups = _split_transferable_keys(packets) if packets else None
    if groups is None:
        return None
    certs: list[OpenPgpCert] = []
    for group in groups:
        try:
            # Round-trip through bytes(): serializing a Cert writes only its public parts.
            native = pysequoia.Cert.from_bytes(bytes(pysequoia.Cert.from_packets(group)))
        except (RuntimeError, ValueError) as e:
            # A gpg keyring can hold keys sequoia refuses (v3 keys, SHA-1 self-signatures); skip them.
            _logger.warning("%s: skipping an unusable OpenPGP certificate: %s", source, first_line(e))
            continue
        live = {str(u) for u in native.user_ids}  # non-revoked User IDs
        uids = tuple(u for u in _user_ids(group) if u.text in live)
        certs.append(OpenPgpCert(native.fingerprint.upper(), uids, _key_handles(group), native))
    if not certs:
        msg = f"{source}: no usable OpenPGP certificate in the keyring"
        raise ConfigError(msg)
    return certs


def _can_encrypt(signatures: list[Packet]) -> bool:
    """Whether a subkey's binding signatures give it an encryption flag."""
    for signature in signatures:
        flags = signature.key_flags
        if flags is not None and (flags.transport_encryption or flags.storage_encryption):
            return True
    return False


def _decryptor(candidate: list[Packet], password: bytes | None, source: str) -> pysequoia.PyDecryptor | None:
    """Unlock the first encryption key of ``candidate``; ``None`` if it has none."""
    fingerprint = candidate[0].fingerprint or "?"
    try:
        tsk = pysequoia.Tsk.from_packets(candidate)
    except (RuntimeError, ValueError) as e:
        msg = f"{source}: OpenPGP secret key {fingerprint.upper()} is malformed: {first_line(e)}"
        raise ConfigError(msg) from e
    try:
        return tsk.decryptor()
    except (RuntimeError, ValueError) as e:
        if first_line(e).startswith(_NO_DECRYPTION_KEY):
            return None
        if password is None:
            msg = f"{source}: OpenPGP secret key {fingerprint.upper()} is password-protected; give a password"
            raise ConfigError(msg) from e
    try:
        text = password.decode()
    except UnicodeDecodeError as e:
        msg = f"{source}: the password of OpenPGP secret key {fingerprint.upper()} is not UTF-8"
        raise ConfigError(msg) from e
    try:
        return tsk.decryptor(text)
    except (RuntimeError, ValueError) as e:
        msg = f"{source}: wrong password for OpenPGP secret key {fingerprint.upper()}"
        raise ConfigError(msg) from e


def parse_secret_keys(data: bytes, source: str, password: bytes | None) -> list[OpenPgpSecretKey] | None:
    """Parse and unlock secret keys (``gpg --export-secret-keys`` output, binary or armored).

    Args:
        data: The file contents.
        source: Where ``data`` came from, for messages.
        password: Unlocks protected keys; unprotected keys ignore it.

    Returns:
        The keys that have a secret encryption key, or ``None`` if ``data`` holds no OpenPGP secret key
        material (not OpenPGP, or public keys only).

    Raises:
        ConfigError: a protected key without or with a wrong password, a malformed key, or secret keys
            none of which can decrypt.
    """
    packets = _packets(data)
    groups = _split_transferable_keys(packets) if packets else None
    if groups is None or not any(_is_secret(p) for g in groups for p in g):
        return None
    keys: list[OpenPgpSecretKey] = []
    for group in groups:
        first_subkey = next((i for i, p in enumerate(group) if _is_subkey(p)), len(group))
        prefix = group[:first_subkey]
        # One candidate per subkey (primary + User IDs + that subkey and its binding signatures), plus
        # the primary alone in case it is itself encryption-capable.
        candidates = [(group[0], prefix)] if _is_secret(group[0]) else []
        starts = [i for i, p in enumerate(group) if _is_subkey(p)] + [len(group)]
        candidates += [(group[a], prefix + group[a:b]) for a, b in itertools.pairwise(starts) if _is_secret(group[a])]
        decryptors: list[pysequoia.PyDecryptor] = []
        usable: list[Packet] = []
        for key_packet, candidate in candidates:
            decryptor = _decryptor(candidate, password, source)
            if decryptor is not None:
                decryptors.append(decryptor)
                if key_packet is group[0] or _can_encrypt(candidate[len(prefix) + 1 :]):
                    usable.append(key_packet)
        if decryptors:
            fingerprint = (group[0].fingerprint or "?").upper()
            compat = _go_compat_keys(usable, password)
            keys.append(OpenPgpSecretKey(fingerprint, _user_ids(group), tuple(decryptors), compat))
    if not keys:
        msg = f"{source}: no OpenPGP secret key in it can decrypt (no secret encryption subkey)"
        raise ConfigError(msg)
    return keys


def encrypt(plaintext: bytes, recipients: Sequence[OpenPgpCert]) -> bytes:
    """Encrypt ``plaintext`` to every recipient: one binary message (PKESK v3s + SEIPD v1 with MDC).

    The symmetric cipher follows the recipients' preferences (AES-256 for gpg 2.2 keys), as in Go.

    Raises:
        ConfigError: a recipient has no valid encryption-capable key.
        UnsupportedError: the recipients advertise SEIPDv2, which Go ocicrypt cannot read.
        ValueError: ``recipients`` is empty.
    """
    if not recipients:
        msg = "OpenPGP encryption needs at least one recipient"
        raise ValueError(msg)
    try:
        message = pysequoia.encrypt(plaintext, recipients=[r.native for r in recipients], armor=False)
    except (RuntimeError, ValueError) as e:
        for recipient in recipients:  # find the culprit (error path only)
            try:
                pysequoia.encrypt(b"probe", recipients=[recipient.native], armor=False)
            except (RuntimeError, ValueError) as e2:
                msg = f"OpenPGP key {recipient.fingerprint}: no valid encryption key: {first_line(e2)}"
                raise ConfigError(msg) from e2
        msg = f"OpenPGP encryption failed: {first_line(e)}"
        raise ConfigError(msg) from e
    packets = read_packets(message)
    # Go (x/crypto/openpgp, ProtonMail without AEAD) reads only PKESK v3 + SEIPD v1 (ocicrypt.md §5.3).
    compatible = (
        len(packets) >= 2
        and all(tag == TAG_PKESK and body[:1] == bytes([_PKESK_V3]) for tag, body in packets[:-1])
        and packets[-1][0] == TAG_SEIPD
        and packets[-1][1][:1] == bytes([_SEIPD_V1])
    )
    if not compatible:
        names = ", ".join(r.fingerprint for r in recipients)
        msg = (
            f"OpenPGP keys {names} all advertise SEIPDv2 (RFC 9580), which Go ocicrypt cannot decrypt; "
            "use a v4 key made by gpg 2.2"
        )
        raise UnsupportedError(msg)
    return message


# --- message framing (RFC 4880 §4.2; packets are read by :mod:`cocoguest.crypto.openpgp_packets`) ------------


def _canonical_pkesk(body: bytes) -> bytes:
    """An RSA PKESK v3 body with a canonical MPI (true bit count, no leading zero octets).

    Go's ``golang.org/x/crypto/openpgp`` (skopeo 1.9.3) writes the RSA ciphertext with a bit count of
    ``8 * len(ciphertext)``; sequoia refuses that ("leading bit is not set"). The value is unchanged.
    """
    if len(body) <= _PKESK_V3_MPI_OFFSET or body[0] != _PKESK_V3 or body[9] not in _RSA_ALGORITHMS:
        return body
    value, end = read_mpi(body, _PKESK_V3_MPI_OFFSET)
    bits = value.bit_length()
    mpi = bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")
    return body[:_PKESK_V3_MPI_OFFSET] + mpi + body[end:]


def _split_message(message: bytes, what: str) -> tuple[list[bytes], bytes]:
    """``(PKESK bodies, SEIPD body)`` of a binary public-key encrypted message.

    Raises:
        KeyUnwrapError: malformed, not integrity-protected, or not PKESK+ followed by one SEIPD.
    """
    try:
        packets = read_packets(message)
    except MalformedOpenPgpError as e:
        msg = f"{what}: not a binary OpenPGP message ({e})"
        raise KeyUnwrapError(msg) from e
    tags = [tag for tag, _ in packets]
    if TAG_SED in tags:
        # SECURITY: a Symmetrically Encrypted Data packet (tag 9) has no integrity protection (no MDC); it
        # is malleable (EFAIL). Never decrypt one.
        msg = f"{what}: OpenPGP message without integrity protection (SED packet) refused"
        raise KeyUnwrapError(msg)
    # SECURITY: only PKESK+ followed by exactly one SEIPD (v1 with MDC, or v2 AEAD) is accepted.
    if len(tags) < 2 or tags[-1] != TAG_SEIPD or any(t != TAG_PKESK for t in tags[:-1]):
        msg = f"{what}: not a public-key encrypted OpenPGP message (packet tags {tags})"
        raise KeyUnwrapError(msg)
    return [body for _, body in packets[:-1]], packets[-1][1]


# --- Go compatibility: RSA PKESK v3 + SEIPD v1 decrypted here --------------------------------------------
# Go's x/crypto/openpgp writes partial body chunks of 128, 64, ... octets (inside the encryption, too);
# RFC 4880 §4.2.2.4 wants the first chunk >= 512 and sequoia enforces it, so it cannot read any message
# skopeo 1.9.3 makes. Go only encrypts to RSA and ElGamal keys, so RSA is handled here.


def _s2k_key(password: bytes, spec: bytes, key_size: int) -> tuple[bytes, int]:
    """``(key, spec_length)`` from a simple, salted or iterated+salted S2K specifier (RFC 4880 §3.7)."""
    kind, hash_name = spec[0], _HASHES.get(spec[1])
    if hash_name is None or kind not in (0, 1, 3):
        raise MalformedOpenPgpError(f"unsupported S2K {kind}/{spec[1]}")
    salt = spec[2:10] if kind else b""
    length = {0: 2, 1: 10, 3: 11}[kind]
    seed = salt + password
    count = len(seed)
    if kind == 3:
        c = spec[10]
        count = max(count, (16 + (c & 15)) << ((c >> 4) + 6))
    block = seed * max(1, 65536 // max(1, len(seed)))
    key = b""
    preload = 0
    while len(key) < key_size:
        h = hashlib.new(hash_name, b"\0" * preload)
        remaining = count
        while remaining > 0:
            h.update(block[: min(remaining, len(block))])
            remaining -= len(block)
        key += h.digest()
        preload += 1
    return key[:key_size], length


def _rsa_secret_key(body: bytes, password: bytes | None) -> rsa.RSAPrivateKey | None:
    """The RSA private key of a v4 secret key packet body; ``None`` if not RSA or not decodable."""
    if len(body) < 6 or body[0] != 4 or body[5] not in _RSA_ALGORITHMS:  # v4 key packets only
        return None
    n, pos = read_mpi(body, 6)
    e, pos = read_mpi(body, pos)
    usage, pos = body[pos], pos + 1
    if usage == 0:
        secret = body[pos:-2]
    elif usage in (254, 255) and password is not None and body[pos] in _AES_KEY_SIZES:
        key_size = _AES_KEY_SIZES[body[pos]]
        key, spec_length = _s2k_key(password, body[pos + 1 :], key_size)
        iv_start = pos + 1 + spec_length
        iv, encrypted = body[iv_start : iv_start + 16], body[iv_start + 16 :]
        plain = Cipher(algorithms.AES(key), CFB(iv)).decryptor().update(encrypted)
        if usage == 254:  # SHA-1 check value (255: 2-octet sum)
            secret, check = plain[:-20], plain[-20:]
            if not hmac.compare_digest(hashlib.sha1(secret).digest(), check):  # noqa: S324 — RFC 4880 §5.5.3
                return None
        else:
            secret = plain[:-2]
    else:
        return None
    d, pos = read_mpi(secret, 0)
    p, pos = read_mpi(secret, pos)
    q, pos = read_mpi(secret, pos)
    try:
        numbers = rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
            rsa.RSAPublicNumbers(e, n),
        )  # fmt: skip
        return numbers.private_key()
    except ValueError:
        return None


def _go_compat_keys(usable: list[Packet], password: bytes | None) -> tuple[_RsaKey, ...]:
    """The RSA encryption keys among ``usable`` (key packets sequoia unlocked for decryption)."""
    keys: list[_RsaKey] = []
    for packet in usable:
        try:
            key = _rsa_secret_key(packet.body, password)
        except (MalformedOpenPgpError, IndexError, KeyError):
            key = None
        if key is not None and packet.key_id:
            keys.append((bytes.fromhex(packet.key_id), key))
    return tuple(keys)


def _session_key(pkesk: bytes, keys: Sequence[_RsaKey]) -> tuple[int, bytes] | None:
    """``(cipher, key)`` from an RSA PKESK v3 addressed to one of ``keys`` (or to a wildcard key ID)."""
    if len(pkesk) <= _PKESK_V3_MPI_OFFSET or pkesk[0] != _PKESK_V3 or pkesk[9] not in _RSA_ALGORITHMS:
        return None
    key_id = pkesk[1:9]
    value, _ = read_mpi(pkesk, _PKESK_V3_MPI_OFFSET)
    for candidate_id, key in keys:
        if key_id not in (candidate_id, bytes(8)):
            continue
        size = (key.key_size + 7) // 8
        if value >= key.public_key().public_numbers().n:
            continue
        try:
            session = key.decrypt(value.to_bytes(size, "big"), padding.PKCS1v15())
        except ValueError:
            continue
        cipher, sym_key, checksum = session[0], session[1:-2], session[-2:]
        if _AES_KEY_SIZES.get(cipher) == len(sym_key) and sum(sym_key) % 65536 == int.from_bytes(checksum, "big"):
            return cipher, sym_key
    return None


def _decrypt_seipd_v1(seipd: bytes, sym_key: bytes) -> bytes | None:
    """The literal data of a SEIPD v1 body, or ``None`` if the MDC does not match."""
    if not seipd or seipd[0] != _SEIPD_V1:
        return None
    plain = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor().update(seipd[1:])
    if len(plain) < 16 + 2 + _MDC_LENGTH:
        return None
    # SECURITY: the MDC (SHA-1 over prefix, data and the MDC header) is checked before anything is parsed.
    expected = hashlib.sha1(plain[:-20]).digest()  # noqa: S324 — the MDC is SHA-1 by definition
    if plain[-_MDC_LENGTH:-20] != b"\xd3\x14" or not hmac.compare_digest(expected, plain[-20:]):
        return None
    packets = read_packets(plain[18:-_MDC_LENGTH])
    if len(packets) != 1 or packets[0][0] != TAG_LITERAL:
        raise MalformedOpenPgpError(f"expected one literal data packet, got tags {[t for t, _ in packets]}")
    literal = packets[0][1]
    return literal[2 + literal[1] + 4 :]  # format, name length, name, date


def _go_compat_decrypt(pkesks: list[bytes], seipd: bytes, keys: Sequence[OpenPgpSecretKey]) -> bytes | None:
    rsa_keys = [k for key in keys for k in key.go_compat_keys]
    for pkesk in pkesks:
        session = _session_key(pkesk, rsa_keys)
        if session is not None:
            return _decrypt_seipd_v1(seipd, session[1])
    return None


# --- decryption -------------------------------------------------------------------------------------------


def decrypt(
    message: bytes, keys: Sequence[OpenPgpSecretKey], what: str, max_plaintext: int, max_recipients: int
) -> bytes:
    """Decrypt a binary public-key encrypted message with the first key that fits.

    Sequoia decrypts (after canonical re-framing); RSA + SEIPD v1 messages it refuses (Go's) are decrypted
    here with the same keys.

    Args:
        message: The binary OpenPGP message.
        keys: Unlocked secret keys, tried in order.
        what: Names the message and the keys in errors, e.g. ``"pgp: an entry (keys from a.gpg)"``.
        max_plaintext: Largest plaintext accepted, in bytes.
        max_recipients: Most session key packets (recipients) accepted: each costs work per key.

    Returns:
        The literal data, integrity-checked and non-empty.

    Raises:
        KeyUnwrapError: not an integrity-protected public-key message, no key fits, the message was
            tampered with, or the plaintext is empty or too large.
    """
    pkesks, seipd = _split_message(message, what)
    if len(pkesks) > max_recipients:
        # SECURITY: every session key packet is tried with every key; cap the work before trying any.
        msg = f"{what}: {len(pkesks)} session key packets, more than the {max_recipients} accepted"
        raise KeyUnwrapError(msg)
    try:
        canonical = b"".join(write_packet(TAG_PKESK, _canonical_pkesk(b)) for b in pkesks)
    except MalformedOpenPgpError as e:
        msg = f"{what}: malformed OpenPGP session key packet"
        raise KeyUnwrapError(msg) from e
    canonical += write_packet(TAG_SEIPD, seipd)
    plaintext: bytes | None = None
    last_error: Exception | None = None
    for decryptor in (d for key in keys for d in key.decryptors):
        try:
            plaintext = pysequoia.decrypt(canonical, decryptor=decryptor).bytes
            break
        except (RuntimeError, ValueError) as e:
            last_error = e
    if plaintext is None:
        try:
            plaintext = _go_compat_decrypt(pkesks, seipd, keys)
        except (MalformedOpenPgpError, IndexError) as e:
            last_error = e
    if plaintext is None:
        detail = f": {first_line(last_error)}" if last_error is not None else ""
        msg = f"{what}: none of the OpenPGP secret keys can decrypt the message{detail}"
        raise KeyUnwrapError(msg) from last_error
    # SECURITY: an empty plaintext is never valid private options; refuse rather than pass it on.
    if not plaintext:
        msg = f"{what}: the decrypted OpenPGP message is empty"
        raise KeyUnwrapError(msg)
    if len(plaintext) > max_plaintext:
        msg = f"{what}: the decrypted OpenPGP message exceeds {max_plaintext} bytes"
        raise KeyUnwrapError(msg)
    return plaintext
