"""Verifying one cosign (sigstore) signature for a ``sigstoreSigned`` requirement, and the payload format.

The payload is the simple-signing JSON cosign and containers/image write (containers/image
``signature/internal/sigstore_payload.go``)::

    {"critical": {"identity": {"docker-reference": "<ref>"},
                  "image": {"docker-manifest-digest": "sha256:<hex>"},
                  "type": "cosign container image signature"},
     "optional": null | {"creator": "...", "timestamp": <int>, ...}}

``critical`` and its members must have exactly these members; ``optional`` may hold anything else.

Which checks run depends on the key material (containers/image ``policy_eval_sigstore.go``):

* public keys only: the payload signature must verify with one of them;
* public keys and Rekor keys: additionally a Rekor SET (``dev.sigstore.cosign/bundle``) signed by a Rekor key must
  record this signature by one of the public keys, and only that key is then used;
* Fulcio (always with Rekor keys): the SET must record this signature by the certificate of the
  ``dev.sigstore.cosign/certificate`` annotation, the certificate must chain to the Fulcio CA at the SET's
  ``integratedTime`` and name the configured OIDC issuer and e-mail; its key must verify the payload.

Invariants:
    * :meth:`CosignVerifier.verify` returns a :class:`SignedPayload` only after every cryptographic check passed;
      it never decides the identity or digest rules (the evaluator applies ``signedIdentity`` and compares the
      manifest digest).
    * No IO: key material comes in as bytes.
    * Untrusted signature material is a :class:`SignatureError`; broken key material from the policy is a
      :class:`ConfigError`.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Final

from cocoguest import jsonutil
from cocoguest.crypto.sigstore_crypto import (
    FulcioTrustRoot,
    RekorPublicKey,
    SigstorePublicKey,
    exact_members,
    load_sigstore_private_key,
    pem_blocks,
    verify_fulcio_certificate,
    verify_payload_signature,
    verify_rekor_set,
)
from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.registry.types import SigstoreSignature
from cocoguest.signature.policy.model import SigstoreKeys, SigstoreSigned
from cocoguest.signature.policy.types import SignedPayload

SIGSTORE_PAYLOAD_TYPE: Final = "cosign container image signature"
"""``critical.type`` of a sigstore payload."""
SIGNATURE_CREATOR: Final = "cocoguest"
"""``optional.creator`` of the payloads we sign."""


@dataclass(frozen=True, slots=True)
class UntrustedSigstorePayload:
    """A parsed payload; its claims mean nothing until the signature over it was verified."""

    untrusted_manifest_digest: Digest
    untrusted_docker_reference: str
    untrusted_creator: str | None = None
    untrusted_timestamp: int | None = None


def _check_payload_size(untrusted_payload: bytes, what: str, limits: Limits) -> None:
    """SECURITY: a payload over ``limits.max_sigstore_payload_bytes`` (containers/image
    ``iolimits.MaxSignatureBodySize``) is refused before it is hashed, verified or parsed."""
    if len(untrusted_payload) > limits.max_sigstore_payload_bytes:
        msg = f"{what}: payload larger than {limits.max_sigstore_payload_bytes} bytes (max_sigstore_payload_bytes)"
        raise SignatureError(msg)


def parse_sigstore_payload(
    untrusted_payload: bytes, what: str, *, limits: Limits = DEFAULT_LIMITS
) -> UntrustedSigstorePayload:
    """Parse the payload as strictly as containers/image, within ``limits``.

    Raises:
        SignatureError: not a valid sigstore payload (the message names ``what``).
    """
    _check_payload_size(untrusted_payload, what, limits)
    document = jsonutil.loads(untrusted_payload, f"{what}: invalid payload", SignatureError, limits=limits)
    try:
        top = exact_members(document, ("critical", "optional"), "payload")
        critical = exact_members(top["critical"], ("type", "image", "identity"), "payload critical")
        image = exact_members(critical["image"], ("docker-manifest-digest",), "payload critical.image")
        identity = exact_members(critical["identity"], ("docker-reference",), "payload critical.identity")
    except ValueError as e:
        msg = f"{what}: invalid payload ({e})"
        raise SignatureError(msg) from e
    kind = critical["type"]
    if kind != SIGSTORE_PAYLOAD_TYPE:
        msg = f"{what}: unrecognized signature type {kind!r} (expected {SIGSTORE_PAYLOAD_TYPE!r})"
        raise SignatureError(msg)
    digest_text = image["docker-manifest-digest"]
    reference = identity["docker-reference"]
    if not isinstance(digest_text, str) or not isinstance(reference, str):
        msg = f"{what}: docker-manifest-digest and docker-reference must be strings"
        raise SignatureError(msg)
    try:
        digest = Digest.parse(digest_text)
    except ValueError as e:
        msg = f"{what}: invalid docker-manifest-digest {digest_text!r} ({e})"
        raise SignatureError(msg) from e
    creator: str | None = None
    timestamp: int | None = None
    optional = top["optional"]
    if optional is not None:
        if not isinstance(optional, dict):
            msg = f"{what}: payload optional must be an object or null"
            raise SignatureError(msg)
        if "creator" in optional:
            if not isinstance(optional["creator"], str):
                msg = f"{what}: payload optional.creator must be a string"
                raise SignatureError(msg)
            creator = optional["creator"]
        if "timestamp" in optional:
            value = optional["timestamp"]
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                msg = f"{what}: payload optional.timestamp is not an integer"
                raise SignatureError(msg)
            timestamp = int(value)
    return UntrustedSigstorePayload(digest, reference, creator, timestamp)


def make_sigstore_payload(
    manifest_digest: Digest, docker_reference: str, *, creator: str | None = None, timestamp: int | None = None
) -> bytes:
    """A payload as containers/image writes it (compact JSON, ``optional`` with creator and timestamp).

    Raises:
        ValueError: an empty reference.
    """
    if not docker_reference:
        msg = "a sigstore payload needs a docker reference"
        raise ValueError(msg)
    optional: dict[str, str | int] = {}
    if creator is not None:
        optional["creator"] = creator
    optional["timestamp"] = int(time.time()) if timestamp is None else timestamp
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": str(manifest_digest)},
            "type": SIGSTORE_PAYLOAD_TYPE,
        },
        "optional": optional,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _single_certificate_der(untrusted_pem: bytes, what: str) -> bytes:
    try:
        blocks = pem_blocks(untrusted_pem, f"{what}: certificate annotation")
    except ValueError as e:
        raise SignatureError(str(e)) from e
    if len(blocks) != 1:
        msg = f"{what}: the certificate annotation must hold exactly one PEM block, found {len(blocks)}"
        raise SignatureError(msg)
    return blocks[0][1]


class CosignVerifier:
    """Checks cosign signatures with the key material of a ``sigstoreSigned`` requirement."""

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Verify within ``limits`` (payload size, certificate chain, JSON)."""
        self._limits = limits

    def verify(
        self, signature: SigstoreSignature, requirement: SigstoreSigned, key_material: SigstoreKeys
    ) -> SignedPayload:
        """Verify one signature cryptographically and return what its payload claims.

        Args:
            signature: one untrusted attachment layer.
            requirement: the requirement being evaluated (the key material was loaded from it).
            key_material: its loaded keys / Fulcio root / Rekor keys.

        Raises:
            SignatureError: the signature, certificate or Rekor SET does not verify, or the payload is malformed.
            ConfigError: the key material is unusable (bad PEM, unsupported key, Fulcio without Rekor).
        """
        what = f"sigstore signature (payload {Digest.of_bytes(signature.payload)})"
        rekor_keys = tuple(
            RekorPublicKey.from_pem(pem, f"{requirement.type_name} Rekor public key {i + 1}")
            for i, pem in enumerate(key_material.rekor_public_keys)
        )
        if key_material.fulcio is not None:
            keys = [self._keyless(signature, key_material, rekor_keys, what, self._limits)]
        elif key_material.public_keys:
            keys = self._with_keys(signature, key_material, rekor_keys, what)
        else:
            msg = f"{requirement.type_name}: neither public keys nor a Fulcio trust root were given"
            raise ConfigError(msg)
        _check_payload_size(signature.payload, what, self._limits)
        signer = verify_payload_signature(keys, signature.payload, signature.signature_b64, what)
        # SECURITY: the payload is parsed only now that its signature is verified.
        payload = parse_sigstore_payload(signature.payload, what, limits=self._limits)
        return SignedPayload(
            manifest_digest=payload.untrusted_manifest_digest,
            docker_reference=payload.untrusted_docker_reference,
            signer=signer.describe(),
            kind="sigstore",
        )

    @staticmethod
    def _with_keys(
        signature: SigstoreSignature,
        key_material: SigstoreKeys,
        rekor_keys: tuple[RekorPublicKey, ...],
        what: str,
    ) -> list[SigstorePublicKey]:
        keys = [
            SigstorePublicKey.from_pem(pem, f"sigstoreSigned public key {i + 1}")
            for i, pem in enumerate(key_material.public_keys)
        ]
        if not rekor_keys:
            return keys
        if signature.bundle_json is None:
            msg = f"{what}: a Rekor SET is required but the signature has no dev.sigstore.cosign/bundle annotation"
            raise SignatureError(msg)
        failures: list[str] = []
        for key in keys:
            try:
                verify_rekor_set(
                    rekor_keys, signature.bundle_json, key.spki_der, signature.signature_b64, signature.payload, what
                )
            except SignatureError as e:
                failures.append(str(e))
                continue
            # SECURITY: a SET names exactly one key; only that key may verify the payload.
            return [key]
        msg = f"{what}: no public key matches the Rekor SET: " + "; ".join(failures)
        raise SignatureError(msg)

    @staticmethod
    def _keyless(
        signature: SigstoreSignature,
        key_material: SigstoreKeys,
        rekor_keys: tuple[RekorPublicKey, ...],
        what: str,
        limits: Limits,
    ) -> SigstorePublicKey:
        fulcio = key_material.fulcio
        if fulcio is None:  # pragma: no cover — defensive: the caller checked
            msg = "no Fulcio trust root"
            raise ConfigError(msg)
        if not rekor_keys:
            # SECURITY: Fulcio certificates are short-lived; without a SET there is no trusted signing time.
            msg = "sigstoreSigned: fulcio requires a Rekor public key"
            raise ConfigError(msg)
        trust = FulcioTrustRoot.from_pem(
            fulcio.ca_pem, fulcio.oidc_issuer, fulcio.subject_email, "sigstoreSigned fulcio"
        )
        if signature.certificate_pem is None:
            msg = f"{what}: keyless verification needs the dev.sigstore.cosign/certificate annotation, which is missing"
            raise SignatureError(msg)
        if signature.bundle_json is None:
            msg = f"{what}: keyless verification needs the dev.sigstore.cosign/bundle annotation, which is missing"
            raise SignatureError(msg)
        certificate_der = _single_certificate_der(signature.certificate_pem, what)
        entry = verify_rekor_set(
            rekor_keys, signature.bundle_json, certificate_der, signature.signature_b64, signature.payload, what
        )
        # SECURITY: the certificate must be valid when Rekor recorded the signature, not now.
        identity = verify_fulcio_certificate(
            trust, signature.certificate_pem, signature.chain_pem, entry.integrated_at, what, limits=limits
        )
        return identity.public_key


def sign_sigstore(
    manifest_digest: Digest,
    docker_reference: str,
    private_key_pem: bytes,
    passphrase: bytes | None,
    *,
    key_source: str = "sigstore private key",
    timestamp: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[bytes, str]:
    """Make a sigstore payload for ``manifest_digest`` / ``docker_reference`` and sign it.

    Args:
        manifest_digest: the manifest being signed.
        docker_reference: the identity written into the payload (containers/image uses the destination
            reference, with its tag).
        private_key_pem: a cosign private key (encrypted or plain PEM).
        passphrase: its passphrase (``None``: the empty passphrase for encrypted keys).
        key_source: names the key file in errors.
        timestamp: ``optional.timestamp`` (default: now).
        limits: caps on the key file (``max_private_key_bytes``, scrypt cost).

    Returns:
        ``(payload, base64 signature)``.

    Raises:
        ConfigError: the key cannot be loaded (wrong passphrase, unsupported key).
    """
    key = load_sigstore_private_key(private_key_pem, passphrase, key_source, limits=limits)
    payload = make_sigstore_payload(manifest_digest, docker_reference, creator=SIGNATURE_CREATOR, timestamp=timestamp)
    return payload, base64.b64encode(key.sign(payload)).decode("ascii")
