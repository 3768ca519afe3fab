"""OpenPGP with pysequoia, no gpg binary: certificates, secret keys, encrypt and decrypt (ocicrypt.md §5.3).

This is the only module that imports :mod:`pysequoia`.

Invariants:
    * :func:`encrypt` returns a binary (not armored) message that is exactly one PKESK v3 per recipient
      encryption key followed by one SEIPD v1 (with MDC) packet, which Go's ``golang.org/x/crypto/openpgp``
      and ``gpg`` read. Sequoia picks SEIPDv2 (RFC 9580) when every recipient advertises it; that output is
      refused with :class:`UnsupportedError` rather than written.
    * :func:`decrypt` only decrypts messages whose top level is session-key packets followed by one
      integrity-protected (SEIPD) packet; it returns non-empty plaintext whose integrity sequoia checked
      (MDC or AEAD tag), or raises :class:`KeyUnwrapError`.
    * A secret key is split into one decryptor per secret encryption-capable key (primary or subkey):
      pysequoia's ``Tsk.decryptor()`` holds only the first such key, and gpg encrypts to the newest subkey.
    * Error messages are one line; pysequoia's multi-line (backtrace) texts are cut to their first line and
      kept as the chained cause.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pysequoia
from pysequoia.packet import Packet, PacketPile, Tag

from cocoguest.errors import ConfigError, KeyUnwrapError, UnsupportedError

_logger = logging.getLogger(__name__)

_PKESK_V3 = 3
_SEIPD_V1 = 1
# pysequoia's Tsk.decryptor() error when a (split) key has no usable encryption key; such keys are skipped.
_NO_DECRYPTION_KEY = "No suitable decryption subkey"


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


@dataclass(frozen=True, slots=True)
class OpenPgpSecretKey:
    """An OpenPGP secret key, unlocked: one decryptor per secret encryption-capable key."""

    fingerprint: str
    user_ids: tuple[UserIdInfo, ...]
    decryptors: tuple[pysequoia.PyDecryptor, ...] = field(repr=False, compare=False)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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
            _logger.warning("%s: skipping an unusable OpenPGP certificate: %s", source, _first_line(e))
            continue
        live = {str(u) for u in native.user_ids}  # non-revoked User IDs
        uids = tuple(u for u in _user_ids(group) if u.text in live)
        certs.append(OpenPgpCert(native.fingerprint.upper(), uids, _key_handles(group), native))
    if not certs:
        msg = f"{source}: no usable OpenPGP certificate in the keyring"
        raise ConfigError(msg)
    return certs


def _decryptor(candidate: list[Packet], password: bytes | None, source: str) -> pysequoia.PyDecryptor | None:
    """Unlock the first encryption key of ``candidate``; ``None`` if it has none."""
    fingerprint = candidate[0].fingerprint or "?"
    try:
        tsk = pysequoia.Tsk.from_packets(candidate)
    except (RuntimeError, ValueError) as e:
        msg = f"{source}: OpenPGP secret key {fingerprint.upper()} is malformed: {_first_line(e)}"
        raise ConfigError(msg) from e
    try:
        return tsk.decryptor()
    except (RuntimeError, ValueError) as e:
        if _first_line(e).startswith(_NO_DECRYPTION_KEY):
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
        candidates = [group]
        starts = [i for i, p in enumerate(group) if _is_subkey(p)] + [len(group)]
        candidates += [prefix + group[a:b] for a, b in itertools.pairwise(starts) if _is_secret(group[a])]
        decryptors = [d for c in candidates if (d := _decryptor(c, password, source)) is not None]
        if decryptors:
            fingerprint = (group[0].fingerprint or "?").upper()
            keys.append(OpenPgpSecretKey(fingerprint, _user_ids(group), tuple(decryptors)))
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
                msg = f"OpenPGP key {recipient.fingerprint}: no valid encryption key: {_first_line(e2)}"
                raise ConfigError(msg) from e2
        msg = f"OpenPGP encryption failed: {_first_line(e)}"
        raise ConfigError(msg) from e
    packets = _packets(message) or []
    # Go (x/crypto/openpgp, ProtonMail without AEAD) reads only PKESK v3 + SEIPD v1 (ocicrypt.md §5.3).
    compatible = (
        len(packets) >= 2
        and all(p.tag == Tag.PKESK and p.body[:1] == bytes([_PKESK_V3]) for p in packets[:-1])
        and packets[-1].tag == Tag.SEIP
        and packets[-1].body[:1] == bytes([_SEIPD_V1])
    )
    if not compatible:
        names = ", ".join(r.fingerprint for r in recipients)
        msg = (
            f"OpenPGP keys {names} all advertise SEIPDv2 (RFC 9580), which Go ocicrypt cannot decrypt; "
            "use a v4 key made by gpg 2.2"
        )
        raise UnsupportedError(msg)
    return message


def _check_structure(message: bytes, what: str) -> None:
    packets = _packets(message)
    if not packets:
        msg = f"{what}: not an OpenPGP message"
        raise KeyUnwrapError(msg)
    *session_keys, data = packets
    if any(p.tag == Tag.SED for p in packets):
        # SECURITY: a Symmetrically Encrypted Data packet (tag 9) has no integrity protection (no MDC):
        # it is malleable (EFAIL); never decrypt one.
        msg = f"{what}: OpenPGP message without integrity protection (SED packet) refused"
        raise KeyUnwrapError(msg)
    # SECURITY: only PKESK* followed by one SEIPD (v1 with MDC, or v2 AEAD) is accepted.
    if data.tag != Tag.SEIP or not session_keys or not all(p.tag == Tag.PKESK for p in session_keys):
        tags = ", ".join(str(p.tag).removeprefix("Tag.") for p in packets)
        msg = f"{what}: not a public-key encrypted OpenPGP message (packets: {tags})"
        raise KeyUnwrapError(msg)


def decrypt(message: bytes, keys: Sequence[OpenPgpSecretKey], what: str, max_plaintext: int) -> bytes:
    """Decrypt a public-key encrypted message with the first key that fits.

    Args:
        message: The binary (or armored) OpenPGP message.
        keys: Unlocked secret keys, tried in order.
        what: Names the message and the keys in errors, e.g. ``"pgp entry (keys from a.gpg)"``.
        max_plaintext: Largest plaintext accepted, in bytes.

    Returns:
        The literal data, integrity-checked and non-empty.

    Raises:
        KeyUnwrapError: not an integrity-protected public-key message, no key fits, the message was
            tampered with, or the plaintext is empty or too large.
    """
    _check_structure(message, what)
    last_error: Exception | None = None
    for key in keys:
        for decryptor in key.decryptors:
            try:
                result = pysequoia.decrypt(message, decryptor=decryptor)
            except (RuntimeError, ValueError) as e:
                last_error = e
                continue
            plaintext = result.bytes
            # SECURITY: an empty plaintext is never valid private options; refuse rather than pass it on.
            if not plaintext:
                msg = f"{what}: the decrypted OpenPGP message is empty"
                raise KeyUnwrapError(msg)
            if len(plaintext) > max_plaintext:
                msg = f"{what}: the decrypted OpenPGP message exceeds {max_plaintext} bytes"
                raise KeyUnwrapError(msg)
            return plaintext
    detail = f": {_first_line(last_error)}" if last_error is not None else ""
    msg = f"{what}: none of the OpenPGP secret keys can decrypt the message{detail}"
    raise KeyUnwrapError(msg) from last_error
