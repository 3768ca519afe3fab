"""signedIdentity rules and the docker reference grammar behind them.

Tables ported from containers/image ``signature/policy_reference_match_test.go`` and
``signature/policy_config_test.go`` (TestValidateIdentityRemappingPrefix, TestNewPRMExactReference, ...).
"""

from __future__ import annotations

import pytest

from cocoguest.signature.policy.identity import (
    DockerReference,
    ExactReference,
    ExactRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ReferenceFormatError,
    RemapIdentity,
    SignedIdentity,
    describe_identity,
    parse_named,
    parse_normalized_named,
    validate_remap_prefix,
)

FULL_RHEL = "registry.access.redhat.com/rhel7/rhel:7.2.3"
UNTAGGED_RHEL = "registry.access.redhat.com/rhel7/rhel"
DIGEST = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
DIGEST_OTHER = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

# prmExactMatchTestTable: symmetric.
EXACT_TABLE: list[tuple[str, str, bool]] = [
    ("busybox:latest", "busybox:latest", True),
    (FULL_RHEL, FULL_RHEL, True),
    ("busybox" + DIGEST, "busybox" + DIGEST, True),
    ("library/busybox:latest", "busybox:latest", True),
    ("docker.io/library/busybox:latest", "busybox:latest", True),
    ("library/busybox" + DIGEST, "busybox" + DIGEST, True),
    ("busybox:latest", "busybox:notlatest", False),
    ("busybox:latest", "notbusybox:latest", False),
    ("busybox:latest", "hostname/library/busybox:notlatest", False),
    ("hostname/library/busybox:latest", "busybox:notlatest", False),
    ("busybox:latest", FULL_RHEL, False),
    ("busybox" + DIGEST, "notbusybox" + DIGEST, False),
    ("busybox:latest", "busybox" + DIGEST, False),
    ("busybox" + DIGEST, "busybox" + DIGEST_OTHER, False),
    ("busybox", "busybox:latest", False),
    ("busybox", "busybox" + DIGEST, False),
    ("busybox", "busybox", False),
    ("busybox:latest" + DIGEST, "busybox:latest" + DIGEST, True),
    ("busybox:latest" + DIGEST, "busybox:latest" + DIGEST_OTHER, False),
    ("busybox:latest" + DIGEST, "busybox:notlatest" + DIGEST, False),
    ("busybox:latest" + DIGEST, "busybox" + DIGEST, False),
    ("busybox:latest" + DIGEST, "busybox:latest", False),
    ("UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES", "busybox:latest", False),
    ("", "UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES", False),
    ("INVALID", "INVALID", False),
]

# prmRepositoryMatchTestTable: symmetric.
REPOSITORY_TABLE: list[tuple[str, str, bool]] = [
    ("busybox:latest", "busybox:latest", True),
    (FULL_RHEL, FULL_RHEL, True),
    ("busybox" + DIGEST, "busybox" + DIGEST, True),
    ("library/busybox:latest", "busybox:latest", True),
    ("docker.io/library/busybox:latest", "busybox:latest", True),
    ("library/busybox" + DIGEST, "busybox" + DIGEST, True),
    ("busybox:latest", "busybox:notlatest", True),
    (FULL_RHEL + "tagsuffix", FULL_RHEL, True),
    ("library/busybox:latest", "busybox:notlatest", True),
    ("busybox:latest", "library/busybox:notlatest", True),
    ("docker.io/library/busybox:notlatest", "busybox:latest", True),
    ("busybox:notlatest", "docker.io/library/busybox:latest", True),
    ("busybox:latest", "busybox" + DIGEST, True),
    ("busybox" + DIGEST, "busybox" + DIGEST_OTHER, True),
    ("busybox", "busybox:notlatest", True),
    (FULL_RHEL, UNTAGGED_RHEL, True),
    ("busybox", "busybox" + DIGEST, True),
    ("library/busybox", "busybox", True),
    ("docker.io/library/busybox", "busybox", True),
    ("busybox:latest", "notbusybox:latest", False),
    ("hostname/library/busybox:latest", "busybox:notlatest", False),
    ("busybox:latest", FULL_RHEL, False),
    ("busybox" + DIGEST, "notbusybox" + DIGEST, False),
    ("busybox:latest" + DIGEST, "busybox:latest" + DIGEST, True),
    ("busybox:latest" + DIGEST, "busybox:latest" + DIGEST_OTHER, True),
    ("busybox:latest" + DIGEST, "busybox:notlatest" + DIGEST, True),
    ("busybox:latest" + DIGEST, "busybox" + DIGEST, True),
    ("busybox:latest" + DIGEST, "busybox:latest", True),
    ("UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES", "busybox:latest", False),
    ("", "UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES", False),
    ("INVALID", "INVALID", False),
]

# matchRepoDigestOrExactTestTable: asymmetric (image, signature).
REPO_DIGEST_OR_EXACT_TABLE: list[tuple[str, str, bool]] = [
    ("busybox:latest", "busybox:notlatest", False),
    (FULL_RHEL + "tagsuffix", FULL_RHEL, False),
    ("library/busybox:latest", "busybox:notlatest", False),
    ("busybox:latest", "library/busybox:notlatest", False),
    ("docker.io/library/busybox:notlatest", "busybox:latest", False),
    ("busybox:notlatest", "docker.io/library/busybox:latest", False),
    ("busybox", "busybox:latest", False),
    ("busybox:latest", "busybox", False),
    ("busybox", "busybox" + DIGEST, False),
    ("busybox" + DIGEST, "busybox", False),
    (FULL_RHEL, UNTAGGED_RHEL, False),
    ("busybox", "busybox", False),
    ("busybox:latest", "busybox" + DIGEST, False),
    ("busybox" + DIGEST, "busybox:latest", True),
    ("busybox" + DIGEST, "busybox" + DIGEST_OTHER, True),
    ("busybox:latest" + DIGEST, "busybox:latest", False),
    ("busybox:latest" + DIGEST, "busybox:notlatest", False),
    ("busybox:latest", "busybox:latest" + DIGEST, False),
    ("busybox:latest" + DIGEST, "busybox:latest" + DIGEST_OTHER, False),
    ("busybox:latest" + DIGEST, "busybox:notlatest" + DIGEST_OTHER, False),
]


def _image(text: str) -> DockerReference | None:
    """The image's reference as containers/image's tests build it (invalid ones are skipped by the caller)."""
    try:
        return parse_normalized_named(text)
    except ReferenceFormatError:
        return None


def _both_ways(table: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    return [*table, *((b, a, r) for a, b, r in table)]


def _symmetric_cases(rule: SignedIdentity, table: list[tuple[str, str, bool]]) -> None:
    for image_text, sig, expected in _both_ways(table):
        image = _image(image_text)
        if image is None:
            continue  # testPossiblyInvalidImageAndSig: an invalid image reference cannot occur
        assert rule.matches(image, sig) is expected, (image_text, sig)


def test_parse_normalized_named_normalises_like_containers_image() -> None:
    assert str(parse_normalized_named("busybox")) == "docker.io/library/busybox"
    assert str(parse_normalized_named("index.docker.io/busybox:1")) == "docker.io/library/busybox:1"
    assert parse_normalized_named("localhost/x").name == "localhost/x"
    # Only ".", ":" or "localhost" make a host; "notlocalhost/repo" is a docker.io namespace.
    assert parse_normalized_named("notlocalhost/repo").name == "docker.io/notlocalhost/repo"
    ref = parse_normalized_named("example.com:5000/a/b:t" + DIGEST)
    assert (ref.name, ref.tag, ref.digest, ref.domain) == ("example.com:5000/a/b", "t", DIGEST[1:], "example.com:5000")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES",
        "INVALIDUPPERCASE:latest",
        "UPPER/x:1",  # an upper-case first component is not a host in containers/image's fork
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "busybox@sha256:0123",
        "busybox@md5:0123456789abcdef0123456789abcdef",
        "busybox:" + "t" * 129,
        "example.com/" + "a" * 250,
        "a" * 2000,
        "docker://busybox",
    ],
)
def test_parse_normalized_named_rejects(bad: str) -> None:
    with pytest.raises(ReferenceFormatError):
        parse_normalized_named(bad)


def test_parse_named_requires_canonical_form() -> None:
    assert str(parse_named("docker.io/library/busybox:1")) == "docker.io/library/busybox:1"
    with pytest.raises(ReferenceFormatError, match="canonical"):
        parse_named("busybox:1")


def test_match_exact() -> None:
    _symmetric_cases(MatchExact(), EXACT_TABLE)
    assert not MatchExact().matches(None, "")  # unidentified images are rejected


def test_match_repository() -> None:
    _symmetric_cases(MatchRepository(), REPOSITORY_TABLE)
    assert not MatchRepository().matches(None, "")


def test_match_repo_digest_or_exact() -> None:
    rule = MatchRepoDigestOrExact()
    # Accepts everything matchExact accepts and rejects everything matchRepository rejects.
    _symmetric_cases(rule, [c for c in EXACT_TABLE if c[2]])
    _symmetric_cases(rule, [c for c in REPOSITORY_TABLE if not c[2]])
    for image_text, sig, expected in REPO_DIGEST_OR_EXACT_TABLE:
        assert rule.matches(parse_normalized_named(image_text), sig) is expected, (image_text, sig)
    assert not rule.matches(None, "busybox:latest")


def test_exact_reference_ignores_the_image() -> None:
    for a, b, expected in _both_ways(EXACT_TABLE):
        # Built without validate(), as the Go test does, so invalid values are covered too.
        assert ExactReference(a).matches(None, b) is expected, (a, b)


def test_exact_repository_ignores_the_image() -> None:
    for a, b, expected in _both_ways(REPOSITORY_TABLE):
        assert ExactRepository(a).matches(None, b) is expected, (a, b)


@pytest.mark.parametrize(
    ("ref", "prefix", "expected"),
    [
        ("docker.io/image", "docker.io", True),
        ("docker.io/image", "example.com", False),
        ("example.com:5000/image", "example.com:5000", True),
        ("example.com:50000/image", "example.com:5000", False),
        ("example.com:5000/image", "example.com", False),
        ("example.com/foo", "example.com", True),
        ("example.com/foo/bar", "example.com", True),
        ("example.com/foo/bar:baz", "example.com", True),
        ("example.com/foo/bar" + DIGEST, "example.com", True),
        ("docker.io/ns/image", "docker.io/library", False),
        ("example.com/library", "docker.io/library", False),
        ("docker.io/libraryy/image", "docker.io/library", False),
        ("docker.io/library/busybox", "docker.io/library", True),
        ("example.com/ns/image", "example.com/ns", True),
        ("example.com/ns2/image", "example.com/ns", False),
        ("example.com/n2/image", "example.com/ns", False),
        ("example.com", "example.com/library/busybox", False),
        ("example.com:5000/ns/image", "example.com/ns", False),
        ("example.com/ns/image", "example.com:5000/ns", False),
        ("docker.io/library/busybox", "docker.io/library/busybox", True),
        ("example.com/library/busybox", "docker.io/library/busybox", False),
        ("docker.io/library/busybox2", "docker.io/library/busybox", False),
        ("example.com/ns/image", "example.com/ns/image", True),
        ("example.com/ns/imag2", "example.com/ns/image", False),
        ("example.com/ns/imagee", "example.com/ns/image", False),
        ("example.com:5000/ns/image", "example.com/ns/image", False),
        ("example.com/ns/image", "example.com:5000/ns/image", False),
        ("example.com/ns/image:tag", "example.com/ns/image", True),
        ("example.com/ns/image" + DIGEST, "example.com/ns/image", True),
        ("example.com/ns/image:tag" + DIGEST, "example.com/ns/image", True),
    ],
)
def test_remap_ref_matches_prefix(ref: str, prefix: str, expected: bool) -> None:
    rule = RemapIdentity(prefix, "docker.io/library/signed-prefix")
    rule.validate()
    assert rule.ref_matches_prefix(parse_normalized_named(ref)) is expected


@pytest.mark.parametrize(
    ("prefix", "signed_prefix", "ref", "expected"),
    [
        ("mirror.example", "vendor.example", "mirror.example/ns/image:tag", "vendor.example/ns/image:tag"),
        ("mirror.example", "vendor.example", "different.com/ns/image:tag", "different.com/ns/image:tag"),
        (
            "mirror.example/ns",
            "vendor.example/vendor-ns",
            "mirror.example/different-ns/image:tag",
            "mirror.example/different-ns/image:tag",
        ),
        ("docker.io", "not-docker-signed.example/ns", "busybox", "not-docker-signed.example/ns/library/busybox"),
        ("example.com/mirror", "example.com/vendor", "example.com/mirror/image:tag", "example.com/vendor/image:tag"),
        ("example.com/ns/mirror", "example.com/ns/vendor", "example.com/ns/mirror:tag", "example.com/ns/vendor:tag"),
        ("mirror.example", "vendor.example", "prefixmirror.example/ns/image:tag", "prefixmirror.example/ns/image:tag"),
        ("docker.io", "not-docker-signed.example", "busybox", "not-docker-signed.example/library/busybox"),
        ("docker.io/library", "not-docker-signed.example/ns", "busybox", "not-docker-signed.example/ns/busybox"),
        (
            "docker.io/library/busybox",
            "not-docker-signed.example/ns/notbusybox",
            "busybox",
            "not-docker-signed.example/ns/notbusybox",
        ),
        ("mirror.example", "vendor.example", "mirror.example/image", "vendor.example/image"),
        ("mirror.example", "vendor.example", "mirror.example/image:tag", "vendor.example/image:tag"),
        ("mirror.example", "vendor.example", "mirror.example/image" + DIGEST, "vendor.example/image" + DIGEST),
        (
            "mirror.example",
            "vendor.example",
            "mirror.example/image:tag" + DIGEST,
            "vendor.example/image:tag" + DIGEST,
        ),
        ("mirror.example/ns/image", "vendor.example:5000", "mirror.example/ns/image:tag", None),
        ("mirror.example/ns/image", "vendor.example:5000", "mirror.example/ns/image" + DIGEST, None),
        ("mirror.example/ns/image", "notlocalhost", "mirror.example/ns/image:tag", None),
    ],
)
def test_remap_reference_prefix(prefix: str, signed_prefix: str, ref: str, expected: str | None) -> None:
    rule = RemapIdentity(prefix, signed_prefix)
    rule.validate()
    parsed = parse_normalized_named(ref)
    if expected is None:
        with pytest.raises(ReferenceFormatError):
            rule.remap(parsed)
    else:
        assert str(rule.remap(parsed)) == expected


@pytest.mark.parametrize(
    ("prefix", "signed_prefix", "image", "sig", "expected"),
    [
        ("does-not-match.com", "does-not-match.rewritten", "busybox:latest", "busybox:latest", True),
        ("does-not-match.com", "does-not-match.rewritten", "busybox:latest", "notbusybox:latest", False),
        ("mirror.example", "public.com", "mirror.example/busybox:1", "public.com/busybox:1", True),
        ("mirror.example", "public.com", "mirror.example/busybox:1", "public.com/busybox:not1", False),
        ("mirror.example", "docker.io/library", "mirror.example/busybox:latest", "busybox:latest", True),
        ("mirror.example", "docker.io/library", "mirror.example/alpine:latest", "busybox:latest", False),
        ("docker.io/library", "original.com", "copied:latest", "original.com/copied:latest", True),
        ("docker.io/library", "original.com", "copied:latest", "original.com/ns/copied:latest", False),
        ("busybox", "example.com/busybox", "busybox:latest", "example.com/busybox:latest", False),
        ("docker.io/library/busybox", "busybox", "docker.io/library/busybox:latest", "busybox:latest", False),
        ("UPPERCASE", "example.com", "example.com/foo:latest", "example.com/foo:latest", True),
        ("example.com", "UPPERCASE", "example.com/foo:latest", "UPPERCASE/foo:latest", False),
    ],
)
def test_remap_identity_matches(prefix: str, signed_prefix: str, image: str, sig: str, expected: bool) -> None:
    # Built without validate(), like the Go test, to cover invalid objects.
    assert RemapIdentity(prefix, signed_prefix).matches(parse_normalized_named(image), sig) is expected


def _modified(text: str) -> str:
    first = text[0]
    return ("a" if first == "z" else chr(ord(first) + 1)) + text[1:]


def test_remap_identity_behaves_like_match_repo_digest_or_exact() -> None:
    cases = [
        *((a, b, r) for a, b, r in _both_ways(EXACT_TABLE) if r),
        *((a, b, r) for a, b, r in _both_ways(REPOSITORY_TABLE) if not r),
        *REPO_DIGEST_OR_EXACT_TABLE,
    ]
    for image_text, sig, expected in cases:
        image = _image(image_text)
        if image is None:
            continue
        no_rewrite = RemapIdentity("never-causes-a-rewrite.example", "never-causes-a-rewrite.example")
        assert no_rewrite.matches(image, sig) is expected, (image_text, sig)
        # Rewrite a modified host back to the real one.
        rewrite = RemapIdentity(_modified(image.domain), image.domain)
        rewrite.validate()
        moved = parse_normalized_named(_modified(str(image)))
        assert rewrite.matches(moved, sig) is expected, (str(moved), sig)
    assert not RemapIdentity("docker.io", "docker.io").matches(None, "")


@pytest.mark.parametrize(
    "prefix",
    [
        "localhost",
        "example.com",
        "example.com:80",
        "example.com/repo",
        "example.com/ns1/ns2/ns3/repo.with.dots-dashes_underscores",
        "example.com:80/ns1/ns2/ns3/repo.with.dots-dashes_underscores",
        "shortname",
        "ns/shortname",
    ],
)
def test_validate_remap_prefix_accepts(prefix: str) -> None:
    validate_remap_prefix(prefix)


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "repo_with_underscores",
        "example.com/",
        "example.com/UPPERCASEISINVALID",
        "example.com/repo/",
        "example.com/repo:tag",
        "example.com/repo" + DIGEST,
        "example.com/repo:tag" + DIGEST,
    ],
)
def test_validate_remap_prefix_rejects(prefix: str) -> None:
    with pytest.raises(ReferenceFormatError):
        validate_remap_prefix(prefix)


def test_exact_reference_and_repository_validation() -> None:
    ExactReference("library/busybox:latest").validate()
    ExactRepository("library/busybox:latest").validate()
    for bad in ("", "INVALIDUPPERCASE:latest", "library/busybox"):
        with pytest.raises(ReferenceFormatError):
            ExactReference(bad).validate()
    for bad in ("", "INVALIDUPPERCASE"):
        with pytest.raises(ReferenceFormatError):
            ExactRepository(bad).validate()


def test_describe_identity() -> None:
    assert describe_identity(MatchExact()) == "matchExact"
    assert describe_identity(ExactRepository("a/b")) == "exactRepository(a/b)"
    assert describe_identity(RemapIdentity("a.io", "b.io")) == "remapIdentity(a.io -> b.io)"
