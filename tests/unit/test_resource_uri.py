"""KBS resource URIs (kbs/resource_uri.py) against kbs-protocol.md §4 and §10.

Valid cases include the Rust ``resource_uri`` crate's own test URIs for the ``resource`` plugin; invalid cases
cover the grammar edges (segments, schemes, hosts, ports, queries) that the stricter parser refuses.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoguest.errors import ConfigError
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.limits import DEFAULT_LIMITS

# --- valid ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields", "canonical"),
    [
        ("kbs:///default/key/key_id1", ("default", "key", "key_id1", None, None, None), None),
        ("kbs:///alice/cosign-key/213", ("alice", "cosign-key", "213", None, None, None), None),
        (
            "kbs:///repo/type/tag?param1=value1&param2=value2",
            ("repo", "type", "tag", None, None, "param1=value1&param2=value2"),
            None,
        ),
        ("kbs://example.com:8080/repo/type/tag", ("repo", "type", "tag", "example.com", 8080, None), None),
        ("kbs://1.2.3.4/a/b/c", ("a", "b", "c", "1.2.3.4", None, None), None),
        ("kbs://kbs-service/a/b/c", ("a", "b", "c", "kbs-service", None, None), None),
        ("kbs://[::1]:50000/a/b/c", ("a", "b", "c", "[::1]", 50000, None), None),
        ("kbs://[2001:db8::7]/a/b/c", ("a", "b", "c", "[2001:db8::7]", None, None), None),
        ("kbs://h:0/a/b/c", ("a", "b", "c", "h", 0, None), None),
        ("kbs://h:65535/a/b/c", ("a", "b", "c", "h", 65535, None), None),
        ("kbs:///a/b/c?x=%2F", ("a", "b", "c", None, None, "x=%2F"), None),
        ("kbs:///my_repo/type.v2/tag-1.0", ("my_repo", "type.v2", "tag-1.0", None, None, None), None),
        ("kbs:///a/b/c..", ("a", "b", "c..", None, None, None), None),  # dots after the first char are fine
        ("kbs:///-/_/0", ("-", "_", "0", None, None, None), None),
        # explicit plugin alias and scheme case are normalised (kbs-protocol.md §10)
        ("kbs+resource:///repo/type/tag", ("repo", "type", "tag", None, None, None), "kbs:///repo/type/tag"),
        ("KBS:///repo/type/tag", ("repo", "type", "tag", None, None, None), "kbs:///repo/type/tag"),
        ("kbs://h:080/a/b/c", ("a", "b", "c", "h", 80, None), "kbs://h:80/a/b/c"),
    ],
)
def test_parse_valid(
    text: str, fields: tuple[str, str, str, str | None, int | None, str | None], canonical: str | None
) -> None:
    uri = ResourceUri.parse(text)
    assert (uri.repository, uri.resource_type, uri.tag, uri.host, uri.port, uri.query) == fields
    assert uri.path == "/".join(fields[:3])
    assert str(uri) == (canonical or text)
    assert ResourceUri.parse(str(uri)) == uri


def test_host_is_part_of_identity_but_not_of_path() -> None:
    a = ResourceUri.parse("kbs:///default/key/1")
    b = ResourceUri.parse("kbs://kbs.example:8080/default/key/1")
    assert a != b
    assert a.path == b.path == "default/key/1"


# --- invalid ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # segments
        ("kbs:///default/key", "expected 3 path segments"),
        ("kbs:///default/key/1/extra", "expected 3 path segments"),
        ("kbs:///", "expected 3 path segments"),
        ("kbs:///a//c", "type segment ''"),
        ("kbs:////b/c", "repository segment ''"),
        ("kbs:///a/b/", "tag segment ''"),
        ("kbs:///../b/c", "repository segment '..'"),
        ("kbs:///a/../c", "type segment '..'"),
        ("kbs:///a/b/..", "tag segment '..'"),
        ("kbs:///a/b/.", "tag segment '.'"),
        ("kbs:///a/b/.hidden", "tag segment '.hidden'"),
        ("kbs:///a/b/c%2F", "tag segment"),
        ("kbs:///a/b/c:d", "tag segment"),
        ("kbs:///a/b/t~g", "tag segment"),
        ("kbs:///a/b/c\u00e9", "printable ASCII"),
        ("kbs:///a/b/c d", "printable ASCII"),
        ("kbs:///a/b/c\n", "printable ASCII"),
        ("kbs://host", "missing path"),
        # schemes
        ("http:///repo/type/tag", "scheme must be kbs"),
        ("file:///repo/type/tag", "scheme must be kbs"),
        ("kbs+:///repo/type/tag", "needs a plugin name"),
        ("kbs+pkcs11:///repo/type/tag", "plugin 'pkcs11' is not a resource"),
        ("kbs:/repo/type/tag", "expected kbs://"),
        ("kbs:repo/type/tag", "expected kbs://"),
        ("/repo/type/tag", "expected kbs://"),
        ("repo/type/tag", "expected kbs://"),
        ("", "expected kbs://"),
        # authority
        ("kbs://user@host/a/b/c", "user information"),
        ("kbs://:8080/a/b/c", "a port needs a host"),
        ("kbs://host:/a/b/c", "bad port ''"),
        ("kbs://host:65536/a/b/c", "bad port"),
        ("kbs://host:123456/a/b/c", "bad port"),
        ("kbs://host:8a/a/b/c", "bad port"),
        ("kbs://host:1:2/a/b/c", "bad port"),
        ("kbs://-host/a/b/c", "bad host"),
        ("kbs://host-/a/b/c", "bad host"),
        ("kbs://ho_st/a/b/c", "bad host"),
        ("kbs://a..b/a/b/c", "bad host"),
        ("kbs://[::1/a/b/c", "unterminated IPv6"),
        ("kbs://[::1]x/a/b/c", "after the IPv6"),
        ("kbs://[nothex]/a/b/c", "bad IPv6"),
        ("kbs://[1.2.3.4]/a/b/c", "bad IPv6"),
        ("kbs://[fe80::1%eth0]/a/b/c", "zone ids"),
        # query and fragment
        ("kbs:///a/b/c?", "empty query"),
        ("kbs:///a/b/c#frag", "fragment"),
        ("kbs:///a/b/c?x=1#frag", "fragment"),
        ("kbs:///a/b/c?x=%zz", "malformed query"),
        ("kbs:///a/b/c?x=<1>", "malformed query"),
    ],
)
def test_parse_invalid(text: str, why: str) -> None:
    with pytest.raises(ResourceUriError, match="invalid resource URI") as info:
        ResourceUri.parse(text)
    assert why in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_too_long_is_refused_and_the_message_is_short() -> None:
    text = "kbs:///a/b/" + "t" * DEFAULT_LIMITS.max_resource_uri_length
    with pytest.raises(ResourceUriError, match="longer than") as info:
        ResourceUri.parse(text)
    assert len(str(info.value)) < 300


def test_longest_allowed_parses() -> None:
    prefix = "kbs:///a/b/"
    text = prefix + "t" * (DEFAULT_LIMITS.max_resource_uri_length - len(prefix))
    assert ResourceUri.parse(text).tag.startswith("ttt")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repository": "a", "resource_type": "b", "tag": ".."},
        {"repository": "a/b", "resource_type": "b", "tag": "c"},
        {"repository": "a", "resource_type": "b", "tag": "c", "port": 80},
        {"repository": "a", "resource_type": "b", "tag": "c", "host": "h", "port": 70000},
        {"repository": "a", "resource_type": "b", "tag": "c", "host": "h", "port": -1},
        {"repository": "a", "resource_type": "b", "tag": "c", "host": "bad host"},
        {"repository": "a", "resource_type": "b", "tag": "c", "query": ""},
        {"repository": "a", "resource_type": "b", "tag": "c", "query": "a#b"},
    ],
)
def test_constructor_validates(kwargs: dict[str, str | int]) -> None:
    with pytest.raises(ResourceUriError):
        ResourceUri(**kwargs)  # type: ignore[arg-type]


# --- round trips (hypothesis) -----------------------------------------------------------------------------------

_SEG_FIRST = "abcxyzABCXYZ0189_-"
_SEG_REST = _SEG_FIRST + "."
_segments = st.builds(
    lambda first, rest: first + rest, st.text(_SEG_FIRST, min_size=1, max_size=8), st.text(_SEG_REST, max_size=8)
)
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True)
_hosts = st.one_of(
    st.lists(_label, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_queries = st.from_regex(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2}){1,20}", fullmatch=True)


@st.composite
def _uris(draw: st.DrawFn) -> ResourceUri:
    host = draw(st.none() | _hosts)
    port = draw(st.none() | st.integers(0, 65535)) if host is not None else None
    return ResourceUri(
        repository=draw(_segments),
        resource_type=draw(_segments),
        tag=draw(_segments),
        host=host,
        port=port,
        query=draw(st.none() | _queries),
    )


@given(_uris())
def test_round_trip(uri: ResourceUri) -> None:
    text = str(uri)
    assert ResourceUri.parse(text) == uri
    assert str(ResourceUri.parse(text)) == text
    assert text.startswith("kbs://")
    assert text.split("?", 1)[0].endswith("/" + uri.path)


@given(st.text("kbs:/+a.?#[]@%1-_", max_size=30))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        uri = ResourceUri.parse(text)
    except ResourceUriError:
        return
    assert ResourceUri.parse(str(uri)) == uri
    assert ".." not in uri.path.split("/")
