"""registries.conf v2 subset: the image-rs vector, matching, mirrors, remaps, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.errors import ConfigError
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.registries_conf import (
    Mirror,
    PullSource,
    RegistriesConfig,
    RegistryBlockedError,
    RegistryRule,
)
from cocoguest.registry.types import TlsSettings

VECTOR = Path(__file__).parents[1] / "vectors" / "image-rs" / "registry-configuration.toml"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _ref(text: str) -> ImageReference:
    return ImageReference.parse(text)


def _conf(text: str) -> RegistriesConfig:
    return RegistriesConfig.from_toml(text, "test.conf")


def _summary(sources: list[PullSource]) -> list[tuple[str, str, bool, bool]]:
    return [(str(s.reference), s.endpoint.host, s.endpoint.insecure, s.mirror) for s in sources]


# --- the image-rs vector -------------------------------------------------------------------------------------


@pytest.fixture
def vector() -> RegistriesConfig:
    return RegistriesConfig.load(VECTOR, missing_ok=False)


def test_vector_parses(vector: RegistriesConfig) -> None:
    assert vector.unqualified_search_registries == ("docker.io", "example1.com")
    assert vector.source == str(VECTOR)
    assert [r.prefix for r in vector.rules] == [
        "example.com/banned",
        "mirror-test.com",
        "remapping-test.com",
        "127.0.0.1:5000",
    ]
    assert vector.rules[1].mirrors == (Mirror("127.0.0.1:5000", insecure=True, pull_from_mirror="all"),)
    assert vector.rules[1].location == "mirror-test.com"  # no location: no remap (image-rs)


def test_vector_blocked(vector: RegistriesConfig) -> None:
    with pytest.raises(
        RegistryBlockedError, match=r"example\.com/banned/image:tag.*blocked by .*registry-configuration"
    ):
        vector.pull_sources(_ref("example.com/banned/image:tag"))
    with pytest.raises(ConfigError, match="blocked"):
        vector.pull_sources(_ref("example.com/banned@" + DIGEST))
    assert _summary(vector.pull_sources(_ref("example.com/banned-suffix/image:tag"))) == [
        ("example.com/banned-suffix/image:tag", "example.com", False, False)
    ]
    assert vector.rule_for(_ref("example.com/no-banned/image:tag")) is None


def test_vector_mirror(vector: RegistriesConfig) -> None:
    assert _summary(vector.pull_sources(_ref("mirror-test.com/ns/busybox:1"))) == [
        ("127.0.0.1:5000/ns/busybox:1", "127.0.0.1:5000", True, True),
        ("mirror-test.com/ns/busybox:1", "mirror-test.com", False, False),
    ]


def test_vector_remap(vector: RegistriesConfig) -> None:
    assert _summary(vector.pull_sources(_ref("remapping-test.com/foo@" + DIGEST))) == [
        (f"127.0.0.1:5000/foo@{DIGEST}", "127.0.0.1:5000", True, False)
    ]


def test_vector_insecure_registry(vector: RegistriesConfig) -> None:
    assert _summary(vector.pull_sources(_ref("127.0.0.1:5000/a/b"))) == [
        ("127.0.0.1:5000/a/b:latest", "127.0.0.1:5000", True, False)
    ]
    # A different port is a different registry.
    assert _summary(vector.pull_sources(_ref("127.0.0.1:5001/a/b"))) == [
        ("127.0.0.1:5001/a/b:latest", "127.0.0.1:5001", False, False)
    ]


def test_vector_unqualified_search(vector: RegistriesConfig) -> None:
    assert [str(r) for r in vector.expand_unqualified("busybox")] == [
        "docker.io/library/busybox:latest",
        "example1.com/busybox:latest",
    ]
    assert [str(r) for r in vector.expand_unqualified("foo/bar@" + DIGEST)] == [
        f"docker.io/foo/bar@{DIGEST}",
        f"example1.com/foo/bar@{DIGEST}",
    ]


# --- unqualified search ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quay.io/a/b:1", "quay.io/a/b:1"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("docker://registry.local/x", "registry.local/x:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ],
)
def test_qualified_names_are_not_expanded(vector: RegistriesConfig, name: str, expected: str) -> None:
    assert [str(r) for r in vector.expand_unqualified(name)] == [expected]


def test_no_search_registries_means_docker_hub() -> None:
    for config in (RegistriesConfig(), _conf(""), _conf("unqualified-search-registries = []")):
        assert [str(r) for r in config.expand_unqualified("busybox:1")] == ["docker.io/library/busybox:1"]


def test_search_registries_normalised_and_ordered() -> None:
    config = _conf('unqualified-search-registries = ["registry.local:5000/", "quay.io"]')
    assert config.unqualified_search_registries == ("registry.local:5000", "quay.io")
    assert [str(r) for r in config.expand_unqualified("ns/x")] == [
        "registry.local:5000/ns/x:latest",
        "quay.io/ns/x:latest",
    ]


def test_expand_rejects_invalid_names() -> None:
    with pytest.raises(ValueError, match="invalid"):
        RegistriesConfig().expand_unqualified("Bad Name")


# --- prefix matching -------------------------------------------------------------------------------------------

_LONGEST = """
[[registry]]
location = "example.com"
[[registry]]
prefix = "example.com/foo"
location = "r1.local/foo"
[[registry]]
prefix = "example.com/foo/bar"
location = "r2.local/x"
[[registry]]
prefix = "example.com/foo/tagged:v1"
location = "r3.local/tagged:v2"
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry]]
prefix = "a.example.com"
location = "lit.local"
[[registry]]
prefix = "*.b.example.com"
blocked = true
"""


@pytest.mark.parametrize(
    ("reference", "prefix"),
    [
        ("example.com/x", "example.com"),
        ("example.com/foo", "example.com/foo"),
        ("example.com/foo/y", "example.com/foo"),
        ("example.com/foobar", "example.com"),  # component boundary
        ("example.com/foo/bar/z", "example.com/foo/bar"),
        ("example.com/foo/bar@" + DIGEST, "example.com/foo/bar"),
        ("example.com/foo/tagged:v1", "example.com/foo/tagged:v1"),
        ("example.com/foo/tagged:v2", "example.com/foo"),
        ("example.com:5000/x", "example.com"),  # containers/image: ':' after the host also matches
        ("EXAMPLE.com/x", "example.com"),  # host names are case-insensitive
        ("c.example.com/x", "*.example.com"),
        ("d.c.example.com:443/x", "*.example.com"),
        ("a.example.com/x", "a.example.com"),  # a literal beats a wildcard of the same length
        ("z.b.example.com/x", "*.b.example.com"),
        ("b.example.com/x", "*.example.com"),  # *.b.example.com needs a subdomain of b.example.com
        ("example.com.evil/x", None),
        ("aexample.com/x", None),
        ("other.io/x", None),
    ],
)
def test_rule_for(reference: str, prefix: str | None) -> None:
    rule = _conf(_LONGEST).rule_for(_ref(reference))
    assert (rule.prefix if rule else None) == prefix


def test_remaps_keep_the_rest_of_the_reference() -> None:
    config = _conf(_LONGEST)
    assert [str(s.reference) for s in config.pull_sources(_ref("example.com/foo/bar/z/w:t"))] == ["r2.local/x/z/w:t"]
    assert [str(s.reference) for s in config.pull_sources(_ref("example.com/foo/tagged:v1"))] == ["r3.local/tagged:v2"]
    # Wildcard without location: no rewrite, but its settings apply.
    assert _summary(config.pull_sources(_ref("q.example.com/x:1"))) == [
        ("q.example.com/x:1", "q.example.com", True, False)
    ]
    with pytest.raises(ConfigError, match=r"'\*\.b\.example\.com' is blocked"):
        config.pull_sources(_ref("x.b.example.com/y"))


def test_remap_that_drops_the_tag_is_a_config_error() -> None:
    config = _conf('[[registry]]\nprefix = "example.com/foo:v1"\nlocation = "example.net/foo"\n')
    with pytest.raises(ConfigError, match="neither a tag nor a digest"):
        config.pull_sources(_ref("example.com/foo:v1"))


def test_blocked_uppercase_host_is_still_blocked() -> None:
    config = _conf('[[registry]]\nprefix = "evil.example"\nlocation = "evil.example"\nblocked = true\n')
    with pytest.raises(ConfigError, match="blocked"):
        config.pull_sources(_ref("EVIL.example/x"))


_HOSTS = ["a.io", "b.a.io", "x.b.a.io", "a.io:5000", "localhost:5000", "ab.io"]
_COMPONENTS = ["n", "m", "nm"]
_WILDCARDS = ["*.a.io", "*.b.a.io", "*.io"]


@st.composite
def _references(draw: st.DrawFn) -> ImageReference:
    host = draw(st.sampled_from(_HOSTS))
    path = draw(st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=3))
    tail = draw(st.sampled_from(["", ":t", ":u", "@" + DIGEST]))
    return ImageReference.parse(f"{host}/{'/'.join(path)}{tail}")


@st.composite
def _prefixes(draw: st.DrawFn) -> str:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.sampled_from(_WILDCARDS))
    host = draw(st.sampled_from(_HOSTS))
    path = draw(st.lists(st.sampled_from(_COMPONENTS), max_size=2))
    tail = draw(st.sampled_from(["", "", ":t"])) if path else ""
    return "/".join([host, *path]) + tail


def _reference_rule_for(rules: list[RegistryRule], reference: ImageReference) -> RegistryRule | None:
    """Longest-prefix matching, formulated differently: enumerate every prefix the reference admits."""
    text = str(reference)
    literal = {text[:i] for i in range(1, len(text) + 1) if i == len(text) or text[i] in "/:@"}
    host = text.split("/", maxsplit=1)[0].split(":", maxsplit=1)[0]
    labels = host.split(".")
    wildcard = {"*." + ".".join(labels[i:]) for i in range(1, len(labels))}
    best: RegistryRule | None = None
    for rule in rules:
        if rule.prefix not in literal | wildcard:
            continue
        longer = best is None or len(rule.prefix) > len(best.prefix)
        literal_tie = best is not None and len(rule.prefix) == len(best.prefix) and best.is_wildcard
        if longer or (literal_tie and not rule.is_wildcard):
            best = rule
    return best


@given(st.lists(_prefixes(), max_size=8), _references())
def test_rule_for_agrees_with_a_reference_implementation(prefixes: list[str], reference: ImageReference) -> None:
    rules = [RegistryRule(prefix=p, location="" if p.startswith("*.") else p) for p in prefixes]
    config = RegistriesConfig(rules)
    assert config.rule_for(reference) is _reference_rule_for(rules, reference)


# --- mirrors ----------------------------------------------------------------------------------------------------

_MIRRORS = """
[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
[[registry.mirror]]
location = "m-all.local/mirror-for-foo"
[[registry.mirror]]
location = "m-digest.local"
pull-from-mirror = "digest-only"
insecure = true
[[registry.mirror]]
location = "m-tag.local/t"
pull-from-mirror = "tag-only"
"""


def test_mirror_order_and_pull_from_mirror_for_tags() -> None:
    assert _summary(_conf(_MIRRORS).pull_sources(_ref("example.com/foo/image:tag"))) == [
        ("m-all.local/mirror-for-foo/image:tag", "m-all.local", False, True),
        ("m-tag.local/t/image:tag", "m-tag.local", False, True),
        ("internal.example/bar/image:tag", "internal.example", False, False),
    ]


def test_mirror_order_and_pull_from_mirror_for_digests() -> None:
    assert _summary(_conf(_MIRRORS).pull_sources(_ref("example.com/foo/image@" + DIGEST))) == [
        (f"m-all.local/mirror-for-foo/image@{DIGEST}", "m-all.local", False, True),
        (f"m-digest.local/image@{DIGEST}", "m-digest.local", True, True),
        (f"internal.example/bar/image@{DIGEST}", "internal.example", False, False),
    ]


def test_tag_and_digest_counts_as_digested() -> None:
    sources = _conf(_MIRRORS).pull_sources(_ref(f"example.com/foo/image:tag@{DIGEST}"))
    assert [s.endpoint.host for s in sources] == ["m-all.local", "m-digest.local", "internal.example"]


def test_mirror_by_digest_only() -> None:
    config = _conf(
        '[[registry]]\nlocation = "r.io"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.local"\n'
    )
    assert config.rules[0].mirrors[0].pull_from_mirror == "digest-only"
    assert [s.endpoint.host for s in config.pull_sources(_ref("r.io/x:1"))] == ["r.io"]
    assert [s.endpoint.host for s in config.pull_sources(_ref("r.io/x@" + DIGEST))] == ["m.local", "r.io"]


def test_docker_hub_mirror_and_api_host() -> None:
    config = _conf(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "hub.local"\n'
    )
    seen: list[str] = []

    def tls(host: str) -> TlsSettings:
        seen.append(host)
        return TlsSettings(ca_files=(Path(f"/ca/{host}.crt"),))

    sources = config.pull_sources(_ref("busybox"), tls=tls)
    assert _summary(sources) == [
        ("hub.local/library/busybox:latest", "hub.local", False, True),
        ("docker.io/library/busybox:latest", "registry-1.docker.io", False, False),
    ]
    assert seen == ["hub.local", "docker.io"]  # certs.d directories are named after the reference's registry
    assert sources[1].endpoint.tls.ca_files == (Path("/ca/docker.io.crt"),)


def test_wildcard_mirror_rewrites_the_host() -> None:
    config = _conf('[[registry]]\nprefix = "*.example.com"\n[[registry.mirror]]\nlocation = "m.local/ns"\n')
    assert [str(s.reference) for s in config.pull_sources(_ref("a.example.com/x:1"))] == [
        "m.local/ns/x:1",
        "a.example.com/x:1",
    ]


def test_insecure_override_and_default_tls() -> None:
    config = _conf(_MIRRORS)
    sources = config.pull_sources(_ref("example.com/foo/image:tag"), insecure_override=True)
    assert all(s.endpoint.insecure for s in sources)
    assert all(s.endpoint.tls == TlsSettings() for s in sources)
    plain = RegistriesConfig().pull_sources(_ref("quay.io/x"), insecure_override=True)
    assert _summary(plain) == [("quay.io/x:latest", "quay.io", True, False)]


def test_remap_to_an_invalid_reference_is_a_config_error() -> None:
    config = _conf('[[registry]]\nprefix = "example.com/foo"\nlocation = "example.net/UPPER"\n')
    with pytest.raises(ConfigError, match=r"test\.conf.*example\.net/UPPER/x:1"):
        config.pull_sources(_ref("example.com/foo/x:1"))


# --- loading and errors -----------------------------------------------------------------------------------------


def test_load_none_and_missing(tmp_path: Path) -> None:
    assert RegistriesConfig.load(None).rules == ()
    missing = tmp_path / "registries.conf"
    assert RegistriesConfig.load(missing).rules == ()
    with pytest.raises(ConfigError, match="no such file"):
        RegistriesConfig.load(missing, missing_ok=False)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.conf"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"r\.conf: not UTF-8"):
        RegistriesConfig.load(path)
    path.write_text("# " + "x" * (1024 * 1024))
    with pytest.raises(ConfigError, match="larger than"):
        RegistriesConfig.load(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match=r"r\.conf: cannot read"):
        RegistriesConfig.load(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[registry]\n", "invalid TOML"),
        ('unqualified-search-registries = "docker.io"', "unqualified-search-registries: expected an array of strings"),
        ("unqualified-search-registries = [1]", "unqualified-search-registries: expected an array"),
        ('unqualified-search-registries = ["docker.io/library"]', r"unqualified-search-registries\[0\]"),
        ('registry = "x"', "registry: expected an array of tables"),
        (
            '[[registry]]\nlocation = "r.io"\ninsecure = "yes"',
            r"registry\[0\]\.insecure: expected a boolean, got a string",
        ),
        ('[[registry]]\nlocation = "r.io"\nblocked = 1', r"registry\[0\]\.blocked: expected a boolean"),
        ("[[registry]]\nlocation = 5", r"registry\[0\]\.location: expected a string"),
        ("[[registry]]\ninsecure = true", r"registry\[0\]\.prefix: neither prefix nor location"),
        ('[[registry]]\nlocation = "https://r.io"', r"registry\[0\]\.location: 'https://r\.io': URL schemes"),
        ('[[registry]]\nprefix = "example.*.com"\nlocation = "x.io"', r"registry\[0\]\.prefix"),
        ('[[registry]]\nprefix = "*.example.com/foo"', r"registry\[0\]\.prefix: .*wildcard"),
        ('[[registry]]\nprefix = "*.example.com"\nlocation = "x.io"', r"registry\[0\]\.location: must be empty"),
        ('[[registry]]\nlocation = "bad host/x"', r"registry\[0\]\.location"),
        ('[[registry]]\nlocation = "r.io"\npull-from-mirror = "all"', r"registry\[0\]\.pull-from-mirror: only allowed"),
        ('[[registry]]\nlocation = "r.io"\nmirror = [1]', r"registry\[0\]\.mirror: expected an array of tables"),
        (
            '[[registry]]\nlocation = "r.io"\n[[registry.mirror]]\ninsecure = true',
            r"registry\[0\]\.mirror\[0\]\.location: a mirror needs a location",
        ),
        (
            '[[registry]]\nlocation = "r.io"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "sometimes"',
            r"registry\[0\]\.mirror\[0\]\.pull-from-mirror: 'sometimes' is not one of",
        ),
        (
            '[[registry]]\nlocation = "r.io"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"',
            r"registry\[0\]\.mirror\[0\]\.pull-from-mirror: cannot be combined",
        ),
        (
            '[[registry]]\nlocation = "r.io"\n[[registry.mirror]]\nlocation = "m"\ninsecure = "no"',
            r"registry\[0\]\.mirror\[0\]\.insecure: expected a boolean",
        ),
        (
            '[[registry]]\nprefix = "a.io"\nlocation = "r.io"\ninsecure = true\n[[registry]]\nlocation = "r.io"',
            "'r.io' is defined several times with conflicting 'insecure'",
        ),
        ('[registries.search]\nregistries = ["docker.io"]', "v1 format"),
    ],
)
def test_malformed_configurations(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        RegistriesConfig.from_toml(text, "/etc/containers/registries.conf")
    assert str(info.value).startswith("registries configuration /etc/containers/registries.conf: ")


def test_repeated_prefix_keeps_the_first_rule(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        '[[registry]]\nprefix = "a.io"\nlocation = "first.io"\n[[registry]]\nprefix = "a.io"\nlocation = "second.io"\n'
    )
    with caplog.at_level(logging.WARNING, logger="cocoguest.registry.config.registries_conf"):
        config = _conf(text)
    assert [r.location for r in config.rules] == ["first.io"]
    assert "repeated" in caplog.text


def test_unknown_and_unsupported_keys_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = 'short-name-mode = "enforcing"\n[aliases]\nx = "y.io/x"\n[[registry]]\nlocation = "r.io"\nbloked = true\n'
    with caplog.at_level(logging.WARNING, logger="cocoguest.registry.config.registries_conf"):
        config = _conf(text)
    assert not config.rules[0].blocked
    assert "'bloked'" in caplog.text
    assert "short-name-mode" in caplog.text
    assert "aliases" in caplog.text


def test_trailing_slashes_are_removed() -> None:
    config = _conf('[[registry]]\nprefix = "a.io/ns/"\nlocation = "b.io/x/"\n[[registry.mirror]]\nlocation = "m.io/"\n')
    assert config.rules[0] == RegistryRule("a.io/ns", "b.io/x", mirrors=(Mirror("m.io"),))
