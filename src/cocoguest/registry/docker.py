"""The ``docker://`` transport: the OCI distribution API v2 (pull and push) over HTTP(S).

:class:`DockerSource` reads manifests and streams blobs; :class:`DockerDestination` uploads blobs and
manifests. Both share :class:`_RegistrySession`, which finds the scheme (``/v2/`` ping), answers
authentication challenges (see :mod:`docker_auth`), follows redirects and retries.

Invariants:
    * Everything a registry returns is UNTRUSTED. Manifests are size-capped (Content-Length and while
      reading); a blob stream never yields more than ``desc.size + 1`` bytes, so the caller's
      :class:`~cocoguest.digest.VerifyingReader` sees an overlong blob without us buffering it. Digests are
      verified by the caller, never here.
    * SECURITY: ``Authorization`` is sent only to the registry's own origin (scheme, host, port). A redirect to
      any other origin (blob storage, CDN) is followed without credentials.
    * SECURITY: HTTPS with certificate verification is used unless the endpoint is explicitly insecure; then
      verification is off and plain HTTP is tried when the server does not speak TLS, with a warning each time.
      Loopback hosts get no special treatment.
    * An interrupted blob download resumes with ``Range: bytes=N-`` from the first byte not yet received;
      a server that ignores Range restarts the download only if no byte was handed to the caller yet.
    * Errors name the image (``docker://host/repo:tag``) and, for blobs, the digest.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, BinaryIO, Final, cast

import httpx

from cocoguest.digest import Digest
from cocoguest.errors import CocoError, HttpStatusError, ProtocolError, ResourceNotFoundError, TransportError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types
from cocoguest.oci.descriptor import Descriptor
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.auth import (
    Challenge,
    TokenAuthenticator,
    parse_www_authenticate,
    pick_challenge,
)
from cocoguest.registry.http import (
    RetryBudget,
    RetryPolicy,
    is_retryable_status,
    make_client,
    map_http_error,
    parse_retry_after,
    retry_call,
)
from cocoguest.registry.http_body import Deadline, read_body
from cocoguest.registry.http_deadline import DEADLINE_EXTENSION
from cocoguest.registry.types import Credentials, RegistryEndpoint

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_logger = logging.getLogger(__name__)

DOCKER_MANIFEST_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: Accept header of manifest requests: every type we handle, and schema1 so that it can be refused clearly.
MANIFEST_ACCEPT: Final = ", ".join(
    (
        media_types.OCI_MANIFEST,
        media_types.OCI_INDEX,
        media_types.DOCKER_MANIFEST,
        media_types.DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST_SCHEMA1_SIGNED,
        DOCKER_MANIFEST_SCHEMA1,
    )
)

_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})

Body = Callable[[], Iterable[bytes] | bytes]
"""A factory of a request body: called again for each (re)send."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


class _RegistrySession:
    """One repository on one registry: scheme, auth and retries. Thread-safe for concurrent requests."""

    def __init__(
        self,
        reference: ImageReference,
        endpoint: RegistryEndpoint,
        credentials: Credentials | None,
        *,
        actions: str,
        limits: Limits,
        user_agent: str,
        retry: RetryPolicy,
        env: Mapping[str, str] | None,
        what: str,
    ) -> None:
        self.supports_signatures = False
        self.reference = reference
        self.endpoint = endpoint
        self.limits = limits
        self.retry = retry
        self.budget = RetryBudget(limits.registry_retry_budget_s)
        """Backoff and Retry-After sleeps of every request of this session together."""
        self.what = what
        self.host = endpoint.host
        self._user_agent = user_agent
        self._scopes = (f"repository:{reference.repository}:{actions}",)
        self.client = make_client(endpoint, limits=limits, env=env)
        self.auth = TokenAuthenticator(
            self.client,
            host=endpoint.host,
            credentials=credentials,
            retry=retry,
            user_agent=user_agent,
            allow_insecure_realm=endpoint.insecure,
            limits=limits,
            budget=self.budget,
            registry_scheme=self.scheme,
        )
        self._base: httpx.URL | None = None
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()

    # --- URLs and scheme ------------------------------------------------------------------------------

    def url(self, path: str) -> httpx.URL:
        """An absolute URL on the registry for ``/v2/<repository>/<path>``."""
        base = self.base()
        return base.join(f"/v2/{self.reference.repository}/{path}")

    def base(self) -> httpx.URL:
        """``https://host/`` or (insecure only) ``http://host/``, found by pinging ``/v2/`` once."""
        with self._lock:
            if self._base is None:
                self._base = retry_call(self._ping, policy=self.retry, what=f"{self.what}: ping", budget=self.budget)
            return self._base

    def scheme(self) -> str:
        """The scheme the registry itself was reached with (``https`` or ``http``); pings if not yet known."""
        return self.base().scheme

    def deadline(self) -> Deadline:
        """A fresh total deadline for one small-document request (the caller's ``Limits``)."""
        return Deadline(self.limits.registry_request_deadline_s)

    def _ping(self) -> httpx.URL:
        https = httpx.URL(f"https://{self.host}/")
        try:
            return self._ping_one(https)
        except HttpStatusError:
            raise
        except TransportError as e:
            if not self.endpoint.insecure:
                raise
            # containers/image: an insecure registry that does not answer HTTPS is tried over plain HTTP.
            # SECURITY: plain HTTP: no integrity for anything but digest-checked content; warned every time.
            _logger.warning("registry %s: HTTPS failed (%s); trying plain HTTP (insecure registry)", self.host, e)
            try:
                return self._ping_one(httpx.URL(f"http://{self.host}/"))
            except TransportError as plain_error:
                msg = f"{self.what}: registry {self.host} answers neither HTTPS ({e}) nor HTTP ({plain_error})"
                raise TransportError(msg, retryable=plain_error.retryable) from plain_error

    def _ping_one(self, base: httpx.URL) -> httpx.URL:
        url = base.join("/v2/")
        deadline = self.deadline()
        # SECURITY: streamed and closed unread: the probe's body is never needed, so never buffered.
        request = self.client.build_request(
            "GET",
            url,
            headers={"User-Agent": self._user_agent},
            timeout=deadline.timeout(self.client.timeout),
            extensions={DEADLINE_EXTENSION: deadline},
        )
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as e:
            deadline.check(f"{self.what}: /v2/ probe {url}")
            raise map_http_error(e, what=self.what, host=self.host) from e
        response.close()
        status = response.status_code
        # The X-Registry-Supports-Signatures extension is advertised on /v2/ (containers/image).
        self.supports_signatures = response.headers.get("X-Registry-Supports-Signatures") == "1"
        if status == httpx.codes.UNAUTHORIZED:
            self._challenge = pick_challenge(parse_www_authenticate(response.headers.get_list("WWW-Authenticate")))
            return base
        if status == httpx.codes.OK:
            return base
        if is_retryable_status(status):
            msg = f"{self.what}: registry {self.host} answered {status} to /v2/"
            raise HttpStatusError(
                msg, status, retryable=True, retry_after_s=parse_retry_after(response.headers.get("Retry-After"))
            )
        # Some registries answer 404 to /v2/ but serve the API; proceed, requests will tell.
        _logger.debug("registry %s: /v2/ answered %d", self.host, status)
        return base

    # --- requests -------------------------------------------------------------------------------------

    def _authorization(self, refresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        return self.auth.authorization(challenge, self._scopes, refresh=refresh)

    def send(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        replayable: bool = True,
        what: str | None = None,
        deadline: Deadline | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One request with auth and redirects, WITHOUT status-based retries; returns a streaming response.

        ``deadline`` bounds the whole exchange (each hop's timeouts are clipped to it); ``timeout`` replaces the
        client's timeouts (blobs: reads wake up at least once per rate window).

        The caller must close the response. A ``401`` on the registry origin is answered once with fresh
        credentials (only if ``replayable``: a consumed body cannot be sent again).

        Raises:
            HttpStatusError: authentication failed.
            TransportError: connection failure (retryable) or TLS failure.
        """
        what = what or self.what
        registry_origin = _origin(self.base())
        # SECURITY: the answer's head (status line and headers) always arrives within the request deadline, also
        # for a blob (whose body is bounded by a minimum rate instead); a request with a body (an upload) is
        # bounded by the caller's deadline only, as sending it may rightly take longer.
        head_deadline = deadline if deadline is not None else (self.deadline() if body is None else None)
        refreshed = False
        hops = 0
        while True:
            request_headers = {"User-Agent": self._user_agent, **(headers or {})}
            if _origin(url) == registry_origin:
                authorization = self._authorization(refresh=refreshed)
                if authorization is not None:
                    request_headers["Authorization"] = authorization
            # SECURITY: other origins (redirect targets) never receive the Authorization header.
            content = body() if body is not None else None
            hop_timeout = timeout or self.client.timeout
            if deadline is not None:
                deadline.check(what)
                hop_timeout = deadline.timeout(hop_timeout)
            extensions = {DEADLINE_EXTENSION: head_deadline} if head_deadline is not None else None
            request = self.client.build_request(
                method, url, headers=request_headers, content=content, timeout=hop_timeout, extensions=extensions
            )
            try:
                response = self.client.send(request, stream=True)
            except httpx.HTTPError as e:
                if head_deadline is not None:
                    head_deadline.check(f"{what}: {method} {url}")
                raise map_http_error(e, what=what, host=url.host) from e
            status = response.status_code
            if status in _REDIRECTS and "Location" in response.headers and method in ("GET", "HEAD"):
                response.close()
                hops += 1
                if hops > self.limits.registry_max_redirects:
                    msg = f"{what}: more than {self.limits.registry_max_redirects} redirects (registry_max_redirects)"
                    raise ProtocolError(msg)
                url = url.join(response.headers["Location"])
                if url.scheme not in ("http", "https"):
                    msg = f"{what}: redirect to unsupported URL scheme {url.scheme!r}"
                    raise ProtocolError(msg)
                continue
            if status == httpx.codes.UNAUTHORIZED and _origin(url) == registry_origin and not refreshed:
                challenge = pick_challenge(parse_www_authenticate(response.headers.get_list("WWW-Authenticate")))
                if challenge is not None and replayable:
                    response.close()
                    self._challenge = challenge
                    refreshed = True
                    continue
            if status == httpx.codes.UNAUTHORIZED:
                response.close()
                raise self._auth_error(what)
            return response

    def _auth_error(self, what: str) -> HttpStatusError:
        if self.auth.has_credentials:
            who = self.auth.account or "the identity token"
            return HttpStatusError(f"registry {self.host}: authentication failed for {who}", 401)
        return HttpStatusError(f"{what}: registry {self.host} requires authentication (no credentials given)", 401)

    def request(
        self,
        method: str,
        url: httpx.URL | Callable[[], httpx.URL],
        *,
        ok: Iterable[int],
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        replayable: bool = True,
        what: str | None = None,
        not_found: str | None = None,
        deadline: Deadline | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """:meth:`send` with retries on connection failures and retryable statuses; checks the status.

        Args:
            method: HTTP method.
            url: the URL, or a factory (so the scheme ping itself is retried).
            ok: statuses returned to the caller (streaming; the caller closes the response).
            headers: extra request headers.
            body: request body factory.
            replayable: whether the body may be sent again (retries, auth refresh).
            what: what error messages name (defaults to the image).
            not_found: message of the :class:`ResourceNotFoundError` raised on 404 (``None``: 404 is an error
                like any other unexpected status).
            deadline: total time of every attempt together (small documents); the caller reads the body
                under the same deadline.
            timeout: replaces the client's timeouts (see :meth:`send`).

        Raises:
            ResourceNotFoundError: 404 and ``not_found`` given.
            HttpStatusError: another unexpected status, after retries where retryable.
            TransportError: connection failure after retries.
        """
        what = what or self.what
        accepted = frozenset(ok)

        def attempt() -> httpx.Response:
            target = url() if callable(url) else url
            response = self.send(
                method,
                target,
                headers=headers,
                body=body,
                replayable=replayable,
                what=what,
                deadline=deadline,
                timeout=timeout,
            )
            status = response.status_code
            if status in accepted:
                return response
            try:
                detail = _error_detail(response, self.limits.registry_error_body_bytes, deadline)
            finally:
                response.close()
            if status == httpx.codes.NOT_FOUND and not_found is not None:
                raise ResourceNotFoundError(not_found)
            retryable = is_retryable_status(status) and replayable
            reason = f"{status} {response.reason_phrase}".strip()
            msg = f"{what}: registry {self.host} answered {reason} to {method} {target.path}{detail}"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise HttpStatusError(msg, status, retryable=retryable, retry_after_s=retry_after)

        policy = self.retry if replayable else dataclasses.replace(self.retry, attempts=1)
        return retry_call(attempt, policy=policy, what=what, budget=self.budget)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


def _error_detail(response: httpx.Response, cap: int, deadline: Deadline | None) -> str:
    """`` (CODE: message, ...)`` from a registry error body (distribution spec "errors"), or "".

    The body is read under ``cap`` (raw and decoded) and the request's deadline; any problem with it
    (too large, malformed, slow) only drops the detail.
    """
    if response.request.method == "HEAD":
        return ""
    try:
        untrusted_body = read_body(response, cap=cap, what="registry error body", deadline=deadline)
        untrusted = loads(untrusted_body, "registry error body")
    except (httpx.HTTPError, CocoError):
        return ""
    errors = untrusted.get("errors") if isinstance(untrusted, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for item in errors[:3]:
        if isinstance(item, dict):
            code, message = item.get("code"), item.get("message")
            text = ": ".join(str(x)[:200] for x in (code, message) if isinstance(x, str) and x)
            if text:
                parts.append(text)
    return f" ({'; '.join(parts)})" if parts else ""


def _media_type(response: httpx.Response) -> str | None:
    value = response.headers.get("Content-Type")
    if not value:
        return None
    return value.split(";", 1)[0].strip() or None


# --- source ------------------------------------------------------------------------------------------


def read_capped(response: httpx.Response, cap: int, what: str, host: str, deadline: Deadline | None = None) -> bytes:
    """A response body of at most ``cap`` bytes, raw and decoded (see :func:`http_body.read_body`).

    Raises:
        ProtocolError: larger than ``cap``, or an unsupported/corrupt Content-Encoding.
        TransportError: the connection failed or the deadline passed.
    """
    try:
        return read_body(response, cap=cap, what=what, deadline=deadline)
    except httpx.HTTPError as e:
        if deadline is not None:
            deadline.check(what)
        raise map_http_error(e, what=what, host=host) from e


class DockerSource:
    """Reads an image from a registry repository. Everything it returns is UNTRUSTED."""

    def __init__(
        self,
        reference: ImageReference,
        endpoint: RegistryEndpoint,
        credentials: Credentials | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        user_agent: str = "cocoguest/0.1",
        env: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Create a source; no request is made until first use.

        Args:
            reference: the image (its registry is only used in messages; ``endpoint`` says where to go).
            endpoint: the registry host to contact (possibly a mirror) and its TLS settings.
            credentials: credentials for the endpoint, or ``None`` for anonymous access.
            limits: size limits.
            user_agent: ``User-Agent`` header.
            env: environment for proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``).
            retry: retry/backoff policy (``None``: the one ``limits`` describe).

        Raises:
            TransportError: the endpoint's certificate files cannot be loaded.
        """
        self.reference = reference
        self.endpoint = endpoint
        self.credentials = credentials
        self._limits = limits
        self._session = _RegistrySession(
            reference,
            endpoint,
            credentials,
            actions="pull",
            limits=limits,
            user_agent=user_agent,
            retry=retry if retry is not None else RetryPolicy.from_limits(limits),
            env=env,
            what=self.describe(),
        )

    @property
    def token_requests(self) -> int:
        """Token requests made so far (diagnostics, tests)."""
        return self._session.auth.token_requests

    def describe(self) -> str:
        """``docker://host/repo:tag[@digest]``."""
        return f"docker://{self.reference}"

    def get_manifest(self, digest: Digest | None = None) -> tuple[bytes, str | None]:
        """The raw manifest or index and its declared media type (size-capped, unverified).

        Raises:
            ResourceNotFoundError: the registry does not know the manifest.
            ProtocolError: the manifest exceeds ``limits.max_manifest_bytes``.
            TransportError: network failure, or an unexpected status after retries.
        """
        ref = str(digest) if digest is not None else self.reference.manifest_ref()
        what = self.describe() if digest is None else f"{self.describe()}: manifest {digest}"
        cap = self._limits.max_manifest_bytes
        deadline = self._session.deadline()
        response = self._session.request(
            "GET",
            lambda: self._session.url(f"manifests/{ref}"),
            ok=(200,),
            headers={"Accept": MANIFEST_ACCEPT, "Accept-Encoding": "identity"},
            what=what,
            not_found=f"{what}: manifest unknown",
            deadline=deadline,
        )
        try:
            body = read_capped(response, cap, f"{what}: manifest", self._session.host, deadline)
            return body, _media_type(response)
        finally:
            response.close()

    @property
    def repository(self) -> str:
        """The repository path on the registry contacted (a mirror's, if any)."""
        return self.reference.repository

    def supports_signatures_extension(self) -> bool:
        """Whether the registry advertises the X-Registry-Supports-Signatures API (pings ``/v2/`` once)."""
        self._session.base()
        return self._session.supports_signatures

    def get_registry_path(self, path: str, *, max_bytes: int, what: str) -> bytes:
        """An authenticated GET of an absolute registry path (e.g. ``/extensions/v2/...``), 200 only, size-capped.

        Raises:
            ResourceNotFoundError, TransportError, ProtocolError.
        """
        session = self._session
        deadline = session.deadline()
        response = session.request("GET", lambda: session.base().join(path), ok=(200,), what=what, deadline=deadline)
        try:
            return read_capped(response, max_bytes, what, session.host, deadline)
        finally:
            response.close()

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A stream of the blob's bytes (at most ``desc.size + 1``), resuming after interruptions.

        Raises:
            ResourceNotFoundError: the registry does not know the blob.
            ProtocolError: the descriptor's size exceeds ``limits.max_blob_bytes``.
            TransportError: network failure or unexpected status after retries.
        """
        what = f"{self.describe()}: blob {desc.digest}"
        if desc.size > self._limits.max_blob_bytes:
            # SECURITY: a descriptor cannot make us stream more than the blob limit.
            msg = f"{what}: declared size {desc.size} exceeds the {self._limits.max_blob_bytes}-byte limit"
            raise ProtocolError(msg)
        return cast(BinaryIO, _BlobStream(self._session, desc, what))

    def close(self) -> None:
        """Release connections."""
        self._session.close()

    def __enter__(self) -> DockerSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BlobStream(io.RawIOBase):
    """A resumable, length-capped blob download. Not thread-safe (one reader).

    SECURITY: a minimum transfer rate (``limits.registry_blob_min_bytes_per_s``, averaged over windows of
    ``limits.registry_blob_rate_window_s``, across resumptions) bounds how long a dripping registry holds a
    pull; reads wait at most one window for the next bytes.
    """

    def __init__(self, session: _RegistrySession, desc: Descriptor, what: str) -> None:
        super().__init__()
        self._session = session
        self._desc = desc
        self._what = what
        self._cap = desc.size + 1  # one byte more, so an overlong blob is visible to the caller
        self._delivered = 0
        self._pending = b""
        self._pending_pos = 0
        self._resumes = 0
        self._eof = False
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        limits = session.limits
        self._min_rate = limits.registry_blob_min_bytes_per_s
        self._window_s = limits.registry_blob_rate_window_s
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self._timeout = httpx.Timeout(
            min(limits.registry_read_timeout_s, self._window_s), connect=limits.registry_connect_timeout_s
        )
        self._start(offset=0)

    def _check_rate(self, received: int) -> None:
        """Count ``received`` bytes; at the end of each window, fail if the window's average was too slow.

        Raises:
            TransportError: slower than the minimum rate (not retryable: it names the blob and the rate).
        """
        self._window_bytes += received
        elapsed = time.monotonic() - self._window_start
        if elapsed < self._window_s:
            return
        rate = self._window_bytes / elapsed
        if rate < self._min_rate:
            msg = (
                f"{self._what}: transfer from registry {self._session.host} too slow: {rate:.0f} bytes/s over "
                f"{elapsed:.0f} s, below the minimum of {self._min_rate} bytes/s (registry_blob_min_bytes_per_s)"
            )
            raise TransportError(msg, retryable=False)
        self._window_start, self._window_bytes = time.monotonic(), 0

    # --- HTTP -----------------------------------------------------------------------------------------

    def _get(self, offset: int) -> httpx.Response:
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return self._session.request(
            "GET",
            lambda: self._session.url(f"blobs/{self._desc.digest}"),
            ok=(200, 206, 416) if offset else (200,),
            headers=headers,
            what=self._what,
            not_found=f"{self._what}: blob unknown to the registry",
            timeout=self._timeout,
        )

    def _start(self, offset: int) -> None:
        response = self._get(offset)
        status = response.status_code
        if status == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE:
            # Nothing left after `offset`: the blob ends where we are (the caller checks size and digest).
            response.close()
            self._eof = True
            return
        if offset and status == httpx.codes.PARTIAL_CONTENT:
            received = response.headers.get("Content-Range", "").strip()
            size = self._desc.size
            match = _CONTENT_RANGE.fullmatch(received)
            # The range must start where we stopped and end at the descriptor's last byte, of a blob of the
            # descriptor's size ('*' = unknown length is accepted; the digest check covers the content).
            if (
                match is None
                or int(match.group(1)) != offset
                or int(match.group(2)) != size - 1
                or match.group(3) not in ("*", str(size))
            ):
                response.close()
                msg = (
                    f"{self._what}: wrong Content-Range from registry {self._session.host} on resume: "
                    f"expected 'bytes {offset}-{size - 1}/{size}', received {received[:100]!r}"
                )
                # A TransportError, not a ProtocolError: the layer pipeline explains a ProtocolError by the
                # blob's digest/size check, which would report this as a size mismatch.
                raise TransportError(msg, retryable=False)
        elif offset:
            # 200: the server ignored Range and sends the blob from byte 0.
            if self._delivered:
                response.close()
                msg = (
                    f"{self._what}: download interrupted at byte {offset} and registry {self._session.host} "
                    "does not support resuming (it ignored the Range header)"
                )
                raise TransportError(msg, retryable=False)
            self._pending, self._pending_pos = b"", 0
        self._response = response
        self._chunks = response.iter_raw()

    def _resume(self, error: Exception) -> None:
        self._close_response()
        self._resumes += 1
        offset = self._delivered + len(self._pending) - self._pending_pos
        if self._resumes > self._session.retry.blob_resumes:
            cause = error
            if isinstance(error, httpx.HTTPError):
                cause = map_http_error(error, what=self._what, host=self._session.host)
            msg = f"{self._what}: download failed at byte {offset} after {self._resumes - 1} resumptions ({cause})"
            raise TransportError(msg, retryable=False) from error
        delay = self._session.retry.delay(self._resumes)
        if not self._session.budget.take(delay):
            msg = (
                f"{self._what}: download failed at byte {offset}; resuming would exceed the retry budget of "
                f"{self._session.budget.seconds:g} s (registry_retry_budget_s)"
            )
            raise TransportError(msg, retryable=False) from error
        _logger.info("%s: interrupted at byte %d (%s); resuming in %.1f s", self._what, offset, error, delay)
        time.sleep(delay)
        self._start(offset)

    def _next_chunk(self) -> bool:
        """Refill ``_pending``; False at EOF."""
        while not self._eof:
            if self._chunks is None:  # pragma: no cover — defensive: _start sets it unless at EOF
                return False
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                self._close_response()
                return False
            except httpx.TransportError as e:
                self._check_rate(0)
                self._resume(e)
                continue
            self._check_rate(len(chunk))
            if chunk:
                self._pending, self._pending_pos = chunk, 0
                return True
        return False

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self._chunks = None

    # --- io.RawIOBase ---------------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all remaining if negative); ``b""`` at EOF."""
        if size is None or size < 0:
            return self.readall()
        remaining = self._cap - self._delivered
        if size == 0 or remaining <= 0:
            return b""
        if self._pending_pos >= len(self._pending) and not self._next_chunk():
            return b""
        take = min(size, remaining, len(self._pending) - self._pending_pos)
        if self._pending_pos == 0 and take == len(self._pending):
            out = self._pending
        else:
            out = self._pending[self._pending_pos : self._pending_pos + take]
        self._pending_pos += take
        self._delivered += take
        return out

    def readall(self) -> bytes:
        """All remaining bytes (capped at ``desc.size + 1`` in total)."""
        parts = []
        while data := self.read(self._session.limits.registry_upload_chunk_bytes):
            parts.append(data)
        return b"".join(parts)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._close_response()
        super().close()


# --- destination -------------------------------------------------------------------------------------


class DockerDestination:
    """Writes an image into a registry repository (blobs first, then manifests)."""

    def __init__(
        self,
        reference: ImageReference,
        endpoint: RegistryEndpoint,
        credentials: Credentials | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        user_agent: str = "cocoguest/0.1",
        env: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Create a destination; no request is made until first use (arguments as :class:`DockerSource`).

        Raises:
            TransportError: the endpoint's certificate files cannot be loaded.
        """
        self.reference = reference
        self._session = _RegistrySession(
            reference,
            endpoint,
            credentials,
            actions="pull,push",
            limits=limits,
            user_agent=user_agent,
            retry=retry if retry is not None else RetryPolicy.from_limits(limits),
            env=env,
            what=self.describe(),
        )

    def describe(self) -> str:
        """``docker://host/repo:tag``."""
        return f"docker://{self.reference}"

    def has_blob(self, digest: Digest) -> bool:
        """Whether the repository already has the blob (``HEAD``).

        Raises:
            TransportError: network failure or unexpected status.
        """
        what = f"{self.describe()}: blob {digest}"
        response = self._session.request("HEAD", lambda: self._session.url(f"blobs/{digest}"), ok=(200, 404), what=what)
        response.close()
        return response.status_code == httpx.codes.OK

    def put_blob(self, stream: BinaryIO, digest: Digest, size: int) -> None:
        """Upload a blob: ``POST`` an upload session, ``PATCH`` the bytes (streamed), ``PUT ?digest=``.

        A seekable stream is rewound and the whole upload retried on retryable failures; a non-seekable one
        is tried once.

        Raises:
            TransportError: network failure, or the registry refused the upload (e.g. digest mismatch).
            ValueError: the stream does not hold exactly ``size`` bytes.
        """
        what = f"{self.describe()}: blob {digest}"
        seekable = False
        start = 0
        try:
            seekable = stream.seekable()
            start = stream.tell() if seekable else 0
        except (OSError, AttributeError):
            seekable = False

        def upload() -> None:
            if seekable:
                stream.seek(start)
            self._upload_once(stream, digest, size, what)

        if seekable:
            retry_call(upload, policy=self._session.retry, what=what)
        else:
            upload()

    def _upload_once(self, stream: BinaryIO, digest: Digest, size: int, what: str) -> None:
        session = self._session
        response = session.request("POST", lambda: session.url("blobs/uploads/"), ok=(202,), what=what)
        response.close()
        location = self._location(response, what)

        used = False

        def body() -> Iterable[bytes]:
            nonlocal used
            if used:  # pragma: no cover — defensive: send() does not replay non-replayable bodies
                msg = "upload body consumed"
                raise RuntimeError(msg)
            used = True
            return _read_exactly(stream, size, what, self._session.limits.registry_upload_chunk_bytes)

        response = session.request(
            "PATCH",
            location,
            ok=(202, 204),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
            replayable=False,
            what=what,
        )
        response.close()
        location = self._location(response, what, default=location)
        finish = location.copy_merge_params({"digest": str(digest)})
        response = session.request(
            "PUT", finish, ok=(201, 204), headers={"Content-Length": "0"}, body=lambda: b"", what=what
        )
        response.close()

    def _location(self, response: httpx.Response, what: str, default: httpx.URL | None = None) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            if default is not None:
                return default
            msg = f"{what}: registry {self._session.host} gave no upload location"
            raise ProtocolError(msg)
        return response.request.url.join(location)

    def put_manifest(self, data: bytes, media_type: str, tag_or_digest: str | None = None) -> Digest:
        """Upload a manifest under a tag or digest (default: the reference's tag, else its digest).

        Returns:
            The sha256 digest of ``data``.

        Raises:
            TransportError: network failure, or the registry refused the manifest.
            ProtocolError: the registry reports a different digest for what it stored.
        """
        digest = Digest.of_bytes(data)
        ref = tag_or_digest or self.reference.tag or str(self.reference.digest or digest)
        what = f"{self.describe()}: manifest {ref}"
        response = self._session.request(
            "PUT",
            lambda: self._session.url(f"manifests/{ref}"),
            ok=(200, 201, 202, 204),
            headers={"Content-Type": media_type},
            body=lambda: data,
            what=what,
        )
        response.close()
        reported = response.headers.get("Docker-Content-Digest")
        if reported and reported.startswith("sha256:") and reported != str(digest):
            msg = f"{what}: registry {self._session.host} stored digest {reported}, we sent {digest}"
            raise ProtocolError(msg)
        return digest

    def close(self) -> None:
        """Release connections."""
        self._session.close()

    def __enter__(self) -> DockerDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exactly(stream: BinaryIO, size: int, what: str, chunk_bytes: int) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes from ``stream`` in chunks of at most ``chunk_bytes`` (an upload body).

    Raises:
        ValueError: the stream ends early or has more bytes.
    """
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(chunk_bytes, remaining))
        if not chunk:
            msg = f"{what}: the stream ended {remaining} bytes before the declared size {size}"
            raise ValueError(msg)
        remaining -= len(chunk)
        yield chunk
    if stream.read(1):
        msg = f"{what}: the stream is longer than the declared size {size}"
        raise ValueError(msg)
