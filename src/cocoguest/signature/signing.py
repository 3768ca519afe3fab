"""Host side: sign an image just written to a registry (``copy --sign-by``, ``--sign-by-sigstore-private-key``).

GPG simple signatures go to the registries.d lookaside (``lookaside-staging`` if set, else ``lookaside``; file://
only, as skopeo writes them); sigstore signatures are pushed as the ``sha256-<hex>.sig`` attachment.

Invariants:
    * The payload names the destination reference (with its tag) and the digest of the manifest written, as
      containers/image does.
    * Only ``docker://`` destinations can be signed (skopeo refuses signatures for OCI layouts too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError
from cocoguest.oci.reference import ImageReference, ImageReferenceError
from cocoguest.registry.access import RegistryAccess
from cocoguest.registry.config.registries_d import RegistriesD
from cocoguest.registry.signature_store import write_lookaside_signature
from cocoguest.registry.sigstore_attachments import push_sigstore_attachment
from cocoguest.registry.types import RegistryEndpoint, SigstoreSignature
from cocoguest.signature.sigstore import sign_sigstore
from cocoguest.signature.simple_signing import sign_image


@dataclass(frozen=True)
class SigningRequest:
    """What to sign with."""

    gpg_fingerprint: str | None = None
    gpg_key: bytes | None = None
    """An exported secret key (``--sign-by-key-file``); otherwise exported from ``gnupg_home``."""
    gnupg_home: Path | None = None
    sigstore_private_key: bytes | None = None
    passphrase: bytes | None = None

    @property
    def wanted(self) -> bool:
        """Whether any signature was asked for."""
        return self.gpg_fingerprint is not None or self.sigstore_private_key is not None


@dataclass(frozen=True)
class SigningResult:
    """Where the signatures went."""

    lookaside_file: Path | None = None
    sigstore_manifest: Digest | None = None


def destination_reference(destination: str) -> ImageReference:
    """The docker reference a signature names.

    Raises:
        ConfigError: not a ``docker://`` destination, or malformed.
    """
    if not destination.startswith("docker://"):
        msg = f"destination {destination}: signatures can only be written for docker:// destinations"
        raise ConfigError(msg)
    try:
        return ImageReference.parse(destination.removeprefix("docker://"))
    except ImageReferenceError as e:
        raise ConfigError(str(e)) from e


def sign_destination(
    destination: str,
    manifest_digest: Digest,
    request: SigningRequest,
    registries_d: RegistriesD,
    access: RegistryAccess,
) -> SigningResult:
    """Sign the manifest just written to ``destination``.

    Raises:
        ConfigError: no file:// lookaside for a GPG signature, unusable keys.
        SignatureError, TransportError: signing or pushing failed.
    """
    reference = destination_reference(destination)
    identity = str(reference)
    lookaside_file: Path | None = None
    sigstore_manifest: Digest | None = None
    if request.gpg_fingerprint is not None:
        base = registries_d.staging_for(reference) or registries_d.lookaside_for(reference)
        if base is None or not base.startswith("file://"):
            msg = (
                f"--sign-by: no file:// lookaside (or lookaside-staging) for {reference} in registries.d; "
                "configure one with --registries-d"
            )
            raise ConfigError(msg)
        signature = sign_image(
            manifest_digest,
            identity,
            key=request.gpg_key,
            gnupg_home=request.gnupg_home,
            fingerprint=request.gpg_fingerprint,
            passphrase=request.passphrase,
            limits=access.limits,
        )
        lookaside_file = write_lookaside_signature(base, reference, manifest_digest, signature, limits=access.limits)
    if request.sigstore_private_key is not None:
        payload, signature_b64 = sign_sigstore(
            manifest_digest, identity, request.sigstore_private_key, request.passphrase, limits=access.limits
        )
        rule = access.registries.rule_for(reference)
        insecure = not access.tls_verify or (rule is not None and rule.insecure)
        endpoint = RegistryEndpoint(host=reference.api_host, insecure=insecure, tls=access.tls_for(reference.registry))
        sigstore_manifest = push_sigstore_attachment(
            reference,
            manifest_digest,
            SigstoreSignature(payload, signature_b64),
            endpoint,
            access.credentials_for(reference),
            limits=access.limits,
            env=access.env,
            retry=access.retry_policy,
        )
    return SigningResult(lookaside_file, sigstore_manifest)
