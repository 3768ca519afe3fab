"""Evaluate a containers-policy.json for one image (containers/image ``signature/policy_eval*.go``).

The requirements of the matched scope are ANDed, in order, stopping at the first that fails (as
``IsRunningImageAllowed`` does). For ``signedBy``/``sigstoreSigned`` one good signature satisfies the requirement; a
signature is good when the verifier accepts it cryptographically, the digest it claims equals the digest it was
fetched for, and the requirement's ``signedIdentity`` accepts the reference it claims.

Multi-arch: containers/image evaluates the policy on the selected instance only, with the instance's
signatures; so do we for simple signing (verdicts identical to skopeo's) unless ``accept_index_signatures=True``.
For sigstore, signatures on the index count too (cosign signs the index of a multi-arch tag; image-rs accepts
either), provided they claim the index digest: the index is verified by digest and pins the instance's digest.

Invariants:
    * ``decide`` never raises for a rejection; it returns ``PolicyDecision(accepted=False)`` with reasons naming
      the scope, the requirement index and type, and why. It raises only for broken configuration (a key file that
      does not exist: ConfigError) or IO failures (TransportError) of the resource reader or signature source.
    * No IO of its own: keys come from the :class:`ResourceReader`, signatures from the :class:`SignatureSource`.
    * A digest is compared exactly (algorithm and hex); a signature claiming another algorithm for the same
      manifest is not accepted (containers/image would rehash the manifest; we do not have its bytes here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, assert_never

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, ResourceNotFoundError, SignatureError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.registry.types import SigstoreSignature
from cocoguest.signature.policy import PolicyDecision
from cocoguest.signature.policy.identity import DockerReference, ReferenceFormatError, SignedIdentity, describe_identity
from cocoguest.signature.policy.model import (
    FulcioTrustRoot,
    InsecureAcceptAnything,
    Policy,
    Reject,
    Requirement,
    SignedBaseLayer,
    SignedBy,
    SigstoreKeys,
    SigstoreSigned,
)
from cocoguest.signature.policy.scopes import ScopeMatch, docker_image_reference, lookup
from cocoguest.signature.policy.types import ImageUnderReview, ResourceReader, SignatureSource, SignedPayload


class SimpleSigningVerifier(Protocol):
    """Verifies a GPG simple-signing signature (implemented in ``signature/simple_signing.py``)."""

    def verify(self, untrusted_signature: bytes, trusted_keys: Sequence[bytes]) -> SignedPayload:
        """Check the OpenPGP signature against the keyrings and return what the payload claims.

        Raises:
            SignatureError: malformed, not made by a trusted key (the message names the signer's fingerprint), or
                the payload is invalid.
        """
        ...


class SigstoreVerifier(Protocol):
    """Verifies a cosign signature (implemented in ``signature/sigstore.py``)."""

    def verify(
        self, signature: SigstoreSignature, requirement: SigstoreSigned, key_material: SigstoreKeys
    ) -> SignedPayload:
        """Check the signature (and certificate / Rekor SET where configured) and return what the payload claims.

        Raises:
            SignatureError: the signature does not verify.
        """
        ...


_S = TypeVar("_S")
_S_contra = TypeVar("_S_contra", contravariant=True)


class _Verify(Protocol[_S_contra]):
    def __call__(self, untrusted: _S_contra, /) -> SignedPayload: ...


@dataclass(frozen=True, slots=True)
class _Outcome:
    satisfied: bool
    detail: str


class ContainersPolicyEvaluator:
    """Decides about one image with a parsed :class:`Policy`."""

    def __init__(
        self,
        policy: Policy,
        resources: ResourceReader,
        simple: SimpleSigningVerifier,
        sigstore: SigstoreVerifier,
        *,
        accept_index_signatures: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Bind the policy to its key reader and verifiers.

        Args:
            policy: The parsed policy.
            resources: Reads ``keyPath``/``keyPaths``/``caPath``/``rekorPublicKeyPath`` locations.
            simple: GPG simple-signing verifier.
            sigstore: Cosign verifier.
            accept_index_signatures: Also consider simple signatures stored for ``image.index_digest``.
            limits: Caps on references (``max_signed_reference_length``) and on the reasons kept
                (``max_policy_reasons_per_requirement``).
        """
        self._policy = policy
        self._resources = resources
        self._simple = simple
        self._sigstore = sigstore
        self._accept_index_signatures = accept_index_signatures
        self._limits = limits

    def decide(self, image: ImageUnderReview, signatures: SignatureSource) -> PolicyDecision:
        """Evaluate the policy for ``image``.

        Raises:
            ConfigError: a key or CA file named by the policy does not exist or cannot be used.
            TransportError, ProtocolError: the resource reader or signature source failed.
        """
        policy_digest = self._policy.digest()
        try:
            match: ScopeMatch[tuple[Requirement, ...]] = lookup(
                self._policy.default, self._policy.transports, image.transport, image.reference, limits=self._limits
            )
        except ValueError as e:  # ReferenceFormatError included
            return PolicyDecision(
                False,
                (f"image {image.reference}: {e}",),
                policy_digest=policy_digest,
                policy_source=self._policy.source,
            )
        details = {"scope": match.label}
        if not match.requirements:
            # SECURITY: containers/image rejects an empty list; never treat "no requirement" as "accept".
            reason = f"{match.label}: empty requirement list"
            return PolicyDecision(
                False, (reason,), policy_digest=policy_digest, policy_source=self._policy.source, details=details
            )
        docker_ref = self._docker_reference(image)
        accepted: list[str] = []
        for index, requirement in enumerate(match.requirements):
            where = f"{match.label}[{index}] ({requirement.type_name})"
            outcome = self._evaluate(requirement, where, image, docker_ref, signatures)
            if not outcome.satisfied:
                reason = f"{where}: {outcome.detail}"
                return PolicyDecision(
                    False, (reason,), policy_digest=policy_digest, policy_source=self._policy.source, details=details
                )
            accepted.append(f"{where}: {outcome.detail}")
        return PolicyDecision(
            True, tuple(accepted), policy_digest=policy_digest, policy_source=self._policy.source, details=details
        )

    def _docker_reference(self, image: ImageUnderReview) -> DockerReference | None:
        if image.transport != "docker":
            return None  # containers/image: oci layouts have no docker reference identity
        try:
            return docker_image_reference(image.reference, limits=self._limits)
        except ReferenceFormatError:
            return None

    def _evaluate(
        self,
        requirement: Requirement,
        where: str,
        image: ImageUnderReview,
        docker_ref: DockerReference | None,
        signatures: SignatureSource,
    ) -> _Outcome:
        match requirement:
            case InsecureAcceptAnything():
                return _Outcome(True, "accepted without verification (insecureAcceptAnything)")
            case Reject():
                return _Outcome(False, "reject requirement: the policy rejects this image")
            case SignedBaseLayer():
                return _Outcome(False, "signedBaseLayer is not supported (containers/image does not implement it)")
            case SignedBy():
                return self._signed_by(requirement, where, image, docker_ref, signatures)
            case SigstoreSigned():
                return self._sigstore_signed(requirement, where, image, docker_ref, signatures)
            case _:
                assert_never(requirement)

    def _digests(self, image: ImageUnderReview, *, with_index: bool) -> list[Digest]:
        digests = [image.manifest_digest]
        if with_index and image.index_digest is not None and image.index_digest not in digests:
            digests.append(image.index_digest)
        return digests

    def _read(self, location: str, what: str, where: str) -> bytes:
        try:
            return self._resources.read(location)
        except ResourceNotFoundError as e:
            msg = f"policy {self._policy.source}: {where}: {what} {location} not found"
            raise ConfigError(msg) from e

    def _signed_by(
        self,
        requirement: SignedBy,
        where: str,
        image: ImageUnderReview,
        docker_ref: DockerReference | None,
        signatures: SignatureSource,
    ) -> _Outcome:
        if requirement.key_type != "GPGKeys":
            return _Outcome(False, f"keyType {requirement.key_type!r} is not supported (only GPGKeys)")
        keys: list[bytes]
        if requirement.key_path is not None:
            keys = [self._read(requirement.key_path, "keyPath", where)]
        elif requirement.key_paths is not None:
            keys = [self._read(p, "keyPaths entry", where) for p in requirement.key_paths]
        else:
            keys = [requirement.key_data] if requirement.key_data is not None else []
        if not keys or not any(keys):
            return _Outcome(False, "no public keys configured")
        digests = self._digests(image, with_index=self._accept_index_signatures)
        candidates: list[tuple[Digest, int, bytes]] = []
        for digest in digests:
            candidates.extend((digest, n, sig) for n, sig in enumerate(signatures.simple_signatures(digest), 1))

        def verify(untrusted: bytes) -> SignedPayload:
            return self._simple.verify(untrusted, keys)

        return _judge(digests, candidates, verify, requirement.signed_identity, image, docker_ref, self._limits)

    def _sigstore_signed(
        self,
        requirement: SigstoreSigned,
        where: str,
        image: ImageUnderReview,
        docker_ref: DockerReference | None,
        signatures: SignatureSource,
    ) -> _Outcome:
        if requirement.pki is not None:
            return _Outcome(False, "sigstoreSigned with pki is not supported")
        key_material = self._sigstore_keys(requirement, where)
        if key_material.fulcio is None and not key_material.public_keys:
            return _Outcome(False, "no public keys configured")
        digests = self._digests(image, with_index=True)
        candidates: list[tuple[Digest, int, SigstoreSignature]] = []
        for digest in digests:
            candidates.extend((digest, n, sig) for n, sig in enumerate(signatures.sigstore_signatures(digest), 1))

        def verify(untrusted: SigstoreSignature) -> SignedPayload:
            return self._sigstore.verify(untrusted, requirement, key_material)

        return _judge(digests, candidates, verify, requirement.signed_identity, image, docker_ref, self._limits)

    def _sigstore_keys(self, requirement: SigstoreSigned, where: str) -> SigstoreKeys:
        public_keys: list[bytes] = []
        if requirement.key_path is not None:
            public_keys.append(self._read(requirement.key_path, "keyPath", where))
        for path in requirement.key_paths or ():
            public_keys.append(self._read(path, "keyPaths entry", where))
        if requirement.key_data is not None:
            public_keys.append(requirement.key_data)
        public_keys.extend(requirement.key_datas or ())
        rekor: list[bytes] = []
        if requirement.rekor_public_key_path is not None:
            rekor.append(self._read(requirement.rekor_public_key_path, "rekorPublicKeyPath", where))
        for path in requirement.rekor_public_key_paths or ():
            rekor.append(self._read(path, "rekorPublicKeyPaths entry", where))
        if requirement.rekor_public_key_data is not None:
            rekor.append(requirement.rekor_public_key_data)
        rekor.extend(requirement.rekor_public_key_datas or ())
        fulcio: FulcioTrustRoot | None = None
        if requirement.fulcio is not None:
            spec = requirement.fulcio
            ca = spec.ca_data or b"" if spec.ca_path is None else self._read(spec.ca_path, "fulcio.caPath", where)
            fulcio = FulcioTrustRoot(ca, spec.oidc_issuer, spec.subject_email)
        return SigstoreKeys(tuple(k for k in public_keys if k), fulcio, tuple(rekor))


def _judge(
    digests: list[Digest],
    candidates: list[tuple[Digest, int, _S]],
    verify: _Verify[_S],
    rule: SignedIdentity,
    image: ImageUnderReview,
    docker_ref: DockerReference | None,
    limits: Limits,
) -> _Outcome:
    """One good signature satisfies the requirement; otherwise say why each one failed (at most
    ``limits.max_policy_reasons_per_requirement`` reasons, and a count of the rest)."""
    if not candidates:
        wanted = " or ".join(str(d) for d in digests)
        return _Outcome(False, f"no signature: a signature was required, but none exists for {wanted}")
    rejections: list[str] = []
    for fetched_for, number, untrusted in candidates:
        label = f"signature {number} of {fetched_for}"
        try:
            payload = verify(untrusted)
        except SignatureError as e:
            rejections.append(f"{label}: {e}")
            continue
        # SECURITY: the signature must claim the very digest it was stored for (containers/image MatchesDigest).
        if payload.manifest_digest != fetched_for:
            rejections.append(f"{label}: signature for digest {payload.manifest_digest}, image is {fetched_for}")
            continue
        if not rule.matches(docker_ref, payload.docker_reference, limits=limits):
            shown = image.reference if docker_ref is not None else f"{image.reference} (no docker reference)"
            rejections.append(
                f"{label}: identity mismatch: signature claims {payload.docker_reference}, image is {shown} "
                f"(signedIdentity {describe_identity(rule)})"
            )
            continue
        return _Outcome(True, f"{label} by {payload.signer} for {payload.docker_reference} accepted")
    kept = rejections[: limits.max_policy_reasons_per_requirement]
    more = len(rejections) - len(kept)
    suffix = f"; and {more} more" if more else ""
    return _Outcome(False, "no signature accepted: " + "; ".join(kept) + suffix)
