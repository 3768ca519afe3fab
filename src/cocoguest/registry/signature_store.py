"""Where simple-signing signatures are read from and written to: the registries.d lookaside and X-R-S-S.

Reading follows containers/image (``docker/docker_image_src.go``, ``GetSignaturesWithFormat``):

* if the registry's ``/v2/`` answer carried ``X-Registry-Supports-Signatures: 1``, signatures come from
  ``GET /extensions/v2/<repository>/signatures/<digest>`` (entries with ``schemaVersion`` 2 and type
  ``atomic``; ``content`` is base64) and the lookaside is not consulted;
* otherwise from the lookaside: ``<base>/<repository>@<algorithm>=<hex>/signature-<n>`` for n = 1, 2, ...
  until one is missing (``file://``: no such file; ``http(s)://``: 404). ``<base>`` is the registries.d
  ``lookaside``/``sigstore`` URL for the image, else the built-in default (``file:///var/lib/containers/
  sigstore`` as containers/image for root; the caller may pass ``None`` to have no default).

Invariants:
    * Everything returned is UNTRUSTED bytes; nothing here verifies.
    * At most ``Limits.max_lookaside_signatures`` signatures (containers/image ``maxLookasideSignatures``) of
      at most ``Limits.max_signature_bytes`` each (``iolimits.MaxSignatureBodySize``) are read; more
      signatures is an error (as containers/image), a larger one too. The X-R-S-S list is capped at
      ``Limits.max_signature_list_bytes`` (``iolimits.MaxSignatureListBodySize``). The limits are the
      caller's; an ``http(s)://`` lookaside is read with the registry timeouts and redirect cap of them.
    * A missing signature ends the list; any other failure (unreadable file, unexpected HTTP status) raises,
      so a flaky store cannot silently hide a signature.
    * The lookaside path is built from a validated :class:`ImageReference` repository and a validated
      :class:`Digest`, so it cannot leave the base directory.
    * :func:`write_lookaside_signature` never overwrites: it claims the next free ``signature-<n>`` with
      an atomic hard link, so concurrent writers and readers never see a partial file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from cocoguest.digest import Digest
from cocoguest.errors import ConfigError, HttpStatusError, ProtocolError, TransportError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.registry.docker import DockerSource, read_capped
from cocoguest.registry.http import map_http_error

if TYPE_CHECKING:
    from cocoguest.oci.reference import ImageReference
    from cocoguest.registry.config.registries_d import RegistriesD

_logger = logging.getLogger(__name__)

DEFAULT_LOOKASIDE: Final = "file:///var/lib/containers/sigstore"
"""containers/image's built-in lookaside for root when registries.d configures none."""

EXTENSION_SIGNATURE_SCHEMA_VERSION: Final = 2
EXTENSION_SIGNATURE_TYPE_ATOMIC: Final = "atomic"


class SignatureExtensionClient(Protocol):
    """What reading X-Registry-Supports-Signatures needs from the registry client (:class:`DockerSource`)."""

    @property
    def repository(self) -> str:
        """The repository path on the registry actually contacted (a mirror's, if any)."""
        ...

    def supports_signatures_extension(self) -> bool:
        """Whether the registry's ``/v2/`` answer carried ``X-Registry-Supports-Signatures: 1``."""
        ...

    def get_registry_path(self, path: str, *, max_bytes: int, what: str) -> bytes:
        """``GET`` an absolute path on the registry with the session's credentials; the 200 body.

        Raises:
            HttpStatusError: any status but 200.
            ProtocolError: the body exceeds ``max_bytes``.
            TransportError: the registry cannot be reached.
        """
        ...


def lookaside_http_client(limits: Limits) -> httpx.Client:
    """A client for an ``http(s)://`` lookaside: the registry connect/read timeouts and redirect cap of ``limits``."""
    timeout = httpx.Timeout(limits.registry_read_timeout_s, connect=limits.registry_connect_timeout_s)
    return httpx.Client(
        trust_env=False, timeout=timeout, follow_redirects=True, max_redirects=limits.registry_max_redirects
    )


def lookaside_signature_url(base: str, repository: str, digest: Digest, index: int) -> str:
    """``<base>/<repository>@<algorithm>=<hex>/signature-<index>`` (index from 1), as containers/image."""
    return f"{base}/{repository}@{digest.algorithm}={digest.hex}/signature-{index}"


def _file_path(url: str, what: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        msg = f"{what}: file URL {url!r} names a host"
        raise ConfigError(msg)
    return Path(unquote(parts.path))


class LookasideSignatureSource:
    """Simple-signing signatures of one image, from X-R-S-S or the registries.d lookaside."""

    def __init__(
        self,
        reference: ImageReference,
        registries_d: RegistriesD,
        *,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        registry_source: DockerSource | SignatureExtensionClient | None = None,
        default_lookaside: str | None = DEFAULT_LOOKASIDE,
        limits: Limits = DEFAULT_LIMITS,
        max_signatures: int | None = None,
        max_signature_bytes: int | None = None,
    ) -> None:
        """Create a source; nothing is read until :meth:`simple_signatures`.

        Args:
            reference: The image as the user named it (the lookaside is chosen and laid out by it).
            registries_d: The lookaside configuration.
            http_client_factory: Makes the client for ``http(s)://`` lookasides (TLS roots, proxies); ``None``:
                :func:`lookaside_http_client` of ``limits``.
            registry_source: The registry the image is pulled from, to use X-R-S-S when it advertises it;
                ``None`` to use the lookaside only.
            default_lookaside: The lookaside when registries.d configures none; ``None``: then no signatures.
            limits: The caller's limits (signature count and sizes, the X-R-S-S list, HTTP timeouts).
            max_signatures: Signatures read per manifest at most (``None``: ``limits.max_lookaside_signatures``).
            max_signature_bytes: Size of one signature at most (``None``: ``limits.max_signature_bytes``).
        """
        self.reference = reference
        self._registries_d = registries_d
        self._http_client_factory = http_client_factory or (lambda: lookaside_http_client(limits))
        self._limits = limits
        self._extension: SignatureExtensionClient | None = registry_source
        self._default_lookaside = default_lookaside
        self._max_signatures = limits.max_lookaside_signatures if max_signatures is None else max_signatures
        self._max_signature_bytes = limits.max_signature_bytes if max_signature_bytes is None else max_signature_bytes

    def describe(self) -> str:
        """``docker://host/repo:tag`` for messages."""
        return f"docker://{self.reference}"

    def lookaside_base(self) -> str | None:
        """The lookaside top-level URL used for this image, or ``None``."""
        return self._registries_d.lookaside_for(self.reference) or self._default_lookaside

    def simple_signatures(self, manifest_digest: Digest) -> list[bytes]:
        """The untrusted signature blobs stored for ``manifest_digest`` (possibly none).

        Raises:
            TransportError, HttpStatusError: the store cannot be read.
            ProtocolError: too many or too large signatures, or a malformed X-R-S-S answer.
            ConfigError: the lookaside URL is unusable (scheme, host).
        """
        if self._extension is not None and self._extension.supports_signatures_extension():
            return self._from_extension(manifest_digest)
        base = self.lookaside_base()
        if base is None:
            _logger.debug("%s: no lookaside configured; no simple signatures", self.describe())
            return []
        return self._from_lookaside(base, manifest_digest)

    # --- X-Registry-Supports-Signatures -------------------------------------------------------------

    def _from_extension(self, digest: Digest) -> list[bytes]:
        assert self._extension is not None  # noqa: S101 — checked by the caller
        what = f"{self.describe()}: signatures of {digest} (X-Registry-Supports-Signatures)"
        path = f"/extensions/v2/{self._extension.repository}/signatures/{digest}"
        body = self._extension.get_registry_path(path, max_bytes=self._limits.max_signature_list_bytes, what=what)
        untrusted = loads(body, f"{what}: the signature list", limits=self._limits)
        entries = untrusted.get("signatures", []) if isinstance(untrusted, dict) else None
        if not isinstance(entries, list):
            msg = f"{what}: the signature list has no signatures array"
            raise ProtocolError(msg)
        signatures: list[bytes] = []
        for entry in entries:
            if not isinstance(entry, dict):
                msg = f"{what}: a signature list entry is not an object"
                raise ProtocolError(msg)
            version, kind = entry.get("schemaVersion"), entry.get("type")
            if version != EXTENSION_SIGNATURE_SCHEMA_VERSION or kind != EXTENSION_SIGNATURE_TYPE_ATOMIC:
                continue  # containers/image skips other versions and types
            content = entry.get("content")
            if content is None:
                signatures.append(b"")
                continue
            if not isinstance(content, str):
                msg = f"{what}: a signature's content is not a base64 string"
                raise ProtocolError(msg)
            try:
                signatures.append(base64.b64decode(content, validate=True))
            except (binascii.Error, ValueError) as e:
                msg = f"{what}: a signature's content is not valid base64"
                raise ProtocolError(msg) from e
        return signatures

    # --- lookaside ----------------------------------------------------------------------------------

    def _from_lookaside(self, base: str, digest: Digest) -> list[bytes]:
        scheme = urlsplit(base).scheme.lower()
        if scheme not in ("file", "http", "https"):
            msg = f"{self.describe()}: unsupported lookaside URL scheme in {base!r} (file, http or https)"
            raise ConfigError(msg)
        signatures: list[bytes] = []
        client: httpx.Client | None = None
        try:
            for index in range(1, self._max_signatures + 2):
                if index > self._max_signatures:
                    msg = (
                        f"{self.describe()}: lookaside {base} has more than {self._max_signatures} "
                        f"signatures for {digest}; assuming a server error"
                    )
                    raise ProtocolError(msg)
                url = lookaside_signature_url(base, self.reference.repository, digest, index)
                if scheme == "file":
                    signature = self._read_file(url)
                else:
                    if client is None:
                        client = self._http_client_factory()
                    signature = self._read_http(client, url)
                if signature is None:
                    break
                signatures.append(signature)
        finally:
            if client is not None:
                client.close()
        return signatures

    def _read_file(self, url: str) -> bytes | None:
        what = f"{self.describe()}: signature {url}"
        path = _file_path(url, what)
        try:
            with path.open("rb") as f:
                data = f.read(self._max_signature_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            msg = f"{what}: cannot read it ({e.strerror or e})"
            raise TransportError(msg) from e
        if len(data) > self._max_signature_bytes:
            msg = f"{what}: larger than {self._max_signature_bytes} bytes"
            raise ProtocolError(msg)
        return data

    def _read_http(self, client: httpx.Client, url: str) -> bytes | None:
        what = f"{self.describe()}: signature {url}"
        host = urlsplit(url).netloc
        try:
            with client.stream("GET", url) as response:
                status = response.status_code
                if status == httpx.codes.NOT_FOUND:
                    return None
                if status != httpx.codes.OK:
                    msg = f"{what}: lookaside answered {status} {response.reason_phrase}".rstrip()
                    raise HttpStatusError(msg, status)
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if content_type == "text/html":
                    # Not fatal (the lookaside spec sets no Content-Type); verification will reject HTML.
                    _logger.warning("%s: served as text/html, unexpected for a signature", what)
                return read_capped(response, self._max_signature_bytes, what, host)
        except httpx.HTTPError as e:
            raise map_http_error(e, what=what, host=host) from e


def write_lookaside_signature(
    base_url_file: str,
    reference: ImageReference,
    digest: Digest,
    signature: bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Path:
    """Store ``signature`` as the next free ``signature-<n>`` for ``digest`` in a ``file://`` lookaside.

    Args:
        base_url_file: The lookaside (staging) top-level URL, ``file://...``.
        reference: The image (its repository path names the directory).
        digest: The manifest digest the signature covers.
        signature: The signature blob.
        limits: ``max_lookaside_signatures`` caps the ``signature-<n>`` names tried.

    Returns:
        The path written.

    Raises:
        ConfigError: not a ``file://`` URL, or already ``limits.max_lookaside_signatures`` signatures.
        TransportError: the file cannot be written.
    """
    what = f"docker://{reference}: lookaside {base_url_file}"
    if urlsplit(base_url_file).scheme.lower() != "file":
        msg = f"{what}: signatures can only be written to a file:// lookaside"
        raise ConfigError(msg)
    first = _file_path(lookaside_signature_url(base_url_file, reference.repository, digest, 1), what)
    directory = first.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=".signature-", dir=directory)
    except OSError as e:
        msg = f"{what}: cannot create {directory} ({e.strerror or e})"
        raise TransportError(msg) from e
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # signatures are public; containers/image writes them 0644
            f.write(signature)
            f.flush()
            os.fsync(f.fileno())
        for index in range(1, limits.max_lookaside_signatures + 1):
            target = directory / f"signature-{index}"
            try:
                # An atomic claim: link() fails if the name exists, and readers never see a partial file.
                os.link(temp, target)
            except FileExistsError:
                continue
            return target
    except OSError as e:
        msg = f"{what}: cannot write a signature in {directory} ({e.strerror or e})"
        raise TransportError(msg) from e
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    msg = f"{what}: {directory} already holds {limits.max_lookaside_signatures} signatures (max_lookaside_signatures)"
    raise ConfigError(msg)
