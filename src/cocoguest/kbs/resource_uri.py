"""KBS resource URIs: ``kbs://[host[:port]]/<repo>/<type>/<tag>[?query]`` (kbs-protocol.md §10).

Grammar accepted (stricter than the Rust ``resource_uri`` crate, which takes anything ``url`` parses):

* scheme ``kbs`` or its explicit alias ``kbs+resource`` (ASCII case-insensitive); the canonical form is ``kbs``.
  Other ``kbs+<plugin>`` schemes address KBS plugins with free-form paths and are not resources: refused.
* an optional authority ``host[:port]``: a DNS name or IPv4 address (labels ``[A-Za-z0-9-]``, no leading or
  trailing ``-``), or a bracketed IPv6 address; port 0-65535. No user info. Host and port are informational:
  the KBS URL comes from configuration (kbs-protocol.md §10) and the offline provider ignores them.
* exactly three path segments, each matching the KBS resource naming rule
  ``[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*`` (kbs-protocol.md §4), anchored at both ends here (trustee's check is
  prefix-only); so ``.``, ``..``, empty segments and percent-encoding never appear.
* an optional non-empty query of RFC 3986 query characters; no fragment.

Invariants:
    * A :class:`ResourceUri` is always valid: the constructor checks every field (``parse`` checks them first
      too, so that its messages quote the text as written).
    * ``str()`` is the canonical form and ``ResourceUri.parse(str(u)) == u``.
    * ``path`` is ``repo/type/tag``: the lookup key of the offline_fs files and the KBS resource path.
    * Pure data: no IO.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_CANONICAL_SCHEME: Final = "kbs"
_SCHEMES: Final = frozenset({"kbs", "kbs+resource"})
_PLUGIN_SCHEME: Final = re.compile(r"kbs\+([A-Za-z0-9._-]*)", re.ASCII)

# kbs-protocol.md §4 (trustee kbs/src/plugins/implementations/resource/backend.rs), anchored at both ends.
_SEGMENT: Final = re.compile(r"[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*", re.ASCII)
_HOST_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REG_NAME: Final = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*", re.ASCII)
_MAX_HOST_LENGTH: Final = 253
_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)
_MAX_PORT: Final = 65535
# RFC 3986 §3.4: query = *( pchar / "/" / "?" ), pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
_QUERY: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})+", re.ASCII)
_PRINTABLE_ASCII: Final = re.compile(r"[\x21-\x7e]*", re.ASCII)


class ResourceUriError(ConfigError):
    """A malformed KBS resource URI. Callers parsing a URI from untrusted data re-raise as ProtocolError."""


def _shown(text: str) -> str:
    """``text`` quoted for a one-line message, shortened if huge."""
    if len(text) > 80:
        return repr(text[:80] + "...")
    return repr(text)


@dataclass(frozen=True, slots=True)
class ResourceUri:
    """A KBS resource identifier ``kbs://[host[:port]]/repository/resource_type/tag[?query]``."""

    repository: str
    resource_type: str
    tag: str
    host: str | None = None
    """DNS name, IPv4 address or ``[IPv6]`` (brackets kept); ``None`` for ``kbs:///...``."""
    port: int | None = None
    query: str | None = None
    """Without the ``?``; never empty."""

    def __post_init__(self) -> None:
        """Check every field.

        Raises:
            ResourceUriError: a field breaks the grammar of the module docstring.
        """
        _check_fields(
            self.repository, self.resource_type, self.tag, self.host, self.port, self.query, self._unchecked_str()
        )

    @classmethod
    def parse(cls, text: str, *, limits: Limits = DEFAULT_LIMITS) -> ResourceUri:
        """Parse ``kbs://[host[:port]]/repo/type/tag[?query]`` (also ``kbs:///repo/type/tag``).

        Args:
            text: the URI as written in a policy, config or annotation.
            limits: ``max_resource_uri_length`` (checked before any pattern runs).

        Returns:
            The validated URI.

        Raises:
            ResourceUriError: ``text`` is not a resource URI of the grammar in the module docstring.
        """
        if len(text) > limits.max_resource_uri_length:
            msg = (
                f"invalid resource URI {_shown(text)}: longer than {limits.max_resource_uri_length} characters "
                "(max_resource_uri_length)"
            )
            raise ResourceUriError(msg)
        if not _PRINTABLE_ASCII.fullmatch(text):
            msg = f"invalid resource URI {_shown(text)}: only printable ASCII without spaces is allowed"
            raise ResourceUriError(msg)
        scheme, sep, rest = text.partition("://")
        if not sep:
            msg = f"invalid resource URI {_shown(text)}: expected kbs://[host[:port]]/<repo>/<type>/<tag>"
            raise ResourceUriError(msg)
        scheme = scheme.lower()
        if scheme not in _SCHEMES:
            plugin = _PLUGIN_SCHEME.fullmatch(scheme)
            if plugin is None:
                msg = f"invalid resource URI {_shown(text)}: scheme must be kbs, not {_shown(scheme)}"
            elif not plugin.group(1):
                msg = f"invalid resource URI {_shown(text)}: scheme kbs+ needs a plugin name"
            else:
                msg = (
                    f"invalid resource URI {_shown(text)}: KBS plugin {plugin.group(1)!r} is not a resource "
                    "(only kbs:// and kbs+resource:// name resources)"
                )
            raise ResourceUriError(msg)
        if "#" in rest:
            msg = f"invalid resource URI {_shown(text)}: a fragment is not allowed"
            raise ResourceUriError(msg)
        rest, qmark, query = rest.partition("?")
        if qmark and not query:
            msg = f"invalid resource URI {_shown(text)}: empty query"
            raise ResourceUriError(msg)
        authority, slash, path = rest.partition("/")
        if not slash:
            msg = f"invalid resource URI {_shown(text)}: missing path <repo>/<type>/<tag>"
            raise ResourceUriError(msg)
        host, port = _split_authority(authority, text)
        segments = path.split("/")
        if len(segments) != 3:
            msg = (
                f"invalid resource URI {_shown(text)}: expected 3 path segments <repo>/<type>/<tag>, "
                f"got {len(segments)}"
            )
            raise ResourceUriError(msg)
        # Check with the text as written, so that messages name what the user wrote, not the canonical form.
        query_or_none = query if qmark else None
        _check_fields(segments[0], segments[1], segments[2], host, port, query_or_none, text)
        return cls(
            repository=segments[0],
            resource_type=segments[1],
            tag=segments[2],
            host=host,
            port=port,
            query=query_or_none,
        )

    @property
    def path(self) -> str:
        """``repo/type/tag``: the KBS resource path and the offline_fs lookup key."""
        return f"{self.repository}/{self.resource_type}/{self.tag}"

    def __str__(self) -> str:
        """The canonical form, ``kbs://[host[:port]]/repo/type/tag[?query]``."""
        return self._unchecked_str()

    def _unchecked_str(self) -> str:
        authority = self.host or ""
        if self.port is not None:
            authority += f":{self.port}"
        text = f"{_CANONICAL_SCHEME}://{authority}/{self.path}"
        if self.query is not None:
            text += f"?{self.query}"
        return text


def _check_fields(
    repository: str,
    resource_type: str,
    tag: str,
    host: str | None,
    port: int | None,
    query: str | None,
    text: str,
) -> None:
    """Raise unless the fields form a valid URI; messages quote ``text``."""
    for name, segment in (("repository", repository), ("type", resource_type), ("tag", tag)):
        # SECURITY: whole-segment match: no '/', '..', '%' or empty segment can reach a KBS path or a file name.
        if not _SEGMENT.fullmatch(segment):
            msg = (
                f"invalid resource URI {_shown(text)}: {name} segment {_shown(segment)} "
                "must match [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*"
            )
            raise ResourceUriError(msg)
    if host is not None:
        _check_host(host, text)
    if port is not None:
        if host is None:
            msg = f"invalid resource URI {_shown(text)}: a port needs a host"
            raise ResourceUriError(msg)
        if isinstance(port, bool) or not 0 <= port <= _MAX_PORT:
            msg = f"invalid resource URI {_shown(text)}: port {port!r} is out of range"
            raise ResourceUriError(msg)
    if query is not None and not _QUERY.fullmatch(query):
        msg = f"invalid resource URI {_shown(text)}: malformed query {_shown(query)}"
        raise ResourceUriError(msg)


def _split_authority(authority: str, text: str) -> tuple[str | None, int | None]:
    """Split ``host[:port]`` (``[v6][:port]``); an empty authority is ``(None, None)``."""
    if not authority:
        return None, None
    if "@" in authority:
        msg = f"invalid resource URI {_shown(text)}: user information is not allowed"
        raise ResourceUriError(msg)
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            msg = f"invalid resource URI {_shown(text)}: unterminated IPv6 address"
            raise ResourceUriError(msg)
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            msg = f"invalid resource URI {_shown(text)}: unexpected {after!r} after the IPv6 address"
            raise ResourceUriError(msg)
        port_text: str | None = after[1:] if after else None
    else:
        host, colon, port_part = authority.partition(":")
        port_text = port_part if colon else None
    if not host:
        msg = f"invalid resource URI {_shown(text)}: a port needs a host"
        raise ResourceUriError(msg)
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or int(port_text) > _MAX_PORT:
        msg = f"invalid resource URI {_shown(text)}: bad port {port_text!r}"
        raise ResourceUriError(msg)
    return host, int(port_text)


def _check_host(host: str, text: str) -> None:
    """Raise unless ``host`` is a DNS name, an IPv4 address or a bracketed IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        if "%" in host:  # ipaddress accepts zone ids; RFC 6874 would need %25 encoding: refuse both
            msg = f"invalid resource URI {_shown(text)}: IPv6 zone ids are not allowed"
            raise ResourceUriError(msg)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as e:
            msg = f"invalid resource URI {_shown(text)}: bad IPv6 address {host!r}"
            raise ResourceUriError(msg) from e
        return
    if len(host) > _MAX_HOST_LENGTH or not _REG_NAME.fullmatch(host):
        msg = f"invalid resource URI {_shown(text)}: bad host {_shown(host)}"
        raise ResourceUriError(msg)
