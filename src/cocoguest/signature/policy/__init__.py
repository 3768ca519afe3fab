"""containers-policy.json: model, scopes, identity rules and evaluation, with no IO; the decision it records.

The request the pull makes and the evaluators that answer it are in :mod:`cocoguest.signature.request`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome, recorded in the store with the image."""

    accepted: bool
    reasons: tuple[str, ...] = ()
    insecure: bool = False
    policy_digest: str | None = None
    policy_source: str | None = None
    """Where the policy that decided was read from (a path, ``file://`` or ``kbs:///`` location)."""
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
