"""The native evaluation of the shipped attestation policies gives regopy's verdicts, exactly.

Two engines, one policy text: ``RegoPolicy(text)`` answers natively (the text is a shipped one), and
``RegoPolicy(text + comment)`` has a different digest, so it can only ask regopy. They are compared on the recorded
EAR claims in tests/vectors/devkbs/ and on generated claims and reference values (hypothesis), including values
the native engine refuses (it must then fall back, so the answer is still regopy's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoguest.devkbs.ear import shipped_policy
from cocoguest.devkbs.native_policy import (
    Unsupported,
    default_cpu_trust_claims,
    default_gpu_trust_claims,
    native_rules,
)
from cocoguest.devkbs.rego import RegoPolicy
from cocoguest.errors import KbsApiError

VECTORS = Path(__file__).parents[1] / "vectors" / "devkbs"
_CACHE: dict[str, tuple[RegoPolicy, RegoPolicy]] = {}


def _engines(name: str) -> tuple[RegoPolicy, RegoPolicy]:
    """(native-capable, regopy-only) engines for the shipped policy ``name``."""
    if name not in _CACHE:
        text = shipped_policy(name)
        _CACHE[name] = (RegoPolicy(text, name), RegoPolicy(text + "\n# regopy only\n", name + " (regopy)"))
    return _CACHE[name]


def _outcome(engine: RegoPolicy, evidence: object, data: dict[str, object]) -> object:
    """The answer of ``engine``, or the error variant it raised (rego-cpp refuses e.g. ``5e-324``)."""
    try:
        return engine.query("trust_claims", evidence, data)
    except KbsApiError as e:
        return ("error", e.variant)


def _annotated(vector: str, submod: str) -> object:
    claims = json.loads((VECTORS / vector).read_text())
    return claims["submods"][submod]["ear.veraison.annotated-evidence"]


def test_the_shipped_texts_are_the_ones_implemented_natively() -> None:
    # Fails when a shipped policy is edited: re-check native_policy.py against it, then re-pin its SHA-256.
    assert native_rules(shipped_policy("default_cpu.rego")) == {"trust_claims": default_cpu_trust_claims}
    assert native_rules(shipped_policy("default_gpu.rego")) == {"trust_claims": default_gpu_trust_claims}
    assert native_rules(shipped_policy("default_cpu.rego") + " ") == {}
    assert native_rules(shipped_policy("default.rego")) == {}


_REFERENCES: list[dict[str, object]] = [
    {},
    {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1},
    {"svn": "1", "launch_digest": "abcde", "major_version": ["1"], "minimum_minor_version": ["4"]},
    {"svn": ["1"], "major_version": 1, "minimum_minor_version": 5},
    {"svn": [1], "launch_digest": ["x", "abcde"], "major_version": 2, "minimum_minor_version": 0},
    {"svn": ["2"], "sampledevice_svn": ["2"], "major_version": 1, "minimum_minor_version": 4},
    {"sampledevice_svn": "2", "svn": None, "launch_digest": None},
    {"sampledevice_svn": [], "major_version": [], "minimum_minor_version": []},
]


@pytest.mark.parametrize("reference", _REFERENCES)
@pytest.mark.parametrize(
    ("policy", "vector", "submod"),
    [
        ("default_cpu.rego", "sample_claims.json", "cpu0"),
        ("default_cpu.rego", "tdx_affirming_claims.json", "cpu0"),
        ("default_gpu.rego", "gpu_contraindicated_claims.json", "gpu0"),
        ("default_gpu.rego", "sample_claims.json", "cpu0"),
    ],
)
def test_native_equals_regopy_on_the_recorded_claims(
    policy: str, vector: str, submod: str, reference: dict[str, object]
) -> None:
    native, regopy = _engines(policy)
    evidence = _annotated(vector, submod)
    data = {"reference": reference}
    rule = native_rules(shipped_policy(policy))["trust_claims"]
    assert rule(evidence, data) == regopy.query("trust_claims", evidence, data)  # these are all in the domain
    assert native.query("trust_claims", evidence, data) == regopy.query("trust_claims", evidence, data)


def test_values_outside_the_domain_fall_back_to_regopy() -> None:
    native, regopy = _engines("default_cpu.rego")
    evidence = _annotated("sample_claims.json", "cpu0")
    for odd in ("01", " 1", "1e0", "-0", True, None, 1.0, 10**20):
        data = {"reference": {"svn": "1", "major_version": odd, "minimum_minor_version": 0}}
        with pytest.raises(Unsupported):
            default_cpu_trust_claims(evidence, data)
        assert native.query("trust_claims", evidence, data) == regopy.query("trust_claims", evidence, data)


_STRINGS = st.sampled_from(["1", "2", "4", "0", "01", " 1", "1e0", "-0", "-3", "abcde", "", "true", "é"])
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-6, max_value=6),
    st.integers(min_value=-(10**16), max_value=10**16),
    # No subnormals: rego-cpp prints them as text its own JSON reader refuses (a regopy quirk, not a verdict).
    st.floats(min_value=-6, max_value=6, allow_nan=False, allow_subnormal=False),
    _STRINGS,
    st.text(max_size=4),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_STRINGS, inner, max_size=2),
    max_leaves=6,
)


_SMALL = st.integers(min_value=0, max_value=6)
_LIKELY = st.sampled_from(["1", "abcde"])
# Each field: mostly values the verifier or an operator would plausibly use, sometimes anything JSON.
_INPUT_FIELDS = {
    "svn": _LIKELY | _STRINGS | _VALUES,
    "launch_digest": _LIKELY | _STRINGS | _VALUES,
    "debug": st.booleans() | _VALUES,
}
_VERSION_FIELDS = {"major": st.just(1) | _SMALL | _VALUES, "minor": _SMALL | _VALUES}
_REFERENCE_FIELDS = {
    "svn": _LIKELY | st.lists(_LIKELY | _STRINGS, max_size=3) | _VALUES,
    "launch_digest": _LIKELY | st.lists(_LIKELY | _STRINGS, max_size=3) | _VALUES,
    "major_version": _SMALL | st.sampled_from(["0", "1", "2"]) | st.lists(_SMALL, max_size=2) | _VALUES,
    "minimum_minor_version": _SMALL | st.sampled_from(["0", "4", "5"]) | st.lists(_SMALL, max_size=2) | _VALUES,
}


@st.composite
def _cpu_cases(draw: st.DrawFn) -> tuple[object, dict[str, object]]:
    sample = draw(st.fixed_dictionaries({}, optional=_INPUT_FIELDS))
    if draw(st.integers(0, 4)):
        sample["platform_version"] = draw(st.fixed_dictionaries({}, optional=_VERSION_FIELDS))
    elif draw(st.booleans()):
        sample["platform_version"] = draw(_VALUES)
    evidence: object = {"sample": sample} if draw(st.integers(0, 9)) else draw(_VALUES)
    reference = draw(st.fixed_dictionaries({}, optional=_REFERENCE_FIELDS))
    return evidence, {"reference": reference}


@st.composite
def _gpu_cases(draw: st.DrawFn) -> tuple[object, dict[str, object]]:
    device = draw(st.fixed_dictionaries({}, optional={"svn": _VALUES}))
    reference = draw(st.fixed_dictionaries({}, optional={"sampledevice_svn": _VALUES}))
    return {"sampledevice": device}, {"reference": reference}


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_cpu_cases())
def test_native_equals_regopy_on_generated_cpu_claims(case: tuple[object, dict[str, object]]) -> None:
    evidence, data = case
    native, regopy = _engines("default_cpu.rego")
    assert _outcome(native, evidence, data) == _outcome(regopy, evidence, data)


@_SETTINGS
@given(_gpu_cases())
def test_native_equals_regopy_on_generated_gpu_claims(case: tuple[object, dict[str, object]]) -> None:
    evidence, data = case
    native, regopy = _engines("default_gpu.rego")
    assert _outcome(native, evidence, data) == _outcome(regopy, evidence, data)


@_SETTINGS
@given(
    svn=_STRINGS,
    reference=st.fixed_dictionaries(
        {},
        optional={
            "svn": st.lists(_STRINGS, max_size=3) | _STRINGS,
            "launch_digest": st.lists(_STRINGS, max_size=3) | _STRINGS,
            "major_version": st.integers(0, 3) | st.sampled_from(["0", "1", "2"]) | st.lists(st.integers(0, 3)),
            "minimum_minor_version": st.integers(0, 6) | st.sampled_from(["0", "4", "5"]),
        },
    ),
)
def test_verifier_shaped_claims_are_answered_natively_and_equally(svn: str, reference: dict[str, object]) -> None:
    # The shape verify_attestation produces: here the native engine must answer (no fallback) and agree.
    evidence = {
        "report_data": "AAAA",
        "sample": {"svn": svn, "launch_digest": "abcde", "platform_version": {"major": 1, "minor": 4}, "debug": False},
    }
    data: dict[str, object] = {"reference": reference}
    _, regopy = _engines("default_cpu.rego")
    assert default_cpu_trust_claims(evidence, data) == regopy.query("trust_claims", evidence, data)
