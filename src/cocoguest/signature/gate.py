"""Step (3) of the pull with containers-policy.json: build what the evaluator needs for one image and decide.

The gate turns a :class:`~cocoguest.signature.request.PolicyRequest` into an
:class:`~cocoguest.signature.policy.types.ImageUnderReview`, gathers signatures (registries.d lookaside or the
X-Registry-Supports-Signatures API for simple signing; cosign attachments where registries.d enables them)
and asks :class:`~cocoguest.signature.policy.evaluate.ContainersPolicyEvaluator`.

Invariants:
    * Signatures are fetched lazily by the evaluator, only for requirements that need them.
    * Signature lookups use the registry location that served the manifest (a mirror's, if any); lookaside
      paths use the reference as requested, as containers/image does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cocoguest.digest import Digest
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci.image_name import LayoutImageName
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.registries_d import RegistriesD
from cocoguest.registry.signature_store import LookasideSignatureSource
from cocoguest.registry.sigstore_attachments import SigstoreAttachmentReader
from cocoguest.registry.types import SigstoreSignature
from cocoguest.signature.policy import PolicyDecision
from cocoguest.signature.policy.evaluate import ContainersPolicyEvaluator
from cocoguest.signature.policy.model import Policy
from cocoguest.signature.policy.types import ImageUnderReview, ResourceReader
from cocoguest.signature.request import PolicyRequest
from cocoguest.signature.sigstore import CosignVerifier
from cocoguest.signature.simple_signing import GpgSimpleSigningVerifier


@dataclass
class _ImageSignatures:
    """The :class:`SignatureSource` of one image: simple signatures and cosign attachments."""

    simple: LookasideSignatureSource | None
    sigstore: SigstoreAttachmentReader | None

    def simple_signatures(self, manifest_digest: Digest) -> list[bytes]:
        return [] if self.simple is None else self.simple.simple_signatures(manifest_digest)

    def sigstore_signatures(self, manifest_digest: Digest) -> list[SigstoreSignature]:
        return [] if self.sigstore is None else self.sigstore.sigstore_signatures(manifest_digest)


def _without_tag_when_pinned(reference: ImageReference) -> ImageReference:
    if reference.tag is not None and reference.digest is not None:
        # containers/image refuses tag+digest references; the digest is what was pulled (podman does the same).
        return ImageReference(reference.registry, reference.repository, None, reference.digest)
    return reference


class PolicyGate:
    """A :class:`~cocoguest.signature.policy.PolicyEvaluator` backed by containers-policy.json."""

    def __init__(
        self,
        policy: Policy,
        resources: ResourceReader,
        registries_d: RegistriesD,
        *,
        env: Mapping[str, str] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Keep the configuration; nothing is read until :meth:`evaluate`."""
        self._evaluator = ContainersPolicyEvaluator(
            policy, resources, GpgSimpleSigningVerifier(limits=limits), CosignVerifier(limits=limits), limits=limits
        )
        self._registries_d = registries_d
        self._env = env
        self._limits = limits

    def evaluate(self, request: PolicyRequest) -> PolicyDecision:
        """Decide about the image (never raises for a rejection)."""
        if isinstance(request.image, LayoutImageName):
            name = request.image.policy_name
            image = ImageUnderReview("oci", name, request.manifest_digest, request.index_digest)
            return self._evaluator.decide(image, _ImageSignatures(None, None))
        reference = _without_tag_when_pinned(request.image.reference)
        image = ImageUnderReview("docker", str(reference), request.manifest_digest, request.index_digest)
        registry = request.registry
        simple = LookasideSignatureSource(reference, self._registries_d, registry_source=registry, limits=self._limits)
        sigstore = None
        if registry is not None and self._registries_d.use_sigstore_attachments(reference):
            sigstore = SigstoreAttachmentReader(
                registry.reference, registry.endpoint, registry.credentials, limits=self._limits, env=self._env
            )
        return self._evaluator.decide(image, _ImageSignatures(simple, sigstore))


def load_policy(location: str, resources: ResourceReader, *, limits: Limits = DEFAULT_LIMITS) -> Policy:
    """Read and parse a policy from a path, ``file://`` or ``kbs://`` location, within ``limits``.

    Raises:
        ConfigError, ResourceNotFoundError, TransportError.
    """
    return Policy.from_json(resources.read(location), location, limits=limits)


def load_registries_d(
    location: str | None, resources: ResourceReader, *, limits: Limits = DEFAULT_LIMITS
) -> RegistriesD:
    """registries.d from a directory, or a single sigstore config document at a ``kbs://`` location.

    Raises:
        ConfigError: malformed YAML or conflicting entries.
    """
    if location is None:
        return RegistriesD.from_documents([])
    if location.startswith("kbs:"):
        return RegistriesD.from_documents([(location, resources.read(location))])
    return RegistriesD.load(Path(location), limits=limits)
