"""Unsealing: verify the envelope, parse the payload, then ask the KMS plugin (guest-components.md §8.3).

Steps: (1) :func:`~cocoguest.cdh.secret.envelope.open_sealed` (signature checked before the payload is read);
(2) :func:`~cocoguest.cdh.secret.payload.parse_payload`; (3) vault: the provider's getter releases ``name``;
envelope: the provider's decrypter opens the data key, which opens ``encrypted_data`` (AES-256-GCM, no AAD).
"""

from __future__ import annotations

from cocoguest.cdh.kms.factory import KmsContext, new_decryptor, new_getter
from cocoguest.cdh.secret.envelope import VerificationKeys, open_sealed
from cocoguest.cdh.secret.payload import VaultSecret, parse_payload
from cocoguest.crypto.sealing import envelope_decrypt
from cocoguest.errors import SealedSecretError


def unseal_secret(
    untrusted_secret: bytes,
    keys: VerificationKeys | None,
    kms: KmsContext,
    *,
    skip_verification: bool = False,
) -> bytes:
    """The plaintext of a ``sealed.`` secret.

    Raises:
        SealedSecretError: malformed, unsigned or wrongly signed secret or payload.
        CocoError: the key or the secret could not be obtained (names the kid, the name or the key id).
    """
    try:
        text = untrusted_secret.decode("ascii")
    except UnicodeDecodeError as e:
        msg = "sealed secret: not ASCII text"
        raise SealedSecretError(msg) from e
    payload, _kid = open_sealed(text.strip(), keys, skip_verification=skip_verification, limits=kms.limits)  # (1)
    secret = parse_payload(payload, kms.limits)  # (2)
    if isinstance(secret, VaultSecret):  # (3)
        return new_getter(secret.provider, secret.provider_settings, kms).get_secret(secret.name, secret.annotations)
    decryptor = new_decryptor(secret.provider, secret.provider_settings, kms)
    dek = decryptor.decrypt(secret.encrypted_key, secret.key_id, secret.annotations)
    return envelope_decrypt(
        secret.wrap_type, dek, secret.iv, secret.encrypted_data, f"envelope secret {secret.key_id!r}"
    )
