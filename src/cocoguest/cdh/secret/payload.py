"""Sealed-secret payloads (guest-components.md §8.3): ``vault`` and ``envelope``, version ``0.1.0``.

Invariant: parse, don't validate: a :class:`VaultSecret`/:class:`EnvelopeSecret` always has every required
field with the right type; base64 fields are decoded here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import SealedSecretError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits

VERSION: Final = "0.1.0"


@dataclass(frozen=True)
class VaultSecret:
    """The secret is ``name`` released by ``provider``'s getter."""

    name: str
    provider: str
    provider_settings: Mapping[str, object]
    annotations: Mapping[str, object]


@dataclass(frozen=True)
class EnvelopeSecret:
    """The secret is ``encrypted_data`` under a data key that ``provider`` decrypts with ``key_id``."""

    key_id: str
    encrypted_key: bytes
    encrypted_data: bytes
    wrap_type: str
    iv: bytes
    provider: str
    provider_settings: Mapping[str, object]
    annotations: Mapping[str, object]


def _str(document: Mapping[str, object], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        msg = f"sealed secret payload: {key!r} missing or not a string"
        raise SealedSecretError(msg)
    return value


def _map(document: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = document.get(key)
    if not isinstance(value, dict):
        msg = f"sealed secret payload: {key!r} missing or not an object"
        raise SealedSecretError(msg)
    return value


def _b64(document: Mapping[str, object], key: str) -> bytes:
    try:
        return base64.b64decode(_str(document, key), validate=True)
    except binascii.Error as e:
        msg = f"sealed secret payload: {key!r} is not base64"
        raise SealedSecretError(msg) from e


def parse_payload(untrusted: bytes, limits: Limits = DEFAULT_LIMITS) -> VaultSecret | EnvelopeSecret:
    """Parse a verified payload.

    Raises:
        SealedSecretError: not JSON, wrong version, unknown type, missing or mistyped fields.
    """
    document = load_object(untrusted, "sealed secret payload", SealedSecretError, limits=limits)
    if document.get("version") != VERSION:
        msg = f"sealed secret payload: version {str(document.get('version'))[:16]!r} is not {VERSION!r}"
        raise SealedSecretError(msg)
    kind = document.get("type")
    if kind == "vault":
        return VaultSecret(
            _str(document, "name"),
            _str(document, "provider"),
            _map(document, "provider_settings"),
            _map(document, "annotations"),
        )
    if kind == "envelope":
        return EnvelopeSecret(
            _str(document, "key_id"),
            _b64(document, "encrypted_key"),
            _b64(document, "encrypted_data"),
            _str(document, "wrap_type"),
            _b64(document, "iv"),
            _str(document, "provider"),
            _map(document, "provider_settings"),
            _map(document, "annotations"),
        )
    msg = f"sealed secret payload: type {str(kind)[:32]!r} is not 'vault' or 'envelope'"
    raise SealedSecretError(msg)


def vault_document(secret: VaultSecret) -> dict[str, object]:
    """The payload JSON object of ``secret``."""
    return {
        "version": VERSION,
        "type": "vault",
        "name": secret.name,
        "provider": secret.provider,
        "provider_settings": dict(secret.provider_settings),
        "annotations": dict(secret.annotations),
    }


def envelope_document(secret: EnvelopeSecret) -> dict[str, object]:
    """The payload JSON object of ``secret``."""
    return {
        "version": VERSION,
        "type": "envelope",
        "key_id": secret.key_id,
        "encrypted_key": base64.b64encode(secret.encrypted_key).decode("ascii"),
        "encrypted_data": base64.b64encode(secret.encrypted_data).decode("ascii"),
        "wrap_type": secret.wrap_type,
        "iv": base64.b64encode(secret.iv).decode("ascii"),
        "provider": secret.provider,
        "provider_settings": dict(secret.provider_settings),
        "annotations": dict(secret.annotations),
    }
