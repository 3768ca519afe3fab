"""Scope lookup for the docker and oci transports.

Tables ported from containers/image ``docker/policyconfiguration/naming_test.go`` (TestDockerReference),
``signature/policy_eval_test.go`` (TestPolicyContextRequirementsForImageRef) and
``oci/layout/oci_transport_test.go`` (TestReferencePolicyConfigurationNamespaces).
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.signature.policy.identity import ReferenceFormatError
from cocoguest.signature.policy.scopes import (
    ScopeMatch,
    candidate_scopes,
    docker_scopes,
    go_clean_path,
    lookup,
    oci_scopes,
)

SHA = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

NAMESPACES: dict[str, list[str]] = {
    "example.com/ns/repo": ["example.com/ns/repo", "example.com/ns", "example.com", "*.com"],
    "example.com/repo": ["example.com/repo", "example.com", "*.com"],
    "localhost/ns/repo": ["localhost/ns/repo", "localhost/ns", "localhost"],
    "localhost/repo": ["localhost/repo", "localhost"],
    "notlocalhost/repo": ["docker.io/notlocalhost/repo", "docker.io/notlocalhost", "docker.io", "*.io"],
    "docker.io/ns/repo": ["docker.io/ns/repo", "docker.io/ns", "docker.io", "*.io"],
    "docker.io/library/repo": ["docker.io/library/repo", "docker.io/library", "docker.io", "*.io"],
    "docker.io/repo": ["docker.io/library/repo", "docker.io/library", "docker.io", "*.io"],
    "ns/repo": ["docker.io/ns/repo", "docker.io/ns", "docker.io", "*.io"],
    "library/repo": ["docker.io/library/repo", "docker.io/library", "docker.io", "*.io"],
    "repo": ["docker.io/library/repo", "docker.io/library", "docker.io", "*.io"],
    "yet.another.example.com:8443/ns/repo": [
        "yet.another.example.com:8443/ns/repo",
        "yet.another.example.com:8443/ns",
        "yet.another.example.com:8443",
        "*.another.example.com",
        "*.example.com",
        "*.com",
    ],
}


@pytest.mark.parametrize("name", sorted(NAMESPACES))
@pytest.mark.parametrize("suffix", [":tag", "@" + SHA])
def test_docker_identity_and_namespaces(name: str, suffix: str) -> None:
    expected = NAMESPACES[name]
    assert docker_scopes(name + suffix) == (expected[0] + suffix, *expected)


def test_docker_name_only_gets_latest() -> None:
    assert docker_scopes("busybox")[0] == "docker.io/library/busybox:latest"


@pytest.mark.parametrize("bad", ["busybox:1@" + SHA, "UPPER", ""])
def test_docker_scopes_refuse(bad: str) -> None:
    with pytest.raises(ReferenceFormatError):
        docker_scopes(bad)


def _scopes_fixture() -> tuple[str, dict[str, dict[str, str]]]:
    transports: dict[str, dict[str, str]] = {}
    for transport, scope in [
        ("docker", ""),
        ("docker", "unmatched"),
        ("docker", "deep.com"),
        ("docker", "*.very.deep.com"),
        ("docker", "*.deep.com"),
        ("docker", "deep.com/n1"),
        ("docker", "deep.com/n1/n2"),
        ("docker", "deep.com/n1/n2/n3"),
        ("docker", "deep.com/n1/n2/n3/repo"),
        ("docker", "deep.com/n1/n2/n3/repo:tag2"),
        ("atomic", "unmatched"),
    ]:
        transports.setdefault(transport, {})[scope] = f"{transport}:{scope}"
    return "DEFAULT", transports


@pytest.mark.parametrize(
    ("reference", "matched"),
    [
        ("deep.com/n1/n2/n3/repo:tag2", "deep.com/n1/n2/n3/repo:tag2"),
        ("deep.com/n1/n2/n3/repo:nottag2", "deep.com/n1/n2/n3/repo"),
        ("deep.com/n1/n2/n3/notrepo:tag2", "deep.com/n1/n2/n3"),
        ("deep.com/n1/n2/notn3/repo:tag2", "deep.com/n1/n2"),
        ("deep.com/n1/notn2/n3/repo:tag2", "deep.com/n1"),
        ("deep.com/notn1/n2/n3/repo:tag2", "deep.com"),
        ("very.deep.com/n1/n2/n3/repo:tag2", "*.deep.com"),
        ("not.very.deep.com/n1/n2/n3/repo:tag2", "*.very.deep.com"),
        ("this.does-not/match:anything", ""),
    ],
)
def test_requirements_for_image_ref(reference: str, matched: str) -> None:
    default, transports = _scopes_fixture()
    found = lookup(default, transports, "docker", reference)
    assert found.requirements == f"docker:{matched}"
    assert found.scope == matched
    assert found.label == f'transports.docker["{matched}"]'


def test_transport_without_configuration_uses_default() -> None:
    default, transports = _scopes_fixture()
    del transports["docker"]
    found = lookup(default, transports, "docker", "what/ever:1")
    assert (found.requirements, found.scope, found.label) == ("DEFAULT", None, "default")
    # A transport with scopes but neither a match nor "" also falls back to default.
    found = lookup(default, {"docker": {"other.io": "x"}}, "docker", "what/ever:1")
    assert found.requirements == "DEFAULT"


def test_oci_namespaces() -> None:
    assert oci_scopes("/usr/share:someimage") == ("/usr/share", "/usr")
    assert oci_scopes("/usr/share/./.") == ("/usr/share", "/usr")
    assert oci_scopes("//usr//share/") == ("/usr/share", "/usr")
    assert oci_scopes("/:image3") == ()
    with pytest.raises(ReferenceFormatError, match="absolute"):
        oci_scopes("relative/dir:x")


def test_oci_lookup_ignores_the_ref_part() -> None:
    scopes = {"/var/lib/layouts/app": "app", "/var/lib": "lib"}
    assert lookup("D", {"oci": scopes}, "oci", "/var/lib/layouts/app:v1").requirements == "app"
    assert lookup("D", {"oci": scopes}, "oci", "/var/lib/layouts/other:v1").requirements == "lib"
    assert lookup("D", {"oci": scopes}, "oci", "/srv/x").requirements == "D"


def test_unsupported_transport() -> None:
    with pytest.raises(ValueError, match="transport"):
        candidate_scopes("dir", "/x")


def test_go_clean_path() -> None:
    assert go_clean_path("//a/../b/") == "/b"
    assert go_clean_path("/..") == "/"


def test_label_quotes_scope() -> None:
    assert ScopeMatch("docker", 'a"b', 1).label == 'transports.docker["a\\"b"]'


# --- property: lookup agrees with a tiny reference implementation ---------------------------------------------

_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=6)
_host = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
    st.lists(_label, min_size=2, max_size=4),
    st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
)
_path = st.lists(_label, min_size=1, max_size=4)
_suffix = st.one_of(
    st.builds(lambda t: f":{t}", _label),
    st.builds(lambda h: f"@sha256:{h}", st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
)


def _reference_candidates(host: str, path: list[str], suffix: str) -> list[str]:
    """Built from the parts, independently of the implementation: full, repo, namespaces, host, wildcards."""
    repo = "/".join([host, *path])
    out = [repo + suffix]
    out.extend("/".join([host, *path[:n]]) for n in range(len(path), 0, -1))
    out.append(host)
    labels = host.split(":", maxsplit=1)[0].split(".")
    out.extend("*." + ".".join(labels[i:]) for i in range(1, len(labels)))
    return out


@given(
    host=_host,
    path=_path,
    suffix=_suffix,
    data=st.data(),
)
def test_lookup_agrees_with_reference_implementation(
    host: str, path: list[str], suffix: str, data: st.DataObject
) -> None:
    candidates = _reference_candidates(host, path, suffix)
    decoys = ["*." + host.split(":", maxsplit=1)[0], host + "/zz-decoy", "other.example/x"]
    present = data.draw(st.lists(st.sampled_from([*candidates, *decoys, ""]), unique=True))
    scopes = {scope: f"req:{scope}" for scope in present}
    expected = next((s for s in [*candidates, ""] if s in scopes), None)
    found = lookup("DEFAULT", {"docker": scopes}, "docker", "/".join([host, *path]) + suffix)
    assert found.scope == expected
    assert found.requirements == (scopes[expected] if expected is not None else "DEFAULT")


@given(parts=st.lists(_label, min_size=1, max_size=6), data=st.data())
def test_oci_lookup_agrees_with_reference_implementation(parts: list[str], data: st.DataObject) -> None:
    directory = "/" + "/".join(parts)
    candidates = ["/" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    present = data.draw(st.lists(st.sampled_from([*candidates, "/", directory + "x", ""]), unique=True))
    scopes = {scope: scope for scope in present}
    expected = next((s for s in [*candidates, ""] if s in scopes), None)
    assert lookup("D", {"oci": scopes}, "oci", directory + ":ref").scope == expected
