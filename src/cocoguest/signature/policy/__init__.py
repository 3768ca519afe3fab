"""The signature-policy step of the pull (DESIGN.md §2 step 3). Issue 4 fills it with containers-policy.json.

Invariants:
    * The policy is evaluated on every pull, cache hits included, before anything but the manifest is read.
    * Without a configured policy a pull is refused unless the caller explicitly chose the insecure evaluator,
      which logs a WARNING on every use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Protocol

from cocoguest.digest import Digest
from cocoguest.oci.source import ImageSource

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What the evaluator may look at: the reference, the verified manifest digest, and the source."""

    reference: str
    transport: str
    manifest_digest: Digest
    untrusted_manifest: bytes
    source: ImageSource
    index_digest: Digest | None = None
    """The index the manifest was selected from, if any: signatures may cover it instead."""


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome, recorded in the store with the image."""

    accepted: bool
    reasons: tuple[str, ...] = ()
    insecure: bool = False
    policy_digest: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Compact JSON for the store."""
        return json.dumps(
            {
                "accepted": self.accepted,
                "insecure": self.insecure,
                "reasons": list(self.reasons),
                "policy_digest": self.policy_digest,
                **self.details,
            },
            separators=(",", ":"),
            sort_keys=True,
        )


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
            request.reference,
            request.manifest_digest,
        )
        return PolicyDecision(True, ("--insecure-policy: signature verification disabled",), insecure=True)
