"""Values shared by policy evaluation, signature verifiers and signature sources (issue 4).

Invariants:
    * Everything a :class:`SignatureSource` returns is untrusted bytes; only a verifier turns a signature into a
      :class:`SignedPayload`, and only after the cryptographic check passed.
    * Verifiers never decide policy (identity rules, which digest is acceptable): the evaluator does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from cocoguest.digest import Digest
from cocoguest.registry.types import SigstoreSignature


@dataclass(frozen=True, slots=True)
class SignedPayload:
    """What a cryptographically verified signature claims (the atomic container signature payload)."""

    manifest_digest: Digest
    docker_reference: str
    signer: str
    """The key fingerprint (GPG), key description or certificate subject (sigstore) that signed."""
    kind: Literal["simple", "sigstore"]


@dataclass(frozen=True, slots=True)
class ImageUnderReview:
    """The image the policy decides about."""

    transport: Literal["docker", "oci"]
    reference: str
    """``docker``: the normalised reference as pulled (``host/repo:tag`` or ``host/repo@digest``);
    ``oci``: the absolute layout path with ``:ref``."""
    manifest_digest: Digest
    """The digest of the manifest for our platform (the instance)."""
    index_digest: Digest | None = None
    """The digest of the index/manifest list it was selected from, if any (signatures may cover either)."""


class SignatureSource(Protocol):
    """Where signatures of an image come from (lookaside, X-Registry-Supports-Signatures, sigstore tags)."""

    def simple_signatures(self, manifest_digest: Digest) -> list[bytes]:
        """Raw simple-signing signature blobs stored for ``manifest_digest`` (may be empty).

        Raises:
            TransportError, ProtocolError: the signature store cannot be read.
        """
        ...

    def sigstore_signatures(self, manifest_digest: Digest) -> list[SigstoreSignature]:
        """Cosign attachments at ``sha256-<hex>.sig`` for ``manifest_digest`` (may be empty)."""
        ...


class ResourceReader(Protocol):
    """Reads policy files, keys and configs from ``kbs:///repo/type/tag``, ``file:///path`` or a plain path."""

    def read(self, location: str) -> bytes:
        """The bytes at ``location``.

        Raises:
            ResourceNotFoundError, ConfigError, TransportError.
        """
        ...
