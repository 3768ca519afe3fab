"""The ``pkcs11`` key wrapper: private options RSA-OAEP encrypted per recipient (ocicrypt.md §5.4).

Annotation entry (Go field order, compact)::

    {"version":0,"recipients":[{"version":0,"blob":"<base64 std>","hash":"sha256"}]}

There is no hybrid encryption: the private-options JSON itself is the OAEP plaintext, so each recipient
key must be large enough (RSA-2048 with OAEP-SHA256 holds 190 bytes, the options are 193).

Invariants:
    * Writers always record ``hash`` (``sha1`` or ``sha256``; default ``sha256`` as Go ≥ 1.1.4).
    * Readers map an absent or empty ``hash`` to ``sha1`` (Go's historical default); any other hash is
      skipped; a ``version`` other than 0, in the blob or in any recipient, is a :class:`KeyUnwrapError`.
    * Unwrapping needs a token: a key file's private-key object and PIN. Each key file logs in once per
      entry and tries every recipient blob (a wrong PIN is never retried).
    * Configuration problems (module policy, token, PIN, key object) are :class:`ConfigError` naming the
      key file; when no key fits, :class:`KeyUnwrapError` naming ``pkcs11``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Final

from cocoguest.crypto import rsa_oaep
from cocoguest.crypto.keys import PublicKeyMaterial, RSAPublicKey
from cocoguest.crypto.pkcs11_token import TokenKeySelector, open_token_key
from cocoguest.errors import ConfigError, KeyUnwrapError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.annotations import keys_annotation
from cocoguest.ocicrypt.pkcs11_config import Pkcs11KeyFile, Pkcs11ModuleConfig, resolve_pkcs11_module

SCHEME: Final = "pkcs11"
ANNOTATION_KEY: Final = keys_annotation(SCHEME)
DEFAULT_HASH: Final = "sha256"
"""OAEP hash when ``OCICRYPT_OAEP_HASHALG`` is unset (Go ocicrypt ≥ v1.1.4, ``566b808``)."""
BLOB_VERSION: Final = 0
_REASONS_LISTED: Final = 3
"""Failure reasons quoted in a "no key can unwrap" message; the others are counted."""


def _selector(key_file: Pkcs11KeyFile, config: Pkcs11ModuleConfig | None, limits: Limits) -> TokenKeySelector:
    uri = key_file.uri
    # SECURITY: the module is resolved against the policy before anything is loaded.
    module = resolve_pkcs11_module(uri, config, key_file.source)
    return TokenKeySelector(
        module_path=module,
        module_env=tuple(sorted(key_file.module_env.items())),
        source=key_file.source,
        token_label=uri.token,
        slot_id=uri.slot_id,
        serial=uri.serial,
        manufacturer=uri.manufacturer,
        model=uri.model,
        key_id=uri.key_id,
        key_label=uri.object_label,
        pin=uri.read_pin(key_file.source, limits=limits),
    )


class Pkcs11Wrapper:
    """Wraps private options for PKCS#11 recipients: token keys (key files) or plain RSA public keys."""

    def __init__(
        self,
        recipients: Sequence[PublicKeyMaterial | Pkcs11KeyFile],
        hash_alg: str | None,
        module_config: Pkcs11ModuleConfig | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Create a wrapper.

        Args:
            recipients: RSA public keys (software OAEP) and PKCS#11 key files (OAEP inside the token).
            hash_alg: The ``OCICRYPT_OAEP_HASHALG`` value: ``sha1``, ``sha256`` or ``None`` (sha256).
            module_config: The module policy; needed only for key-file recipients.
            limits: ``max_key_file_bytes`` for a token's ``pin-source`` file.

        Raises:
            ConfigError: ``hash_alg`` is not supported, or a public key is not RSA.
            ValueError: ``recipients`` is empty.
        """
        if not recipients:
            msg = "Pkcs11Wrapper needs at least one recipient"
            raise ValueError(msg)
        hash_name = DEFAULT_HASH if hash_alg is None else hash_alg.lower()
        if hash_name not in rsa_oaep.OAEP_HASHES:
            msg = f"OCICRYPT_OAEP_HASHALG: unsupported OAEP hash {hash_alg!r} (use sha1 or sha256)"
            raise ConfigError(msg)
        for recipient in recipients:
            if isinstance(recipient, PublicKeyMaterial) and not isinstance(recipient.key, RSAPublicKey):
                msg = f"{recipient.source}: pkcs11 recipients must be RSA public keys"
                raise ConfigError(msg)
        self._recipients = tuple(recipients)
        self._hash = hash_name
        self._module_config = module_config
        self._limits = limits

    @property
    def annotation_key(self) -> str:
        """``org.opencontainers.image.enc.keys.pkcs11``."""
        return ANNOTATION_KEY

    def _encrypt(self, recipient: PublicKeyMaterial | Pkcs11KeyFile, private_options: bytes) -> bytes:
        if isinstance(recipient, PublicKeyMaterial):
            assert isinstance(recipient.key, RSAPublicKey)  # noqa: S101  (checked in __init__)
            return rsa_oaep.oaep_encrypt(recipient.key, private_options, self._hash, recipient.source)
        with open_token_key(_selector(recipient, self._module_config, self._limits), private=False) as key:
            return key.encrypt(private_options, self._hash)

    def wrap(self, private_options: bytes) -> bytes:
        """Encrypt ``private_options`` to every recipient; the JSON entry as UTF-8 bytes.

        Raises:
            ConfigError: the options exceed a key's OAEP capacity (names the key and its size), or a key
                file's module, token, PIN or key object is unusable.
            UnsupportedError: a token cannot do OAEP with the chosen hash.
        """
        entries = [
            {
                "version": BLOB_VERSION,
                "blob": base64.b64encode(self._encrypt(recipient, private_options)).decode("ascii"),
                "hash": self._hash,
            }
            for recipient in self._recipients
        ]
        blob = {"version": BLOB_VERSION, "recipients": entries}
        return json.dumps(blob, separators=(",", ":")).encode()


def _is_version_zero(value: object) -> bool:
    # Go's uint field: absent means 0; a bool is not a number.
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value == BLOB_VERSION)


def _parse_entry(entry: bytes, what: str, limits: Limits) -> tuple[list[tuple[bytes, str]], list[str]]:
    """The (ciphertext, hash) pairs of an entry, and the reasons recipients were skipped."""
    untrusted = loads(entry, f"pkcs11: {what}", KeyUnwrapError, limits=limits)
    if not isinstance(untrusted, dict) or not isinstance(untrusted.get("recipients"), list):
        msg = f"pkcs11: {what} is not a pkcs11 blob (no recipients list)"
        raise KeyUnwrapError(msg)
    if len(untrusted["recipients"]) > limits.max_key_recipients:
        # SECURITY: every recipient blob costs a token decryption per key; cap the work before any.
        count = len(untrusted["recipients"])
        msg = f"pkcs11: {what} has {count} recipients, more than the {limits.max_key_recipients} accepted"
        raise KeyUnwrapError(msg)
    if not _is_version_zero(untrusted.get("version")):
        msg = f"pkcs11: {what} has blob version {untrusted.get('version')!r}; only 0 is supported"
        raise KeyUnwrapError(msg)
    blobs: list[tuple[bytes, str]] = []
    skipped: list[str] = []
    for index, recipient in enumerate(untrusted["recipients"]):
        if not isinstance(recipient, dict):
            msg = f"pkcs11: {what}: recipient {index} is not an object"
            raise KeyUnwrapError(msg)
        if not _is_version_zero(recipient.get("version")):
            version = recipient.get("version")
            msg = f"pkcs11: {what}: recipient {index} has version {version!r}; only 0 is supported"
            raise KeyUnwrapError(msg)
        hash_name = recipient.get("hash") or "sha1"  # ocicrypt.md §5.4: absent or "" means sha1
        if hash_name not in rsa_oaep.OAEP_HASHES:
            skipped.append(f"recipient {index}: unsupported hash {str(hash_name)[:32]!r}")
            continue
        blob = recipient.get("blob")
        try:
            ciphertext = base64.b64decode(blob, validate=True) if isinstance(blob, str) else b""
        except (binascii.Error, ValueError):
            ciphertext = b""
        if not ciphertext:
            skipped.append(f"recipient {index}: blob is not base64")
            continue
        blobs.append((ciphertext, hash_name))
    return blobs, skipped


class Pkcs11Unwrapper:
    """Unwraps ``pkcs11`` entries with private-key objects on PKCS#11 tokens."""

    def __init__(
        self,
        keys: Sequence[Pkcs11KeyFile],
        module_config: Pkcs11ModuleConfig | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Create an unwrapper that tries the key files in ``keys`` in order.

        Args:
            keys: PKCS#11 key files naming private keys (with ``pin-value`` or ``pin-source``).
            module_config: The module policy; without one no token can be used.
            limits: caps on the entry (recipients, JSON).
        """
        self._keys = tuple(keys)
        self._module_config = module_config
        self._limits = limits

    @property
    def scheme(self) -> str:
        """``pkcs11``."""
        return SCHEME

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.pkcs11``."""
        return annotation_key == ANNOTATION_KEY

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Recover the private options from one base64-decoded ``pkcs11`` entry.

        Raises:
            KeyUnwrapError: the entry is malformed or has an unsupported version, or no key decrypts any
                recipient blob.
            ConfigError: no key fits and a key file could not be used (module policy, token, PIN, key
                object); the first such problem is raised, naming its key file.
            ValueError: ``annotation_key`` is not the pkcs11 annotation (programmer error).
        """
        if not self.handles(annotation_key):
            msg = f"Pkcs11Unwrapper cannot unwrap {annotation_key}"
            raise ValueError(msg)
        what = f"an entry of {annotation_key}"
        blobs, reasons = _parse_entry(entry, what, self._limits)
        if not blobs:
            msg = f"pkcs11: {what} has no usable recipient ({'; '.join(reasons) or 'empty list'})"
            raise KeyUnwrapError(msg)
        config_errors: list[ConfigError] = []
        for key_file in self._keys:
            try:
                with open_token_key(_selector(key_file, self._module_config, self._limits), private=True) as key:
                    for ciphertext, hash_name in blobs:
                        try:
                            return key.decrypt(ciphertext, hash_name)
                        except KeyUnwrapError as e:
                            reasons.append(str(e))
            except ConfigError as e:
                config_errors.append(e)
        if config_errors:
            raise config_errors[0]
        tried = ", ".join(k.source for k in self._keys) or "none given"
        shown = "; ".join(reasons[:_REASONS_LISTED]) + (
            f"; and {len(reasons) - _REASONS_LISTED} more" if len(reasons) > _REASONS_LISTED else ""
        )
        msg = f"pkcs11: no key can unwrap {what} (keys: {tried}; {shown})"
        raise KeyUnwrapError(msg)
