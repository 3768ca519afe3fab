"""AnnotationPacket v1/v2: the attestation-agent key-provider annotation (guest-components.md §7.2).

v1: ``{"kid","wrapped_data","iv","wrap_type"}``; v2 adds ``version`` (default ``0.1.0``), ``provider`` (default
``kbs``), ``provider_settings`` and ``annotations`` (objects, default ``{}``). ``iv`` and ``wrap_type`` are
optional (``wrap_type`` defaults to ``A256GCM``). Binary members are standard padded base64.

Wrap types: ``A256GCM`` (12-byte IV, ``wrapped_data = ciphertext || 16-byte tag``, no AAD) and ``A256CTR``
(16-byte IV, NOT authenticated: a changed ciphertext yields a wrong layer key, which the layer's own HMAC
then refuses; a warning is logged on every use).

Invariants:
    * A :class:`AnnotationPacket` is always well-formed: ``kid`` is a valid resource URI when ``provider`` is
      ``kbs``; base64 is canonical; the IV has the length its wrap type needs.
    * Parsing is pure and refuses oversized input (``Limits.max_annotation_packet_bytes``); every failure is a
      :class:`ProtocolError` naming the member.
    * :func:`decrypt_with_kek` returns only AES-GCM-authenticated plaintext for ``A256GCM``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cocoguest.crypto import tee_crypto
from cocoguest.errors import ProtocolError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

DEFAULT_VERSION: Final = "0.1.0"
DEFAULT_PROVIDER: Final = "kbs"
WRAP_TYPES: Final = {"A256GCM": 12, "A256CTR": 16}
"""Wrap type -> IV length in bytes."""
_WHAT: Final = "AnnotationPacket"


@dataclass(frozen=True, slots=True)
class AnnotationPacket:
    """A parsed key-provider annotation; ``kid_uri`` is set when ``provider`` is ``kbs``."""

    kid: str
    wrapped_data: bytes
    wrap_type: str = "A256GCM"
    iv: bytes | None = None
    version: str = DEFAULT_VERSION
    provider: str = DEFAULT_PROVIDER
    provider_settings: Mapping[str, object] = field(default_factory=dict)
    annotations: Mapping[str, object] = field(default_factory=dict)

    @property
    def kid_uri(self) -> ResourceUri:
        """``kid`` as a resource URI (for the ``kbs`` provider).

        Raises:
            ProtocolError: ``kid`` is not a resource URI.
        """
        try:
            return ResourceUri.parse(self.kid)
        except ResourceUriError as e:
            msg = f"{_WHAT}: kid is not a KBS resource URI: {e}"
            raise ProtocolError(msg) from e


def _b64(value: object, member: str) -> bytes:
    if not isinstance(value, str):
        msg = f"{_WHAT}: member {member!r} must be a base64 string"
        raise ProtocolError(msg)
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"{_WHAT}: member {member!r} is not standard padded base64"
        raise ProtocolError(msg) from e
    if base64.b64encode(decoded).decode("ascii") != value:
        msg = f"{_WHAT}: member {member!r} is not canonical base64"
        raise ProtocolError(msg)
    return decoded


def _optional_str(document: Mapping[str, object], member: str, default: str) -> str:
    value = document.get(member, default)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        msg = f"{_WHAT}: member {member!r} must be a non-empty string"
        raise ProtocolError(msg)
    return value


def _optional_object(document: Mapping[str, object], member: str) -> dict[str, object]:
    value = document.get(member)
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = f"{_WHAT}: member {member!r} must be an object"
        raise ProtocolError(msg)
    return value


def parse_annotation_packet(untrusted: bytes, limits: Limits = DEFAULT_LIMITS) -> AnnotationPacket:
    """Parse an AnnotationPacket JSON document (v1 or v2).

    Raises:
        ProtocolError: too large, not JSON, or a member is missing or malformed (names the member).
    """
    if len(untrusted) > limits.max_annotation_packet_bytes:
        msg = f"{_WHAT}: {len(untrusted)} bytes, more than the limit of {limits.max_annotation_packet_bytes}"
        raise ProtocolError(msg)
    document = load_object(untrusted, _WHAT, limits=limits)
    kid = document.get("kid")
    if not isinstance(kid, str) or not kid:
        msg = f"{_WHAT}: member 'kid' must be a non-empty string"
        raise ProtocolError(msg)
    wrap_type = _optional_str(document, "wrap_type", "A256GCM")
    if wrap_type not in WRAP_TYPES:
        msg = f"{_WHAT}: wrap_type {wrap_type[:32]!r} is not supported (A256GCM, A256CTR)"
        raise ProtocolError(msg)
    iv = None if document.get("iv") is None else _b64(document["iv"], "iv")
    if iv is not None and len(iv) != WRAP_TYPES[wrap_type]:
        msg = f"{_WHAT}: {wrap_type} needs a {WRAP_TYPES[wrap_type]}-byte iv, got {len(iv)}"
        raise ProtocolError(msg)
    packet = AnnotationPacket(
        kid=kid,
        wrapped_data=_b64(document.get("wrapped_data"), "wrapped_data"),
        wrap_type=wrap_type,
        iv=iv,
        version=_optional_str(document, "version", DEFAULT_VERSION),
        provider=_optional_str(document, "provider", DEFAULT_PROVIDER),
        provider_settings=_optional_object(document, "provider_settings"),
        annotations=_optional_object(document, "annotations"),
    )
    if packet.provider == DEFAULT_PROVIDER:
        packet.kid_uri  # noqa: B018  (validates kid for the kbs provider)
    return packet


def decrypt_with_kek(packet: AnnotationPacket, kek: bytes) -> bytes:
    """The layer key options wrapped in ``packet``, decrypted with ``kek``.

    Raises:
        ProtocolError: no IV, or a KEK / IV of the wrong size.
        DecryptionIntegrityError: ``A256GCM`` tag failure (wrong KEK or altered packet).
    """
    what = f"{_WHAT} {packet.kid[:200]}"
    if packet.iv is None:
        msg = f"{what}: {packet.wrap_type} needs an iv"
        raise ProtocolError(msg)
    if packet.wrap_type == "A256GCM":
        return tee_crypto.aes256_gcm_decrypt(kek, packet.iv, packet.wrapped_data, what)
    # SECURITY: A256CTR is unauthenticated; accepted for upstream compatibility, with a warning every time.
    _logger.warning("%s: wrap_type A256CTR is not authenticated; prefer A256GCM", what)
    return tee_crypto.aes256_ctr_decrypt(kek, packet.iv, packet.wrapped_data, what)
