"""Image references (oci/reference.py) against distribution/reference's grammar and docker.io normalisation.

Cases come from distribution/reference ``reference_test.go`` (``TestReferenceParse``) and ``normalize_test.go``,
adapted to our always-normalised form (``ParseNormalizedNamed`` semantics plus the ``latest`` default).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.digest import Digest
from cocoguest.oci import reference as oci_reference
from cocoguest.oci.reference import ImageReference

F64 = "sha256:" + "f" * 64
F128 = "sha512:" + "f" * 128


def _parts(text: str, **kwargs: bool) -> tuple[str, str, str | None, str | None]:
    r = ImageReference.parse(text, **kwargs)
    return r.registry, r.repository, r.tag, str(r.digest) if r.digest else None


# --- distribution/reference TestReferenceParse (valid inputs) ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test_com", ("docker.io", "library/test_com", "latest", None)),
        ("test.com:tag", ("docker.io", "library/test.com", "tag", None)),
        ("test.com:5000", ("docker.io", "library/test.com", "5000", None)),
        ("test.com/repo:tag", ("test.com", "repo", "tag", None)),
        ("test:5000/repo", ("test:5000", "repo", "latest", None)),
        ("test:5000/repo:tag", ("test:5000", "repo", "tag", None)),
        (f"test:5000/repo@{F64}", ("test:5000", "repo", None, F64)),
        (f"test:5000/repo:tag@{F64}", ("test:5000", "repo", "tag", F64)),
        ("lowercase:Uppercase", ("docker.io", "library/lowercase", "Uppercase", None)),
        ("sub-dom1.foo.com/bar/baz/quux", ("sub-dom1.foo.com", "bar/baz/quux", "latest", None)),
        ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None)),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            ("b.gcr.io", "test.example.com/my-app", "test.example.com", None),
        ),
        ("xn--n3h.com/myimage:xn--n3h.com", ("xn--n3h.com", "myimage", "xn--n3h.com", None)),
        (f"xn--7o8h.com/myimage:xn--7o8h.com@{F64}", ("xn--7o8h.com", "myimage", "xn--7o8h.com", F64)),
        (f"xn--7o8h.com/myimage@{F128}", ("xn--7o8h.com", "myimage", None, F128)),
        ("foo_bar.com:8080", ("docker.io", "library/foo_bar.com", "8080", None)),
        ("foo/foo_bar.com:8080", ("docker.io", "foo/foo_bar.com", "8080", None)),
        ("192.168.1.1", ("docker.io", "library/192.168.1.1", "latest", None)),
        ("192.168.1.1:tag", ("docker.io", "library/192.168.1.1", "tag", None)),
        ("192.168.1.1:5000", ("docker.io", "library/192.168.1.1", "5000", None)),
        ("192.168.1.1/repo", ("192.168.1.1", "repo", "latest", None)),
        ("192.168.1.1:5000/repo", ("192.168.1.1:5000", "repo", "latest", None)),
        ("192.168.1.1:5000/repo:5050", ("192.168.1.1:5000", "repo", "5050", None)),
        ("[2001:db8::1]/repo", ("[2001:db8::1]", "repo", "latest", None)),
        ("[2001:db8:1:2:3:4:5:6]/repo:tag", ("[2001:db8:1:2:3:4:5:6]", "repo", "tag", None)),
        ("[2001:db8::1]:5000/repo", ("[2001:db8::1]:5000", "repo", "latest", None)),
        ("[2001:db8::1]:5000/repo:tag", ("[2001:db8::1]:5000", "repo", "tag", None)),
        (f"[2001:db8::1]:5000/repo@{F64}", ("[2001:db8::1]:5000", "repo", None, F64)),
        (f"[2001:db8::1]:5000/repo:tag@{F64}", ("[2001:db8::1]:5000", "repo", "tag", F64)),
        ("[2001:db8::]:5000/repo", ("[2001:db8::]:5000", "repo", "latest", None)),
        ("[::1]:5000/repo", ("[::1]:5000", "repo", "latest", None)),
        # separators: one period, one or two underscores, any number of dashes
        ("a__b/c", ("docker.io", "a__b/c", "latest", None)),
        ("a---b_c__d/e.f", ("docker.io", "a---b_c__d/e.f", "latest", None)),
        ("a:_tag", ("docker.io", "library/a", "_tag", None)),
        ("a:" + "t" * 128, ("docker.io", "library/a", "t" * 128, None)),
        # the first component is a domain when it has '.', ':', is localhost, or has upper case
        ("localhost/foo", ("localhost", "foo", "latest", None)),
        ("localhost:5000/foo", ("localhost:5000", "foo", "latest", None)),
        ("Foo/bar", ("Foo", "bar", "latest", None)),
        ("EXAMPLE.com/x", ("EXAMPLE.com", "x", "latest", None)),
        ("example.com:0/x", ("example.com:0", "x", "latest", None)),
        ("localhost", ("docker.io", "library/localhost", "latest", None)),
        ("example.com", ("docker.io", "library/example.com", "latest", None)),
        ("docker://quay.io/a/b:c", ("quay.io", "a/b", "c", None)),
    ],
)
def test_valid_references(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    assert _parts(text) == expected


# --- invalid inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":justtag",
        f"@{F64}",
        "repo@sha256:" + "f" * 34,
        "validname@invaliddigest:" + "f" * 64,
        "repo@sha256:" + "F" * 64,  # upper-case hex
        "Uppercase:tag",
        "test:5000/Uppercase/lowercase:tag",
        "domain/" + "a" * 256 + ":tag",
        "aa/asdf$$^/aa",
        "[2001:db8::1]",
        "[2001:db8::1]:5000",
        "[2001:db8::1]:tag",
        "[fe80::1%eth0]:5000/repo",
        "[fe80::1%@invalidzone]:5000/repo",
        "a___b/c",
        "-a/b",
        "a-/b",
        "a.-b/c",
        "example-.com/x",
        "example.com:/x",
        "example.com//x",
        "example.com/x/",
        "docker.io/",
        "a:",
        "a:.tag",
        "a:-tag",
        "a:" + "t" * 129,
        "a:tag with space",
        "busybox\n",
        f"a@{F64}@{F64}",
        f"a@{F64}:tag",
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(oci_reference.ImageReferenceError, match="image reference"):
        ImageReference.parse(text)


def test_reference_error_is_a_value_error() -> None:
    assert issubclass(oci_reference.ImageReferenceError, ValueError)


def test_error_names_the_input() -> None:
    with pytest.raises(oci_reference.ImageReferenceError, match=r"'quay\.io/Bad'"):
        ImageReference.parse("quay.io/Bad")


@pytest.mark.parametrize("tag", ["tag\u00e9", "\u0663", "t\u00b2", "\uff54ag"])
def test_non_ascii_tags_are_invalid(tag: str) -> None:
    with pytest.raises(oci_reference.ImageReferenceError):
        ImageReference.parse(f"a:{tag}")


def test_bare_hex_identifier_is_refused() -> None:
    with pytest.raises(oci_reference.ImageReferenceError):
        ImageReference.parse("0123456789abcdef" * 4)


def test_length_limit_applies_to_the_path() -> None:
    assert ImageReference.parse("example.com/" + "a" * 255 + ":tag").repository == "a" * 255
    assert ImageReference.parse("a" * 247).repository == "library/" + "a" * 247
    # reference_test.go: with ParseNormalizedNamed semantics the path is docker.io's "a/.../a" (255 characters)
    assert ImageReference.parse("a/" * 127 + "a:tag-puts-this-over-max").repository == "a/" * 127 + "a"


def test_length_limit_counts_library_prefix_on_docker_hub() -> None:
    with pytest.raises(oci_reference.ImageReferenceError, match="longer than"):
        ImageReference.parse("a" * 248)  # library/ + 248 = 256


def test_ipv4_mapped_ipv6_host_is_refused() -> None:
    with pytest.raises(oci_reference.ImageReferenceError):
        ImageReference.parse("[::ffff:192.168.1.1]:5000/repo")


# --- docker.io normalisation (normalize_test.go) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("registry-1.docker.io/foo/bar", "docker.io/foo/bar:latest"),  # our extension: the API host
        ("foo/bar", "docker.io/foo/bar:latest"),
        ("foo/bar/baz", "docker.io/foo/bar/baz:latest"),
        ("docker.io/foo/bar", "docker.io/foo/bar:latest"),
        (f"busybox@{F64}", f"docker.io/library/busybox@{F64}"),
        (f"busybox:tag@{F64}", f"docker.io/library/busybox:tag@{F64}"),
        ("localhost/busybox", "localhost/busybox:latest"),  # not docker.io: no library/
        ("example.com/busybox", "example.com/busybox:latest"),
    ],
)
def test_docker_hub_normalisation(text: str, expected: str) -> None:
    assert str(ImageReference.parse(text)) == expected


def test_properties() -> None:
    hub = ImageReference.parse("busybox:1")
    assert hub.name == "docker.io/library/busybox"
    assert hub.api_host == "registry-1.docker.io"
    assert hub.manifest_ref() == "1"
    other = ImageReference.parse(f"quay.io/a/b:t@{F64}")
    assert other.api_host == "quay.io"
    assert other.manifest_ref() == F64  # the digest wins over the tag
    assert ImageReference.parse("quay.io/x", default_tag=False).manifest_ref() == "latest"


def test_default_tag_switch() -> None:
    assert ImageReference.parse("quay.io/x", default_tag=False).tag is None
    assert ImageReference.parse(f"quay.io/x@{F64}").tag is None  # a digest alone gets no tag


def test_with_registry_keeps_tag_and_digest() -> None:
    r = ImageReference.parse(f"quay.io/a/b:t@{F64}")
    moved = r.with_registry("mirror.local")
    assert str(moved) == f"mirror.local/a/b:t@{F64}"
    assert str(r.with_registry("mirror.local", "c/d")) == f"mirror.local/c/d:t@{F64}"


def test_values_are_frozen_and_hashable() -> None:
    a = ImageReference.parse("busybox")
    b = ImageReference.parse("docker.io/library/busybox:latest")
    assert a == b
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.tag = "x"  # type: ignore[misc]


# --- round trips (hypothesis) ----------------------------------------------------------------------------------

_ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([".", "_", "__", "-", "--", "---"])
_TAG_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


@st.composite
def _component(draw: st.DrawFn) -> str:
    out = draw(_ALNUM)
    for _ in range(draw(st.integers(0, 2))):
        out += draw(_SEPARATOR) + draw(_ALNUM)
    return out


@st.composite
def _host(draw: st.DrawFn) -> str:
    label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8)
    kind = draw(st.sampled_from(["domain", "localhost", "ipv6", "hub"]))
    if kind == "hub":
        return draw(st.sampled_from(["docker.io", "index.docker.io"]))
    if kind == "localhost":
        host = "localhost"
    elif kind == "ipv6":
        host = (
            "["
            + ":".join(draw(st.lists(st.text("0123456789abcdef", min_size=1, max_size=4), min_size=2, max_size=8)))
            + "]"
        )
    else:
        host = ".".join(draw(st.lists(label, min_size=2, max_size=4)))
    if kind != "domain" or draw(st.booleans()):
        host += f":{draw(st.integers(1, 65535))}"
    return host


@st.composite
def _reference_text(draw: st.DrawFn) -> tuple[str, str, str, str | None, Digest | None]:
    host = draw(_host())
    path = "/".join(draw(st.lists(_component(), min_size=1, max_size=3)))
    tag = draw(
        st.none()
        | st.text(_TAG_FIRST, min_size=1, max_size=1).flatmap(
            lambda first: st.text(_TAG_FIRST + ".-", max_size=20).map(lambda rest: first + rest)
        )
    )
    digest = draw(st.none() | st.binary(min_size=1, max_size=8).map(Digest.of_bytes))
    text = f"{host}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return text, host, path, tag, digest


@given(_reference_text())
def test_parse_of_generated_references(case: tuple[str, str, str, str | None, Digest | None]) -> None:
    text, host, path, tag, digest = case
    r = ImageReference.parse(text)
    hub = host in {"docker.io", "index.docker.io"}
    assert r.registry == ("docker.io" if hub else host)
    assert r.repository == (f"library/{path}" if hub and "/" not in path else path)
    assert r.digest == digest
    assert r.tag == (tag if tag or digest else "latest")
    assert ImageReference.parse(str(r)) == r
    assert ImageReference.parse(str(r), default_tag=False) == r
    assert ImageReference.parse("docker://" + str(r)) == r


def _parses_or_raises_reference_error(text: str) -> None:
    try:
        r = ImageReference.parse(text)
    except oci_reference.ImageReferenceError:
        return
    assert ImageReference.parse(str(r)) == r
    assert str(ImageReference.parse(str(r))) == str(r)


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_reference_error(text: str) -> None:
    _parses_or_raises_reference_error(text)


@given(st.text("aB1/:.@-_[]", max_size=30))
def test_dense_grammar_text(text: str) -> None:
    _parses_or_raises_reference_error(text)


def test_round_trip_without_tag() -> None:
    # parse(str(r)) == r needs a tag or digest (else `latest` is added); default_tag=False round-trips all.
    r = ImageReference.parse("quay.io/x", default_tag=False)
    assert ImageReference.parse(str(r), default_tag=False) == r
    assert ImageReference.parse(str(r)).tag == "latest"
