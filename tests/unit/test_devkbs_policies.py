"""Verdicts of the shipped Rego policies (regopy) on recorded EAR claims, as Trustee's (kbs-protocol.md §11.1).

The claims are recorded EAR token bodies in tests/vectors/devkbs/ (a sample TEE token, a TDX-shaped token, a
token with a contraindicated device submodule); the expected verdicts follow Trustee's sample_policies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocoguest.devkbs.ear import shipped_policy, status_of
from cocoguest.devkbs.rego import RegoPolicy
from cocoguest.errors import KbsApiError

VECTORS = Path(__file__).parents[1] / "vectors" / "devkbs"
DATA = {"plugin": "resource", "resource-path": ["default", "key", "k1"], "query": {}}


def _claims(name: str) -> object:
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize(
    ("policy", "claims", "data", "allowed"),
    [
        ("default.rego", "sample_claims.json", DATA, False),
        ("default.rego", "tdx_affirming_claims.json", DATA, True),
        ("default.rego", "tdx_affirming_claims.json", {**DATA, "plugin": "other"}, False),
        ("allow_all.rego", "sample_claims.json", DATA, True),
        ("allow_all.rego", "sample_claims.json", {**DATA, "plugin": "other"}, False),
        ("deny_all.rego", "tdx_affirming_claims.json", DATA, False),
        ("affirming.rego", "tdx_affirming_claims.json", DATA, True),
        ("affirming.rego", "sample_claims.json", DATA, False),
        ("affirming.rego", "gpu_contraindicated_claims.json", DATA, False),
        ("affirming.rego", {"submods": {}}, DATA, False),
    ],
)
def test_shipped_resource_policies(policy: str, claims: object, data: object, allowed: bool) -> None:
    document = _claims(claims) if isinstance(claims, str) else claims
    rego = RegoPolicy(shipped_policy(policy), policy)
    assert rego.allows(document, data) is allowed
    assert rego.allows(document, data) is allowed  # the cached verdict is the same


def test_default_cpu_attestation_policy_on_the_sample_claims() -> None:
    rego = RegoPolicy(shipped_policy("default_cpu.rego"), "default_cpu")
    evidence = _claims("sample_claims.json")["submods"]["cpu0"]["ear.veraison.annotated-evidence"]  # type: ignore[index]
    none = rego.query("trust_claims", evidence, {"reference": {}})
    assert none == {"executables": 33, "hardware": 97, "configuration": 2}
    assert status_of(none) == "contraindicated"  # type: ignore[arg-type]
    rv = {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1}
    good = rego.query("trust_claims", evidence, {"reference": rv})
    assert good == {"executables": 3, "hardware": 2, "configuration": 2}
    assert status_of(good) == "affirming"  # type: ignore[arg-type]
    assert rego.query("trust_claims", evidence, {"reference": {**rv, "minimum_minor_version": 5}})["hardware"] == 97  # type: ignore[index]


def test_status_tiers() -> None:
    assert status_of({"a": 0}) == "none"
    assert status_of({"a": 2, "b": 0}) == "affirming"
    assert status_of({"a": 2, "b": 32}) == "warning"
    assert status_of({"a": 95, "b": 96}) == "contraindicated"


def test_a_broken_policy_is_refused_when_set_and_a_non_boolean_allow_denies() -> None:
    with pytest.raises(KbsApiError) as caught:
        RegoPolicy("package policy\nallow if {", "broken")
    assert caught.value.variant == "ParsePolicyError"
    assert RegoPolicy('package policy\nallow := "yes"\n', "string").allows({}, DATA) is False


def test_non_deterministic_policies_are_not_cached() -> None:
    rego = RegoPolicy("package policy\nimport rego.v1\nallow if time.now_ns() > 0\n", "time")
    assert rego.allows({}, DATA) is True
    assert not rego._verdicts


def test_an_input_key_stands_for_the_input_in_the_verdict_cache() -> None:
    rego = RegoPolicy("package policy\nimport rego.v1\nallow if input.x == 1\n", "x")
    assert rego.allows({"x": 1}, DATA, claims_key=b"token-1") is True
    assert rego.allows({"x": 2}, DATA, claims_key=b"token-2") is False
    # The key is trusted to identify the input (a verified token's digest): a known key answers from the cache.
    assert rego.allows({"x": 2}, DATA, claims_key=b"token-1") is True
    assert rego.allows({"x": 2}, DATA) is False  # without a key the input itself is the cache key
    assert len(rego._verdicts) == 3
