"""``signedIdentity`` rules of containers-policy.json and the docker reference grammar they compare with.

Semantics follow containers/image ``signature/policy_reference_match.go`` and its vendored ``docker/reference``
(``ParseNormalizedNamed``): a reference is normalised to ``docker.io/library/...`` when it has no host part; the
first path component is a host only if it contains ``.`` or ``:`` or is ``localhost`` (unlike newer
distribution/reference, an upper-case first component is NOT a host there, so ``UPPER/x`` is invalid).

Invariants:
    * Matching never raises: an unparsable reference (on either side) simply does not match.
    * A rule never accepts a name-only (no tag, no digest) signature reference except where containers/image does
      (``matchRepository``/``exactRepository`` compare names only).
    * Pure functions, no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_DOMAIN: Final = "docker.io"
_LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"
_OFFICIAL_REPO_PREFIX: Final = "library/"
NAME_TOTAL_LENGTH_MAX: Final = 255
"""distribution/reference's limit on ``host/path``."""

# The vendored docker/reference grammar. Its separator ``(?:[._]|__|[-]*)`` may be empty, which makes a name
# component the same language as the unambiguous form below (alnum runs split by ".", "_", "__" or "-+").
_ALNUM: Final = r"[a-z0-9]+"
_NAME_COMPONENT: Final = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN: Final = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG: Final = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Go's \w is ASCII-only
_DIGEST: Final = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME: Final = rf"(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"
_REFERENCE_RE: Final = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
_ANCHORED_NAME_RE: Final = re.compile(rf"(?:({_DOMAIN})/)?({_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)")
_DOMAIN_RE: Final = re.compile(_DOMAIN)
_DOMAIN_PREFIX_RE: Final = re.compile(rf"{_DOMAIN}/")
_NAME_RE: Final = re.compile(_NAME)
_IDENTIFIER_RE: Final = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTH: Final = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE: Final = re.compile(r"[a-f0-9]+")


class ReferenceFormatError(ValueError):
    """A string is not a valid docker reference under containers/image's rules."""


@dataclass(frozen=True, slots=True)
class DockerReference:
    """A parsed, normalised docker reference (``reference.Named`` with optional tag and digest)."""

    name: str
    """``host/path`` (``Name()``), e.g. ``docker.io/library/busybox``."""
    tag: str | None = None
    digest: str | None = None

    @property
    def is_name_only(self) -> bool:
        """Neither tag nor digest (``reference.IsNameOnly``)."""
        return self.tag is None and self.digest is None

    @property
    def domain(self) -> str:
        """The host part (``reference.Domain``); ``""`` if the name has none."""
        match = _ANCHORED_NAME_RE.fullmatch(self.name)
        return (match.group(1) or "") if match else ""

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _split_docker_domain(name: str) -> tuple[str, str]:
    slash = name.find("/")
    if slash == -1 or (not any(c in ".:" for c in name[:slash]) and name[:slash] != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:slash], name[slash + 1 :]
    if domain == _LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = _OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _validate_digest(text: str) -> None:
    algorithm, _, encoded = text.partition(":")
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        msg = f"unsupported digest algorithm {algorithm!r}"
        raise ReferenceFormatError(msg)
    if len(encoded) != expected or not _LOWER_HEX_RE.fullmatch(encoded):
        msg = f"invalid {algorithm} digest {encoded!r}"
        raise ReferenceFormatError(msg)


def parse_normalized_named(text: str, *, limits: Limits = DEFAULT_LIMITS) -> DockerReference:
    """Parse like containers/image ``reference.ParseNormalizedNamed``.

    SECURITY: strings longer than ``limits.max_signed_reference_length`` are refused before any regular
    expression runs (Python's regexes backtrack; Go's do not).

    Raises:
        ReferenceFormatError: not a valid reference.
    """
    if len(text) > limits.max_signed_reference_length:
        msg = f"reference longer than {limits.max_signed_reference_length} characters (max_signed_reference_length)"
        raise ReferenceFormatError(msg)
    if _IDENTIFIER_RE.fullmatch(text):
        msg = f"invalid repository name {text!r}: cannot specify 64-byte hexadecimal strings"
        raise ReferenceFormatError(msg)
    domain, remainder = _split_docker_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        msg = f"invalid reference {text!r}: repository name must be lowercase"
        raise ReferenceFormatError(msg)
    match = _REFERENCE_RE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        msg = f"invalid reference format {text!r}"
        raise ReferenceFormatError(msg)
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        msg = f"repository name of {text!r} longer than {NAME_TOTAL_LENGTH_MAX} characters"
        raise ReferenceFormatError(msg)
    if digest is not None:
        _validate_digest(digest)
    return DockerReference(name, tag, digest)


def parse_named(text: str, *, limits: Limits = DEFAULT_LIMITS) -> DockerReference:
    """Parse a reference that must already be in canonical (fully qualified) form (``reference.ParseNamed``).

    Raises:
        ReferenceFormatError: invalid, or not canonical (e.g. ``busybox`` instead of ``docker.io/library/busybox``).
    """
    ref = parse_normalized_named(text, limits=limits)
    if str(ref) != text:
        msg = f"reference {text!r} is not in canonical form ({ref})"
        raise ReferenceFormatError(msg)
    return ref


def _parse_or_none(text: str, limits: Limits) -> DockerReference | None:
    try:
        return parse_normalized_named(text, limits=limits)
    except ReferenceFormatError:
        return None


def _match_repo_digest_or_exact(intended: DockerReference, signature: DockerReference) -> bool:
    if signature.is_name_only:
        return False
    if intended.tag is not None:  # includes tag+digest: both must match exactly
        return str(signature) == str(intended)
    if intended.digest is not None:
        # The signature's digest is checked against the manifest by the evaluator; only the repository matters.
        return signature.name == intended.name
    return False


@dataclass(frozen=True, slots=True)
class MatchExact:
    """The signature must name exactly the image's reference (both must carry a tag or digest)."""

    type_name: ClassVar[str] = "matchExact"

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable for ``image``."""
        signature = _parse_or_none(signed_reference, limits)
        if image is None or signature is None or image.is_name_only or signature.is_name_only:
            return False
        return str(signature) == str(image)

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Nothing to check."""


@dataclass(frozen=True, slots=True)
class MatchRepoDigestOrExact:
    """Exact match for tagged images; same repository for images pulled by digest. The default."""

    type_name: ClassVar[str] = "matchRepoDigestOrExact"

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable for ``image``."""
        signature = _parse_or_none(signed_reference, limits)
        if image is None or signature is None:
            return False
        return _match_repo_digest_or_exact(image, signature)

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Nothing to check."""


@dataclass(frozen=True, slots=True)
class MatchRepository:
    """The signature must name the image's repository (tags and digests ignored)."""

    type_name: ClassVar[str] = "matchRepository"

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable for ``image``."""
        signature = _parse_or_none(signed_reference, limits)
        if image is None or signature is None:
            return False
        return signature.name == image.name

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Nothing to check."""


@dataclass(frozen=True, slots=True)
class ExactReference:
    """The signature must name exactly ``docker_reference`` (which must carry a tag or digest)."""

    docker_reference: str
    type_name: ClassVar[str] = "exactReference"

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable (the image's own name is irrelevant)."""
        intended = _parse_or_none(self.docker_reference, limits)
        signature = _parse_or_none(signed_reference, limits)
        if intended is None or signature is None or intended.is_name_only or signature.is_name_only:
            return False
        return str(signature) == str(intended)

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Raises ReferenceFormatError unless ``docker_reference`` is a reference with a tag or digest."""
        ref = parse_normalized_named(self.docker_reference, limits=limits)
        if ref.is_name_only:
            msg = f"dockerReference {self.docker_reference!r} contains neither a tag nor a digest"
            raise ReferenceFormatError(msg)


@dataclass(frozen=True, slots=True)
class ExactRepository:
    """The signature must name the repository ``docker_repository``."""

    docker_repository: str
    type_name: ClassVar[str] = "exactRepository"

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable (the image's own name is irrelevant)."""
        intended = _parse_or_none(self.docker_repository, limits)
        signature = _parse_or_none(signed_reference, limits)
        if intended is None or signature is None:
            return False
        return signature.name == intended.name

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Raises ReferenceFormatError unless ``docker_repository`` parses as a reference."""
        parse_normalized_named(self.docker_repository, limits=limits)


def validate_remap_prefix(prefix: str, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check a ``remapIdentity`` prefix like containers/image ``validateIdentityRemappingPrefix``.

    Accepts a bare host (``example.com``, ``example.com:80``, ``localhost``) or ``host/path``; like containers/image
    it does not reject every invalid value (``shortname`` passes and simply never matches).

    Raises:
        ReferenceFormatError: the prefix is invalid.
    """
    if len(prefix) <= limits.max_signed_reference_length and (
        _DOMAIN_RE.fullmatch(prefix) or (_NAME_RE.fullmatch(prefix) and _DOMAIN_PREFIX_RE.match(prefix))
    ):
        return
    msg = f"prefix {prefix!r} is not valid"
    raise ReferenceFormatError(msg)


@dataclass(frozen=True, slots=True)
class RemapIdentity:
    """Like ``matchRepoDigestOrExact``, after rewriting the image's ``prefix`` to ``signed_prefix``."""

    prefix: str
    signed_prefix: str
    type_name: ClassVar[str] = "remapIdentity"

    def ref_matches_prefix(self, ref: DockerReference) -> bool:
        """Whether ``ref``'s name is ``prefix`` or lies below it (``/``-separated)."""
        name = ref.name
        if len(name) < len(self.prefix):
            return False
        if len(name) == len(self.prefix):
            return name == self.prefix
        return name.startswith(self.prefix) and name[len(self.prefix)] == "/"

    def remap(self, ref: DockerReference, *, limits: Limits = DEFAULT_LIMITS) -> DockerReference:
        """``ref`` with ``prefix`` replaced by ``signed_prefix``, or ``ref`` unchanged if it does not match.

        Raises:
            ReferenceFormatError: the rewritten reference is invalid or not canonical.
        """
        if not self.ref_matches_prefix(ref):
            return ref
        rewritten = str(ref).replace(self.prefix, self.signed_prefix, 1)
        return parse_named(rewritten, limits=limits)

    def matches(self, image: DockerReference | None, signed_reference: str, *, limits: Limits = DEFAULT_LIMITS) -> bool:
        """Whether a signature claiming ``signed_reference`` is acceptable for ``image``."""
        signature = _parse_or_none(signed_reference, limits)
        if image is None or signature is None:
            return False
        try:
            intended = self.remap(image, limits=limits)
        except ReferenceFormatError:
            return False
        return _match_repo_digest_or_exact(intended, signature)

    def validate(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Raises ReferenceFormatError if either prefix is invalid."""
        validate_remap_prefix(self.prefix, limits=limits)
        validate_remap_prefix(self.signed_prefix, limits=limits)


SignedIdentity = (
    MatchExact | MatchRepoDigestOrExact | MatchRepository | ExactReference | ExactRepository | RemapIdentity
)
"""Any ``signedIdentity`` rule."""


def describe_identity(rule: SignedIdentity) -> str:
    """A short human description for messages, e.g. ``exactRepository(docker.io/library/busybox)``."""
    match rule:
        case ExactReference(docker_reference=ref):
            return f"exactReference({ref})"
        case ExactRepository(docker_repository=repo):
            return f"exactRepository({repo})"
        case RemapIdentity(prefix=prefix, signed_prefix=signed):
            return f"remapIdentity({prefix} -> {signed})"
        case _:
            return rule.type_name
