"""The sealing side (upstream ``secret`` tool, guest-components.md §2, §8.3): keygen, seal vault and envelope.

Invariants:
    * The output is ``sealed.<b64url header>.<b64url payload>.<b64url raw ES256 signature>`` with header
      ``{"alg":"ES256","kid":<kid>}``; payload JSON is compact.
    * Envelope data keys are fresh random 32-byte keys with a fresh 12-byte IV per secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cocoguest.cdh.kms.api import Encrypter
from cocoguest.cdh.secret.envelope import ALGORITHM, PREFIX
from cocoguest.cdh.secret.payload import EnvelopeSecret, envelope_document
from cocoguest.crypto.sealing import a256gcm_encrypt, b64u, es256_sign, new_dek


def _compact(document: Mapping[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def seal(payload: Mapping[str, object], kid: str, private_jwk: Mapping[str, object]) -> str:
    """Sign ``payload`` (a vault or envelope document) with ``private_jwk`` as ``kid``.

    Raises:
        ConfigError: the JWK is not a private P-256 key.
    """
    header_b64 = b64u(_compact({"alg": ALGORITHM, "kid": kid}))
    payload_b64 = b64u(_compact(payload))
    signature = es256_sign(private_jwk, f"{header_b64}.{payload_b64}".encode("ascii"), f"signing key {kid!r}")
    return f"{PREFIX}{header_b64}.{payload_b64}.{b64u(signature)}"


def envelope_payload(
    plaintext: bytes,
    key_id: str,
    provider: str,
    encrypter: Encrypter,
    provider_settings: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """An envelope document: ``plaintext`` under a fresh data key that ``encrypter`` wraps with ``key_id``."""
    dek, iv = new_dek()
    encrypted_key, annotations = encrypter.encrypt(dek, key_id)
    secret = EnvelopeSecret(
        key_id=key_id,
        encrypted_key=encrypted_key,
        encrypted_data=a256gcm_encrypt(dek, iv, plaintext),
        wrap_type="A256GCM",
        iv=iv,
        provider=provider,
        provider_settings=dict(provider_settings or {}),
        annotations=annotations,
    )
    return envelope_document(secret)
