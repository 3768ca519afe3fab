"""The signature-policy step of the pull (DESIGN.md §2 step 3): what the pull asks, and who may answer.

Invariants:
    * The policy is evaluated on every pull, cache hits included, before anything but the manifest is read.
    * Without a configured policy a pull is refused unless the caller explicitly chose the insecure evaluator,
      which logs a WARNING on every use.
    * A request names the image with a typed :data:`~cocoguest.oci.image_name.ImageName` (the name the image
      was found under: a short name resolved to the search registry that answered), and for a registry image
      the location that served the manifest, where signatures are looked up (a mirror's X-R-S-S and cosign
      attachments, as containers/image does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from cocoguest.digest import Digest
from cocoguest.oci.image_name import ImageName
from cocoguest.registry.docker import DockerSource
from cocoguest.signature.policy import PolicyDecision

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What the evaluator may look at: the image's name, its verified manifest digest, and where it came from."""

    image: ImageName
    manifest_digest: Digest
    untrusted_manifest: bytes
    registry: DockerSource | None = None
    """The registry location that served the manifest (``None`` for a layout)."""
    index_digest: Digest | None = None
    """The index the manifest was selected from, if any: signatures may cover it instead."""


class PolicyEvaluator(Protocol):
    """Decides whether an image may be used."""

    def evaluate(self, request: PolicyRequest) -> PolicyDecision:
        """Decide; must not raise for a rejection (return ``accepted=False`` with reasons)."""
        ...


class InsecureAcceptAnything:
    """Accepts every image. Only for ``--insecure-policy``; warns on every use."""

    def evaluate(self, request: PolicyRequest) -> PolicyDecision:
        """Accept, loudly."""
        # SECURITY: signature verification is switched off by the caller's explicit choice.
        _logger.warning(
            "insecure policy: accepting %s (manifest %s) without any signature verification",
            request.image,
            request.manifest_digest,
        )
        return PolicyDecision(True, ("--insecure-policy: signature verification disabled",), insecure=True)
