"""Simple signing: the atomic container signature payload, its GPG verification, and signing an image.

The payload (containers-signature(5)) is::

    {"critical": {"type": "atomic container signature",
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "identity": {"docker-reference": "host/repo:tag"}},
     "optional": {"creator": "...", "timestamp": 1700000000}}

Invariants:
    * Parsing is as strict as containers/image's ``untrustedSignature.strictUnmarshalJSON``: the top level,
      ``critical``, ``critical.image`` and ``critical.identity`` must have exactly their fields (an unknown
      critical field rejects), no duplicate keys (at any level: :mod:`cocoguest.jsonutil`), ``critical.type`` must be
      ``atomic container signature``, the digest must parse; ``optional`` may hold unknown fields, but
      ``creator`` must be a string and ``timestamp`` an integral number. Input must be UTF-8 JSON with
      nothing after the object.
    * :class:`GpgSimpleSigningVerifier` returns a :class:`SignedPayload` only for a payload whose OpenPGP
      signature verified with one of the trusted keys; it checks neither the digest nor the identity
      against the image (the policy evaluator does).
    * Evaluation-side code here does no IO; :func:`sign_image` may run ``gpg --export-secret-keys`` (through
      :mod:`cocoguest.crypto.openpgp_sign`) when no key file is given.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest import __version__, jsonutil
from cocoguest.crypto.openpgp_sign import export_gnupg_secret_key, sign_message, verify_signed_message
from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.signature.policy.types import SignedPayload

SIGNATURE_TYPE: Final = "atomic container signature"
DEFAULT_CREATOR: Final = f"cocoguest {__version__}"
"""``optional.creator`` of signatures we make (containers/image writes ``atomic <version>``)."""


def _object(value: object, fields: str) -> dict[str, object]:
    """``value`` as a dict, refusing a non-object (duplicate keys were refused by the parser)."""
    if not isinstance(value, dict):
        msg = f"{fields}: JSON object expected"
        raise SignatureError(msg)
    return value


def _exact(value: object, fields: str, names: tuple[str, ...]) -> dict[str, object]:
    """``value`` as a dict with exactly the keys ``names``."""
    obj = _object(value, fields)
    unknown = sorted(set(obj) - set(names))
    if unknown:
        msg = f"{fields}: unknown key {unknown[0]!r}"
        raise SignatureError(msg)
    missing = [n for n in names if n not in obj]
    if missing:
        msg = f"{fields}: key {missing[0]!r} missing"
        raise SignatureError(msg)
    return obj


def _string(value: object, fields: str) -> str:
    if not isinstance(value, str):
        msg = f"{fields}: string expected"
        raise SignatureError(msg)
    return value


@dataclass(frozen=True, slots=True)
class SimpleSigningPayload:
    """The content of an atomic container signature (untrusted until its signature verified)."""

    manifest_digest: Digest
    docker_reference: str
    creator: str | None = None
    timestamp: int | None = None

    def to_json(self) -> bytes:
        """Compact JSON with sorted keys, as containers/image marshals it.

        Raises:
            ValueError: an empty reference.
        """
        if not self.docker_reference:
            msg = "a signature payload needs a docker reference"
            raise ValueError(msg)
        optional: dict[str, str | int] = {}
        if self.creator is not None:
            optional["creator"] = self.creator
        if self.timestamp is not None:
            optional["timestamp"] = self.timestamp
        document = {
            "critical": {
                "type": SIGNATURE_TYPE,
                "image": {"docker-manifest-digest": str(self.manifest_digest)},
                "identity": {"docker-reference": self.docker_reference},
            },
            "optional": optional,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, untrusted_payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> SimpleSigningPayload:
        """Parse a payload strictly (see the module invariants), its JSON within ``limits``.

        Raises:
            SignatureError: not a valid atomic container signature payload.
        """
        untrusted = jsonutil.loads(untrusted_payload, "signature payload", SignatureError, limits=limits)
        top = _exact(untrusted, "signature payload", ("critical", "optional"))
        optional = _object(top["optional"], "signature payload optional")
        creator = optional.get("creator")
        if creator is not None:
            creator = _string(creator, "signature payload optional.creator")
        timestamp = optional.get("timestamp")
        if timestamp is not None:
            # containers/image decodes it as a float64 and requires an integral value.
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
                msg = "signature payload optional.timestamp: number expected"
                raise SignatureError(msg)
            if isinstance(timestamp, float) and (not math.isfinite(timestamp) or not timestamp.is_integer()):
                msg = "signature payload optional.timestamp is not an integer"
                raise SignatureError(msg)
            timestamp = int(timestamp)
        critical = _exact(top["critical"], "signature payload critical", ("type", "image", "identity"))
        kind = _string(critical["type"], "signature payload critical.type")
        if kind != SIGNATURE_TYPE:
            msg = f"signature payload: unrecognized signature type {kind[:100]!r}"
            raise SignatureError(msg)
        image = _exact(critical["image"], "signature payload critical.image", ("docker-manifest-digest",))
        digest_text = _string(
            image["docker-manifest-digest"], "signature payload critical.image.docker-manifest-digest"
        )
        try:
            digest = Digest.parse(digest_text)
        except ValueError as e:
            msg = f"signature payload: invalid docker-manifest-digest {digest_text[:200]!r}"
            raise SignatureError(msg) from e
        identity = _exact(critical["identity"], "signature payload critical.identity", ("docker-reference",))
        reference = _string(identity["docker-reference"], "signature payload critical.identity.docker-reference")
        return cls(digest, reference, creator, timestamp)


class GpgSimpleSigningVerifier:
    """Verifies simple-signing signatures (OpenPGP signed payloads) against trusted GPG keys. No IO."""

    def __init__(self, *, clock: Callable[[], float] = time.time, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create a verifier.

        Args:
            clock: The current time in seconds, for key and signature expiry.
            limits: Caps on signatures, payloads and keyrings.
        """
        self._clock = clock
        self._limits = limits

    def verify(self, untrusted_signature: bytes, trusted_keys: Sequence[bytes]) -> SignedPayload:
        """Verify one signature and return what it claims.

        Args:
            untrusted_signature: The signature blob (a one-pass signed OpenPGP message).
            trusted_keys: Public keyrings of the requirement (``keyPath``/``keyPaths``/``keyData``).

        Returns:
            The verified payload; ``signer`` is the signing key's primary fingerprint.

        Raises:
            SignatureError: malformed, not by a valid trusted key, bad signature, or a bad payload.
            ConfigError: the trusted keyrings are malformed or hold no key.
        """
        verified = verify_signed_message(untrusted_signature, trusted_keys, what="simple signing signature",
                                         now=self._clock(), limits=self._limits)  # fmt: skip
        try:
            payload = SimpleSigningPayload.parse(verified.payload, limits=self._limits)
        except SignatureError as e:
            msg = f"signature by key {verified.signer_fingerprint}: {e}"
            raise SignatureError(msg) from e
        return SignedPayload(payload.manifest_digest, payload.docker_reference, verified.signer_fingerprint, "simple")


def sign_image(
    manifest_digest: Digest,
    docker_reference: str,
    *,
    key: bytes | None = None,
    gnupg_home: Path | None = None,
    fingerprint: str | None = None,
    passphrase: bytes | None = None,
    creator: str = DEFAULT_CREATOR,
    timestamp: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Make a simple-signing signature of an image (``skopeo copy --sign-by``).

    Args:
        manifest_digest: The digest of the manifest as pushed.
        docker_reference: The identity to sign, fully qualified (``host/repo:tag``).
        key: A secret key file's contents (``gpg --export-secret-keys``); preferred when given.
        gnupg_home: Otherwise the GnuPG home to export ``fingerprint``'s secret key from.
        fingerprint: The signing key's fingerprint (required with ``gnupg_home``; selects a key in ``key``).
        passphrase: Unlocks the secret key.
        creator: ``optional.creator``.
        timestamp: ``optional.timestamp``; defaults to now.
        limits: ``gpg_export_timeout_s`` for the export from ``gnupg_home``.

    Returns:
        The binary signature blob, as stored in a lookaside ``signature-<n>`` file.

    Raises:
        ConfigError: no usable key, wrong passphrase, gpg failure.
        TransportError: gpg timed out.
    """
    if key is None:
        if gnupg_home is None or fingerprint is None:
            msg = "signing needs a secret key file, or a GnuPG home and the key's fingerprint"
            raise ConfigError(msg)
        key = export_gnupg_secret_key(gnupg_home, fingerprint, passphrase=passphrase, limits=limits)
    payload = SimpleSigningPayload(
        manifest_digest, docker_reference, creator, int(time.time()) if timestamp is None else timestamp
    )
    return sign_message(payload.to_json(), key, passphrase=passphrase, fingerprint=fingerprint,
                        source=f"signing key {fingerprint or ''}".strip())  # fmt: skip
