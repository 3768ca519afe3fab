"""ocicrypt annotation keys and the comma-separated list of wrapped keys (ocicrypt.md §3).

Invariant: values are standard base64 with padding (Go ``base64.StdEncoding``); each comma entry is decoded
separately and a malformed entry is an error naming the annotation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from cocoguest.errors import ProtocolError

ENC_PREFIX: Final = "org.opencontainers.image.enc."
PUBOPTS: Final = "org.opencontainers.image.enc.pubopts"
KEYS_PREFIX: Final = "org.opencontainers.image.enc.keys."


def keys_annotation(scheme: str) -> str:
    """The annotation key of a scheme, e.g. ``keys_annotation("jwe")``."""
    return KEYS_PREFIX + scheme


def b64encode(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64.

    Raises:
        ProtocolError: the text is not valid base64 (names ``what``).
    """
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"{what}: not valid base64"
        raise ProtocolError(msg) from e


def wrapped_key_entries(annotations: Mapping[str, str]) -> dict[str, list[str]]:
    """Map each ``keys.*`` annotation to its comma-separated, still-encoded entries."""
    return {
        key: [entry for entry in value.split(",") if entry]
        for key, value in annotations.items()
        if key.startswith(KEYS_PREFIX)
    }


def strip_encryption_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """Drop every ``org.opencontainers.image.enc.*`` annotation (what decryption does)."""
    return {k: v for k, v in annotations.items() if not k.startswith(ENC_PREFIX)}
