"""The private and public options JSON of the layer cipher (ocicrypt.md §4.1).

Private options (``symkey``, ``digest``, ``cipheroptions.nonce``) are what key wrappers encrypt; public
options (``cipher``, ``hmac``, ``cipheroptions``) live base64'd in the ``pubopts`` annotation.

Invariants:
    * Writers emit all six fields, compact, in Go's field order; ``cipheroptions`` is always an object.
    * Readers take members in any order but require a known cipher, a 32-byte key, a 32-byte HMAC and a
      16-byte nonce (Go and ocicrypt-rs invent a random nonce when it is missing; we refuse).
    * The private ``digest`` is informational only and never trusted (ocicrypt.md §4.1).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Final

from cocoguest.crypto import layer_cipher
from cocoguest.errors import ProtocolError, UnsupportedError
from cocoguest.jsonutil import load_object

SUPPORTED_CIPHERS: Final = frozenset({layer_cipher.CIPHER_NAME})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, field: str, what: str) -> bytes:
    if not isinstance(value, str):
        msg = f"{what}: field {field!r} must be a base64 string"
        raise ProtocolError(msg)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"{what}: field {field!r} is not valid base64"
        raise ProtocolError(msg) from e


def _load(data: bytes, what: str) -> dict[str, object]:
    return load_object(data, what)


def _cipher_options(obj: dict[str, object], what: str) -> dict[str, bytes]:
    raw = obj.get("cipheroptions")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        msg = f"{what}: field 'cipheroptions' must be an object"
        raise ProtocolError(msg)
    return {str(k): _unb64(v, f"cipheroptions.{k}", what) for k, v in raw.items()}


@dataclass(frozen=True, slots=True)
class PrivateOptions:
    """The secret half: layer key, nonce and the plaintext digest (informational)."""

    symkey: bytes
    nonce: bytes
    digest: str = ""

    @classmethod
    def generate(cls, digest: str) -> PrivateOptions:
        """Fresh random key and nonce for one layer."""
        return cls(layer_cipher.new_key(), layer_cipher.new_nonce(), digest)

    def to_json(self) -> bytes:
        """Exact Go/skopeo form (193 bytes with a sha256 digest)."""
        obj = {
            "symkey": _b64(self.symkey),
            "digest": self.digest,
            "cipheroptions": {"nonce": _b64(self.nonce)},
        }
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str, public: PublicOptions | None = None) -> PrivateOptions:
        """Parse unwrapped private options; ``public`` supplies a nonce Go may have put there.

        Raises:
            ProtocolError: malformed JSON, a key that is not 32 bytes, or a missing/short nonce.
        """
        obj = _load(data, what)
        symkey = _unb64(obj.get("symkey"), "symkey", what)
        if len(symkey) != layer_cipher.KEY_BYTES:
            msg = f"{what}: symkey is {len(symkey)} bytes, expected {layer_cipher.KEY_BYTES}"
            raise ProtocolError(msg)
        options = _cipher_options(obj, what)
        # Go's GetOpt looks in the public cipheroptions first, then in the private ones (ocicrypt.md §4.2).
        nonce = (public.cipher_options.get("nonce") if public else None) or options.get("nonce")
        # SECURITY: Go and ocicrypt-rs silently make up a nonce here and produce garbage; refuse instead.
        if nonce is None:
            msg = f"{what}: no nonce in the cipher options"
            raise ProtocolError(msg)
        if len(nonce) != layer_cipher.NONCE_BYTES:
            msg = f"{what}: nonce is {len(nonce)} bytes, expected {layer_cipher.NONCE_BYTES}"
            raise ProtocolError(msg)
        digest = obj.get("digest", "")
        return cls(symkey, nonce, digest if isinstance(digest, str) else "")


@dataclass(frozen=True, slots=True)
class PublicOptions:
    """The public half: cipher name, HMAC and (normally empty) public cipher options."""

    cipher: str
    hmac: bytes
    cipher_options: dict[str, bytes]

    def to_json(self) -> bytes:
        """Exact Go/skopeo form."""
        options = {k: _b64(v) for k, v in sorted(self.cipher_options.items())}
        obj = {"cipher": self.cipher, "hmac": _b64(self.hmac), "cipheroptions": options}
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> PublicOptions:
        """Parse public options.

        Raises:
            ProtocolError: malformed, or no HMAC.
            UnsupportedError: an unknown cipher.
        """
        obj = _load(data, what)
        cipher = obj.get("cipher")
        if not isinstance(cipher, str) or not cipher:
            msg = f"{what}: no cipher type provided"
            raise ProtocolError(msg)
        if cipher not in SUPPORTED_CIPHERS:
            msg = f"{what}: unknown cipher {cipher!r} (supported: {', '.join(sorted(SUPPORTED_CIPHERS))})"
            raise UnsupportedError(msg)
        mac = _unb64(obj.get("hmac"), "hmac", what)
        if len(mac) != layer_cipher.HMAC_BYTES:
            msg = f"{what}: hmac is {len(mac)} bytes, expected {layer_cipher.HMAC_BYTES}"
            raise ProtocolError(msg)
        return cls(cipher, mac, _cipher_options(obj, what))
