"""The ``pgp`` key wrapper: private options encrypted to OpenPGP certificates (ocicrypt.md §5.3, §7).

A thin adapter from the :class:`KeyWrapper` / :class:`KeyUnwrapper` protocols to
:mod:`cocoguest.crypto.openpgp` (pysequoia), plus recipient lookup. No gpg binary is needed, except by
:func:`export_gnupg_public_keyring` for ``pgp:<uid>`` recipients given without a keyring file.

Invariants:
    * :class:`PgpWrapper` writes one binary OpenPGP message per call: a PKESK v3 per recipient encryption
      key and one SEIPD v1 with MDC (what Go ocicrypt 1.0.3 writes and reads).
    * :class:`PgpUnwrapper` handles only ``org.opencontainers.image.enc.keys.pgp``, never decrypts a message
      without integrity protection, and returns non-empty plaintext or raises :class:`KeyUnwrapError`.
    * :func:`find_recipients` never returns an empty list; a recipient that matches nothing is a
      :class:`ConfigError` (Go drops unknown or unreachable recipients silently; we do not).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cocoguest.crypto import openpgp
from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.annotations import keys_annotation

SCHEME: Final = "pgp"
ANNOTATION_KEY: Final = keys_annotation(SCHEME)


_KEY_HANDLE_HEX_LENGTHS: Final = (16, 40, 64)
"""Long key ID, v4 fingerprint, v6 fingerprint."""


@dataclass(frozen=True)
class PgpPublicKey:
    """One public OpenPGP certificate and the file (or keyring) it came from."""

    cert: openpgp.OpenPgpCert
    source: str

    @property
    def fingerprint(self) -> str:
        """The primary key fingerprint, upper-case hex."""
        return self.cert.fingerprint


@dataclass(frozen=True)
class PgpSecretKey:
    """One OpenPGP secret certificate, already unlocked with its password if it had one."""

    key: openpgp.OpenPgpSecretKey
    source: str

    @property
    def fingerprint(self) -> str:
        """The primary key fingerprint, upper-case hex."""
        return self.key.fingerprint


def load_public_keys(data: bytes, source: str) -> list[PgpPublicKey] | None:
    """Load every certificate of a binary or armored keyring (e.g. ``gpg --export`` output).

    Returns:
        The certificates, or ``None`` if ``data`` is not OpenPGP.

    Raises:
        ConfigError: an OpenPGP keyring without a usable certificate.
    """
    certs = openpgp.parse_certificates(data, source)
    return None if certs is None else [PgpPublicKey(c, source) for c in certs]


def load_secret_keys(data: bytes, source: str, password: bytes | None) -> list[PgpSecretKey] | None:
    """Load and unlock the secret keys of ``gpg --export-secret-keys`` output (binary; armored too).

    Returns:
        The keys, or ``None`` if ``data`` has no OpenPGP secret key material (not OpenPGP, public only).

    Raises:
        ConfigError: a protected key without or with a wrong password, or no secret encryption key.
    """
    keys = openpgp.parse_secret_keys(data, source, password)
    return None if keys is None else [PgpSecretKey(k, source) for k in keys]


def _as_key_handle(recipient: str) -> str | None:
    text = recipient.replace(" ", "").upper().removeprefix("0X")
    if len(text) in _KEY_HANDLE_HEX_LENGTHS and all(c in "0123456789ABCDEF" for c in text):
        return text
    return None


def find_recipients(keys: Sequence[PgpPublicKey], recipient: str, source: str) -> list[PgpPublicKey]:
    """The certificates that ``pgp:<recipient>`` names.

    Go semantics: a User ID whose e-mail address or display name (the name of ``Name <mail>``) equals
    ``recipient`` exactly. Our extension: a full fingerprint or long key ID of the primary key or a subkey
    (hex, any case, optional ``0x`` and spaces).

    Raises:
        ConfigError: no certificate matches (names ``recipient`` and ``source``).
    """
    handle = _as_key_handle(recipient)
    found: dict[str, PgpPublicKey] = {}
    for key in keys:
        by_handle = handle is not None and handle in key.cert.key_handles
        by_uid = any(recipient in (uid.email, uid.name) for uid in key.cert.user_ids)
        if by_handle or by_uid:
            found.setdefault(key.fingerprint, key)
    if not found:
        msg = f"pgp:{recipient}: no key in {source} has this e-mail address, name or fingerprint"
        raise ConfigError(msg)
    return list(found.values())


def export_gnupg_public_keyring(gnupg_home: str | None, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Export the GnuPG public keyring with ``gpg2 --batch --export`` (else ``gpg``), as Go does.

    Only for ``pgp:<uid>`` recipients given without a keyring file.

    Args:
        gnupg_home: The GnuPG home directory; ``None`` lets gpg use ``GNUPGHOME`` or ``~/.gnupg``.
        limits: ``gpg_export_timeout_s`` bounds the gpg run.

    Raises:
        ConfigError: gpg is not installed (Go silently drops the recipient), fails, or exports nothing.
    """
    gpg = shutil.which("gpg2") or shutil.which("gpg")
    where = gnupg_home or "the default GnuPG home"
    if gpg is None:
        msg = (
            "pgp: recipients need gpg to export the GnuPG keyring, and gpg is not installed; install gnupg "
            "or give a keyring file (pgp:<file> from gpg --export)"
        )
        raise ConfigError(msg)
    home = [] if gnupg_home is None else ["--homedir", gnupg_home]
    try:
        done = subprocess.run(
            [gpg, *home, "--batch", "--export"],
            capture_output=True,
            check=False,
            timeout=limits.gpg_export_timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"pgp: cannot export the GnuPG keyring of {where} with {gpg}"
        if isinstance(e, subprocess.TimeoutExpired):
            msg += f" within {limits.gpg_export_timeout_s:g} s (gpg_export_timeout_s)"
        raise ConfigError(msg) from e
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        msg = f"pgp: {gpg} --export failed for {where}: {reason[-1] if reason else done.returncode}"
        raise ConfigError(msg)
    if not done.stdout:
        msg = f"pgp: the GnuPG keyring of {where} is empty"
        raise ConfigError(msg)
    return done.stdout


class PgpWrapper:
    """Wraps private options for OpenPGP recipients."""

    def __init__(self, recipients: Sequence[PgpPublicKey]) -> None:
        """Create a wrapper.

        Args:
            recipients: The certificates; at least one. Duplicates (same fingerprint) are dropped.

        Raises:
            ValueError: ``recipients`` is empty.
        """
        if not recipients:
            msg = "PgpWrapper needs at least one recipient"
            raise ValueError(msg)
        unique = {r.fingerprint: r for r in recipients}
        self._certs = tuple(r.cert for r in unique.values())

    @property
    def annotation_key(self) -> str:
        """``org.opencontainers.image.enc.keys.pgp``."""
        return ANNOTATION_KEY

    def wrap(self, private_options: bytes) -> bytes:
        """Encrypt ``private_options`` to every recipient; one binary OpenPGP message.

        Raises:
            ConfigError: a recipient has no valid encryption key.
            UnsupportedError: the recipients only accept SEIPDv2, which Go cannot read.
        """
        return openpgp.encrypt(private_options, self._certs)


class PgpUnwrapper:
    """Unwraps ``pgp`` entries with OpenPGP secret keys."""

    def __init__(self, secret_keys: Sequence[PgpSecretKey], *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create an unwrapper that tries ``secret_keys`` in order."""
        self._keys = tuple(secret_keys)
        self._limits = limits

    @property
    def scheme(self) -> str:
        """``pgp``."""
        return SCHEME

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.pgp``."""
        return annotation_key == ANNOTATION_KEY

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Recover the private options from one base64-decoded OpenPGP message.

        Raises:
            KeyUnwrapError: the entry is not an integrity-protected public-key message, was tampered with,
                or none of the keys fits.
            ValueError: ``annotation_key`` is not the PGP annotation (programmer error).
        """
        if not self.handles(annotation_key):
            msg = f"PgpUnwrapper cannot unwrap {annotation_key}"
            raise ValueError(msg)
        sources = ", ".join(dict.fromkeys(k.source for k in self._keys)) or "no key files"
        what = f"pgp: an entry of {annotation_key} (secret keys from {sources})"
        return openpgp.decrypt(
            entry,
            [k.key for k in self._keys],
            what,
            self._limits.max_private_options_bytes,
            self._limits.max_key_recipients,
        )
