"""RSA-OAEP with keys inside a PKCS#11 token, through python-pkcs11 (ocicrypt.md §5.4).

Used by the ``pkcs11`` key wrapper: encrypt to a public-key object and decrypt with a private-key object,
both with ``CKM_RSA_PKCS_OAEP`` (MGF1 with the same hash as OAEP, empty label), as Go ocicrypt does.

Module loading:
    * python-pkcs11 can load a given shared object only once per process, so loaded modules are cached
      per real path (:func:`loaded_module`).
    * C modules read their configuration from the process environment when they are initialised (e.g.
      SoftHSM's ``SOFTHSM2_CONF`` at ``C_Initialize``); there is no other way to pass it. So the key file's
      ``module.env`` is put into ``os.environ`` for the duration of the load under a process-wide lock and
      restored afterwards (Go ocicrypt's ``setEnvVars``/``restoreEnv`` do the same). When a later key file
      wants the same module with a different environment, the module is re-initialised
      (``C_Finalize``/``C_Initialize``) under that environment.

Invariants:
    * Every token operation, from loading the module to closing the session, runs under one
      process-wide lock, so a re-initialisation never pulls a token out from under another operation.
    * Configuration problems (module cannot be loaded, token not found, wrong PIN, key missing,
      ambiguous or not RSA) are :class:`ConfigError` naming the key's source; decryption failures are
      :class:`KeyUnwrapError`; an OAEP hash the token cannot do is :class:`UnsupportedError` when
      encrypting (it is the user's choice) and :class:`KeyUnwrapError` when decrypting.
    * A failed login is never retried within one operation (tokens lock the PIN after a few failures).
    * The PIN is never part of a ``repr`` or a message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pkcs11
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    ArgumentsBad,
    MechanismInvalid,
    MechanismParamInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    TokenNotPresent,
    TokenNotRecognised,
)
from pkcs11.types import DecryptMixin, EncryptMixin, Key, Session, Token

from cocoguest.crypto import rsa_oaep
from cocoguest.errors import ConfigError, KeyUnwrapError, TransportError, UnsupportedError

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Lib  # noqa: N812  (the class is called lib)

_OAEP_PARAMS: Final[dict[str, tuple[Mechanism, MGF, None]]] = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1, None),
    "sha256": (Mechanism.SHA256, MGF.SHA256, None),
}
# SoftHSM 2.6 answers CKR_ARGUMENTS_BAD for OAEP hashes other than SHA-1; others say MECHANISM_*.
_UNSUPPORTED_MECHANISM: Final = (ArgumentsBad, MechanismInvalid, MechanismParamInvalid)

Env = tuple[tuple[str, str], ...]

_lock = threading.RLock()
_modules: dict[str, tuple[Pkcs11Lib, Env]] = {}


@dataclass(frozen=True, slots=True)
class TokenKeySelector:
    """Which module, token and key object to use, and how to log in.

    Attributes:
        module_path: The PKCS#11 module, already checked against the module policy.
        module_env: Environment the module needs while it is initialised.
        source: Where the selection came from (the key file), for messages.
        token_label: ``token`` of the URI; required unless ``slot_id`` is given.
        slot_id: ``slot-id`` of the URI.
        serial: ``serial`` of the URI (a further filter).
        manufacturer: ``manufacturer`` of the URI (a further filter).
        model: ``model`` of the URI (a further filter).
        key_id: ``id`` of the URI (CKA_ID).
        key_label: ``object`` of the URI (CKA_LABEL).
        pin: The user PIN; required for private-key operations.
    """

    module_path: str
    module_env: Env
    source: str
    token_label: str | None = None
    slot_id: int | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    key_id: bytes | None = None
    key_label: str | None = None
    pin: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Token and key identity for messages (never the PIN)."""
        parts = []
        if self.token_label is not None:
            parts.append(f"token {self.token_label!r}")
        if self.slot_id is not None:
            parts.append(f"slot {self.slot_id}")
        if self.key_label is not None:
            parts.append(f"object {self.key_label!r}")
        if self.key_id is not None:
            parts.append(f"id {self.key_id.hex()}")
        return ", ".join(parts)


class TokenRsaKey:
    """An RSA key object in an open token session; valid only inside :func:`open_token_key`."""

    def __init__(self, key: Key, bits: int, selector: TokenKeySelector) -> None:
        """Wrap a python-pkcs11 key object of ``bits`` bits found with ``selector``."""
        self._key = key
        self._selector = selector
        self.bits = bits

    def encrypt(self, plaintext: bytes, hash_name: str) -> bytes:
        """RSA-OAEP encrypt inside the token.

        Raises:
            ConfigError: the plaintext exceeds the OAEP capacity of the key, or the key cannot encrypt.
            UnsupportedError: the token cannot do OAEP with ``hash_name``.
            TransportError: the token failed otherwise.
        """
        where = f"pkcs11 key {self._selector.source} ({self._selector.describe()})"
        rsa_oaep.check_capacity(self.bits, hash_name, len(plaintext), where)
        if not isinstance(self._key, EncryptMixin):
            msg = f"{where}: the public key object does not allow encryption (CKA_ENCRYPT is false)"
            raise ConfigError(msg)
        try:
            result = self._key.encrypt(
                plaintext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=_OAEP_PARAMS[hash_name]
            )
        except _UNSUPPORTED_MECHANISM as e:
            msg = f"{where}: the token cannot do RSA-OAEP with {hash_name}; set OCICRYPT_OAEP_HASHALG=sha1"
            raise UnsupportedError(msg) from e
        except PKCS11Error as e:
            msg = f"{where}: the token failed to encrypt ({type(e).__name__})"
            raise TransportError(msg) from e
        if not isinstance(result, bytes):  # pragma: no cover — defensive: bytes in, bytes out
            msg = f"{where}: unexpected result type from python-pkcs11"
            raise TypeError(msg)
        return result

    def decrypt(self, ciphertext: bytes, hash_name: str) -> bytes:
        """RSA-OAEP decrypt inside the token.

        Raises:
            KeyUnwrapError: the ciphertext is not for this key or is corrupt, or the token cannot do OAEP
                with ``hash_name``.
            ConfigError: the private key object does not allow decryption.
        """
        where = f"pkcs11 key {self._selector.source} ({self._selector.describe()})"
        if not isinstance(self._key, DecryptMixin):
            msg = f"{where}: the private key object does not allow decryption (CKA_DECRYPT is false)"
            raise ConfigError(msg)
        try:
            result = self._key.decrypt(
                ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=_OAEP_PARAMS[hash_name]
            )
        except _UNSUPPORTED_MECHANISM as e:
            msg = f"{where}: the token cannot do RSA-OAEP with {hash_name} (SoftHSM 2.6 supports only sha1)"
            raise KeyUnwrapError(msg) from e
        except PKCS11Error as e:
            # SECURITY: one generic message for every OAEP failure (no padding-oracle detail).
            msg = f"{where}: RSA-OAEP-{hash_name} decryption failed (wrong key or corrupt data)"
            raise KeyUnwrapError(msg) from e
        if not isinstance(result, bytes):  # pragma: no cover — defensive: bytes in, bytes out
            msg = f"{where}: unexpected result type from python-pkcs11"
            raise TypeError(msg)
        return result


@contextmanager
def _environment(env: Env) -> Iterator[None]:
    # Caller holds _lock. Only the named variables are touched, and each is restored exactly.
    saved = {name: os.environ.get(name) for name, _ in env}
    try:
        for name, value in env:
            os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _load(module_path: str, env: Env, source: str) -> Pkcs11Lib:
    # One entry per file: two paths to one library (a distro symlink) must not initialise it twice.
    real_path = os.path.realpath(module_path)
    cached = _modules.get(real_path)
    try:
        if cached is None:
            with _environment(env):
                lib = pkcs11.lib(real_path)
            _modules[real_path] = (lib, env)
            return lib
        lib, loaded_env = cached
        if loaded_env != env or not lib.initialized:
            with _environment(env):
                lib.reinitialize()
            _modules[real_path] = (lib, env)
    except PKCS11Error as e:
        msg = f"{source}: cannot load the pkcs11 module {module_path} ({str(e) or type(e).__name__})"
        raise ConfigError(msg) from e
    return lib


@contextmanager
def loaded_module(module_path: str, module_env: Env, source: str) -> Iterator[Pkcs11Lib]:
    """Hold the token lock and yield the python-pkcs11 ``lib`` of ``module_path``, loaded with ``module_env``.

    The caller must have checked ``module_path`` against the module policy: loading runs its code.

    Raises:
        ConfigError: the module cannot be loaded or initialised.
    """
    with _lock:
        yield _load(module_path, module_env, source)


def _matches(token: Token, selector: TokenKeySelector) -> bool:
    if selector.token_label is not None and token.label != selector.token_label:
        return False
    if selector.serial is not None and token.serial != selector.serial.encode():
        return False
    if selector.manufacturer is not None and token.manufacturer_id != selector.manufacturer:
        return False
    return selector.model is None or token.model == selector.model


def _find_tokens(lib: Pkcs11Lib, selector: TokenKeySelector) -> list[Token]:
    tokens = []
    try:
        slots = lib.get_slots(token_present=True)
    except PKCS11Error as e:
        msg = f"{selector.source}: cannot list the slots of {selector.module_path} ({type(e).__name__})"
        raise ConfigError(msg) from e
    for slot in slots:
        if selector.slot_id is not None and slot.slot_id != selector.slot_id:
            continue
        try:
            token = slot.get_token()
        except (TokenNotPresent, TokenNotRecognised):
            continue
        if _matches(token, selector):
            tokens.append(token)
    if not tokens:
        msg = f"{selector.source}: no pkcs11 token with {selector.describe()} in {selector.module_path}"
        raise ConfigError(msg)
    return tokens


def _login(lib: Pkcs11Lib, selector: TokenKeySelector, *, private: bool) -> Session:
    if selector.slot_id is None and selector.token_label is None:
        msg = f"{selector.source}: the pkcs11 URI needs a 'token' or a 'slot-id' attribute"
        raise ConfigError(msg)
    if private and selector.pin is None:
        msg = f"{selector.source}: a private-key operation needs pin-value or pin-source in the pkcs11 URI"
        raise ConfigError(msg)
    # Go ocicrypt opens the first matching token where login succeeds; we stop at the first wrong PIN.
    failure: PKCS11Error | None = None
    for token in _find_tokens(lib, selector):
        try:
            return token.open(user_pin=selector.pin) if selector.pin is not None else token.open()
        except (PinIncorrect, PinInvalid, PinLenRange) as e:
            # SECURITY: do not try the same PIN on further tokens or retry: tokens lock after failures.
            msg = f"{selector.source}: wrong PIN for pkcs11 token {token.label!r}"
            raise ConfigError(msg) from e
        except (PinLocked, PinExpired) as e:
            msg = f"{selector.source}: the PIN of pkcs11 token {token.label!r} is locked or expired"
            raise ConfigError(msg) from e
        except PKCS11Error as e:
            failure = e
    msg = f"{selector.source}: cannot open a session on pkcs11 token {selector.describe()}"
    raise ConfigError(msg) from failure


def _find_key(session: Session, selector: TokenKeySelector, *, private: bool) -> TokenRsaKey:
    what = "private" if private else "public"
    attrs: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY if private else ObjectClass.PUBLIC_KEY}
    if selector.key_label is not None:
        attrs[Attribute.LABEL] = selector.key_label
    if selector.key_id is not None:
        attrs[Attribute.ID] = selector.key_id
    if len(attrs) == 1:
        msg = f"{selector.source}: the pkcs11 URI needs an 'id' or an 'object' attribute"
        raise ConfigError(msg)
    try:
        found = list(session.get_objects(attrs))
    except PKCS11Error as e:
        msg = f"{selector.source}: searching the pkcs11 token failed ({type(e).__name__})"
        raise ConfigError(msg) from e
    if not found:
        msg = f"{selector.source}: no {what} key with {selector.describe()} on the pkcs11 token"
        raise ConfigError(msg)
    if len(found) > 1:
        msg = f"{selector.source}: {len(found)} {what} keys match {selector.describe()}; make the URI unique"
        raise ConfigError(msg)
    key = found[0]
    if not isinstance(key, Key) or key.key_type != KeyType.RSA:
        msg = f"{selector.source}: the {what} key with {selector.describe()} is not an RSA key"
        raise ConfigError(msg)
    bits = int.from_bytes(key[Attribute.MODULUS], "big").bit_length()
    return TokenRsaKey(key, bits, selector)


@contextmanager
def open_token_key(selector: TokenKeySelector, *, private: bool) -> Iterator[TokenRsaKey]:
    """Log in to the token and yield the selected RSA public (or private) key object.

    The token lock is held and the session open until the ``with`` block ends.

    Raises:
        ConfigError: module, token or key not found, wrong PIN, no PIN for a private key, not an RSA key.
    """
    with loaded_module(selector.module_path, selector.module_env, selector.source) as lib:
        session = _login(lib, selector, private=private)
        try:
            yield _find_key(session, selector, private=private)
        finally:
            session.close()
