"""The dev KBS's resource policies give Trustee's verdicts (issue 10), on Trustee's own recorded cases.

Vectors: tests/vectors/trustee/ (README there names the upstream commit and paths). Every verdict below goes
through :meth:`KbsService.authorize`, the step of ``GET /kbs/v0/resource/...`` that asks the policy, on a service
made by :func:`build_service` (as the server makes it) and the real regopy engine; the HTTP cases go through a
running dev KBS and the independent RCAR client of tests/fixtures/devkbs.py.

Where the expected verdicts come from:
    * policy-engine cases: Trustee's unit test ``test_kbs_policy_evaluate`` (inputs and verdicts recorded there);
    * integration cases: Trustee's ``integration-tests/tests/get_resource.rs`` (a sample TEE against a real KBS);
    * shipped policies: our files must be Trustee's ``kbs/sample_policies`` texts byte for byte (after our header);
      Trustee records no verdict for these four files, so their HTTP cases below state the behaviour Trustee's
      sample_policies/README.md and the files' own comments document (each case names its line).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.ear import shipped_policy
from cocoguest.devkbs.resource_policy import policy_data
from cocoguest.devkbs.server import build_service
from cocoguest.devkbs.service import KbsService
from cocoguest.errors import KbsApiError
from tests.fixtures.devkbs import DevKbs, RcarClient, TeeKey, b64u, dev_kbs

VECTORS = Path(__file__).parents[1] / "vectors" / "trustee"
SHIPPED = ("default", "allow_all", "deny_all", "affirming")
ENGINE_CASES = json.loads((VECTORS / "policy-engine" / "cases.json").read_text())["cases"]
INTEGRATION = json.loads((VECTORS / "integration-get_resource.json").read_text())


def _service(tmp_path: Path, policy_text: str) -> KbsService:
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy_path = tmp_path / "policy.rego"
    policy_path.write_text(policy_text)
    config = DevKbsConfig(
        insecure_http=True, insecure_api=True, resource_dir=tmp_path / "repository", policy_path=policy_path
    )
    return build_service(config)


def _allowed(service: KbsService, claims: dict[str, object], path: str, query: str = "") -> bool:
    try:
        service.authorize(claims, path, query)
    except KbsApiError as e:
        if e.variant != "PolicyDeny":
            raise
        return False
    return True


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_resource_policies_are_trustees_text(name: str) -> None:
    ours = shipped_policy(f"{name}.rego")
    header, _, body = ours.partition("\n\n")
    assert all(line.startswith("# ") for line in header.splitlines()), "our header is comments only"
    assert "Apache-2.0" in header
    assert body == (VECTORS / "sample_policies" / f"{name}.rego").read_text()


@pytest.mark.parametrize("case", ENGINE_CASES, ids=[f"{i}-{c['policy']}" for i, c in enumerate(ENGINE_CASES)])
def test_trustee_policy_engine_cases(tmp_path: Path, case: dict[str, object]) -> None:
    data = case["data"]
    assert isinstance(data, dict)
    path = "/".join([data["plugin"], *data["resource-path"]])
    assert policy_data(path, "") == data  # the request that gives Trustee's data document gives ours too
    service = _service(tmp_path, (VECTORS / str(case["policy"])).read_text())
    assert _allowed(service, case["input"], path) is case["allow"]  # type: ignore[arg-type]


def test_policy_data_is_trustees_for_paths_and_queries() -> None:
    # api_server.rs: path.split('/'), first segment = plugin, the rest (empty segments too) = resource-path;
    # Query<HashMap<String, String>> (serde_urlencoded): blank values kept, a repeated name keeps the last.
    assert policy_data("resource/a/b/c", "") == {"plugin": "resource", "resource-path": ["a", "b", "c"], "query": {}}
    assert policy_data("resource", "")["resource-path"] == []
    assert policy_data("resource/a//b/", "")["resource-path"] == ["a", "", "b", ""]
    assert policy_data("plugin1/para/meters", "version=1.0.0")["query"] == {"version": "1.0.0"}
    assert policy_data("r/a/b/c", "a=&b&c=1&c=2&d=x+y%2Fz")["query"] == {"a": "", "b": "", "c": "2", "d": "x y/z"}


def test_a_query_reaches_the_policy_as_trustee_passes_it(tmp_path: Path) -> None:
    text = 'package policy\nimport rego.v1\ndefault allow := false\nallow if data.query.version == ""\n'
    service = _service(tmp_path, text)
    assert _allowed(service, {}, "resource/a/b/c", "version=") is True
    assert _allowed(service, {}, "resource/a/b/c", "version=1") is False


@pytest.fixture(scope="module")
def recorded_claims() -> dict[str, dict[str, object]]:
    """Trustee's recorded claims: its example EAR token body, and the policy-engine test's input."""
    return {
        "example.token.json": json.loads((VECTORS / "tokens" / "example.token.json").read_text()),
        "policy-engine input": ENGINE_CASES[0]["input"],
    }


def test_shipped_policies_on_trustees_recorded_claims(
    tmp_path: Path, recorded_claims: dict[str, dict[str, object]]
) -> None:
    # What each policy file says of these claims (Trustee records no verdict for them; see the module docstring):
    # example.token.json is an SGX token with ear.status "contraindicated"; the policy-engine input is a sample TEE.
    expected = {
        ("default", "example.token.json"): True,  # a resource call, not the sample TEE
        ("default", "policy-engine input"): False,  # the sample TEE
        ("allow_all", "example.token.json"): True,
        ("allow_all", "policy-engine input"): True,
        ("deny_all", "example.token.json"): False,
        ("deny_all", "policy-engine input"): False,
        ("affirming", "example.token.json"): False,  # contraindicated
        ("affirming", "policy-engine input"): True,  # no submodule has an ear.status that is not "affirming"
    }
    for name in SHIPPED:
        service = _service(tmp_path / name, shipped_policy(f"{name}.rego"))
        for claims_name, claims in recorded_claims.items():
            verdict = expected[name, claims_name]
            assert _allowed(service, claims, "resource/default/key/k1") is verdict, (name, claims_name)
            # Only affirming.rego does not look at the plugin.
            other = verdict if name == "affirming" else False
            assert _allowed(service, claims, "other/default/key/k1") is other, (name, claims_name)


def test_affirming_is_trustees_any_not_affirming_rule(tmp_path: Path) -> None:
    # Trustee's rule: allowed iff submods is non-empty and no submodule has an ear.status other than "affirming";
    # a submodule WITHOUT ear.status is not "not affirming" (Rego: undefined != ... is undefined).
    service = _service(tmp_path, shipped_policy("affirming.rego"))
    affirming = {"ear.status": "affirming"}
    assert _allowed(service, {"submods": {"cpu0": affirming, "gpu0": affirming}}, "resource/a/b/c") is True
    warning = {"ear.status": "warning"}
    assert _allowed(service, {"submods": {"cpu0": affirming, "gpu0": warning}}, "resource/a/b/c") is False
    assert _allowed(service, {"submods": {"cpu0": affirming, "gpu0": {}}}, "resource/a/b/c") is True
    assert _allowed(service, {"submods": {}}, "resource/a/b/c") is False
    assert _allowed(service, {}, "resource/a/b/c") is False


# ---------------------------------------------------------------------------------------------------- HTTP level


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevKbs]:
    with dev_kbs(tmp_path_factory.mktemp("kbs")) as server:
        answer = server.admin("POST", f"/kbs/v0/resource/{INTEGRATION['resource_path']}", b"shhhhhhh")
        assert answer.status_code == 200, answer.text
        yield server


def _set_attestation_policy(kbs: DevKbs, text: str) -> None:
    body = json.dumps({"type": "rego", "policy_id": "default_cpu", "policy": b64u(text.encode())}).encode()
    answer = kbs.admin("POST", "/kbs/v0/attestation-policy", body)
    assert answer.status_code == 200, answer.text


def _released(kbs: DevKbs) -> bool:
    """A fresh sample-TEE attestation, then GET the secret: True if released, False if the policy denied."""
    client = RcarClient(kbs.url, TeeKey.generate("P-256"))
    try:
        client.get_token()
        answer = client.get_resource(INTEGRATION["resource_path"])
        if answer.status_code == 200:
            assert client.key.decrypt(answer.content) == b"shhhhhhh"
            return True
        assert answer.status_code == 401, answer.text
        assert answer.json()["type"].endswith("/PolicyDeny"), answer.text
        return False
    finally:
        client.close()


@pytest.mark.parametrize("case", INTEGRATION["cases"], ids=[c["name"] for c in INTEGRATION["cases"]])
def test_trustee_integration_cases_over_http(kbs: DevKbs, case: dict[str, object]) -> None:
    _set_attestation_policy(kbs, str(case["attestation_policy"]))
    kbs.set_policy(str(case["resource_policy"]))
    assert _released(kbs) is case["released"]


# Our own attestation policy for the sample TEE that makes every claim affirming (2), to get an affirming token.
_AFFIRMING_CPU = 'package policy\ntrust_claims := {"executables": 2, "hardware": 2, "configuration": 2}\n'


@pytest.mark.parametrize(
    ("policy", "attestation_policy", "released"),
    [
        # default.rego's comment: "will only allow accesses to "resource" plugin if the client is a TEE/TPM
        # platform" (the sample TEE is not one).
        ("default", _AFFIRMING_CPU, False),
        # sample_policies/README.md: allow_all "Release resources unconditionally"; deny_all "Deny all".
        ("allow_all", _AFFIRMING_CPU, True),
        ("deny_all", _AFFIRMING_CPU, False),
        # README.md: affirming "Only release resources if the AS provides an affirming EAR token".
        ("affirming", _AFFIRMING_CPU, True),
        ("affirming", shipped_policy("default_cpu.rego"), False),  # no reference values: contraindicated
    ],
)
def test_each_shipped_policy_over_http(kbs: DevKbs, policy: str, attestation_policy: str, released: bool) -> None:
    _set_attestation_policy(kbs, attestation_policy)
    kbs.set_policy(f"{policy}.rego")
    assert _released(kbs) is released
