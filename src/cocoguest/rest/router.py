"""Requests of api-server-rest -> AA and CDH calls -> answers (upstream ``api-server-rest/src/router.rs``).

Routes (``ROUTES``; each is documented in ``openapi.json``)::

    GET  /info                                   {"version", "tee"?, "additional_tees"?, "feature"}
    GET  /aa/token?token_type=T                  AA GetToken, octet-stream
    GET  /aa/evidence?runtime_data=D[&encoding=base64]             AA GetEvidence, octet-stream
    GET  /aa/additional-evidence?runtime_data=D[&encoding=base64]  AA GetAdditionalEvidence, octet-stream
    POST /aa/aael  {"domain","operation","content"}                AA ExtendRuntimeMeasurement, JSON
    GET  /cdh/resource/<repo>/<type>/<tag>       CDH GetResource("kbs:///<repo>/<type>/<tag>"), octet-stream
    GET  /openapi.json                           this API's OpenAPI document

Status codes as upstream: 400 a missing or undecodable parameter, 404 an unknown path or a feature not enabled
(``Attestation Feature Not Enabled`` / ``Resource Feature Not Enabled``), 405 a known path with another method,
500 a backend error (body: the error text). Two deliberate differences, both answering a client mistake with
a 4xx instead of upstream's 404/500: a known ``/aa/...`` path with a wrong method is 405 (with ``Allow``) like
``/info`` already is upstream, and a malformed AAEL body is 400 (upstream: 500). A resource path whose segments
are not a valid resource URI is 400; one with other than three segments matches no route (404).

Invariants:
    * The router does no IO itself: backends are the :class:`AaBackend` / :class:`CdhBackend` protocols
      (``rpc.services`` clients in production).
    * Only :class:`CocoError` from a backend becomes a 500 with its text; anything else propagates (a bug).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from cocoguest import __version__, jsonutil
from cocoguest.errors import CocoError, ProtocolError
from cocoguest.kbs.resource_uri import ResourceUri, ResourceUriError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rest.http import HttpRequest, HttpResponse
from cocoguest.rest.openapi import openapi_document

OCTET: Final = "application/octet-stream"
JSON: Final = "application/json"
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")

# Upstream's exact answers to ExtendRuntimeMeasurement results (client/aa.rs), byte for byte.
AAEL_ANSWERS: Final = {
    "OK": '{"success":"true"}',
    "NOT_SUPPORTED": '{"success":"false","message": "The platform does not support runtime measurement"}',
    "NOT_ENABLED": '{"success":"false","message": "Attestation Agent does not enable eventlog recording"}',
}
_AAEL_UNKNOWN: Final = '{"success":"false","message": "Unknown runtime measurement result"}'


class Feature(StrEnum):
    """``-f/--features``: which backends are connected."""

    RESOURCE = "resource"
    ATTESTATION = "attestation"
    ALL = "all"

    @property
    def wants_aa(self) -> bool:
        """Whether the AA routes are served."""
        return self in (Feature.ATTESTATION, Feature.ALL)

    @property
    def wants_cdh(self) -> bool:
        """Whether the CDH routes are served."""
        return self in (Feature.RESOURCE, Feature.ALL)


class AaBackend(Protocol):
    """What the router needs from the attestation agent (``AaClient`` provides it)."""

    async def get_token(self, token_type: str) -> bytes: ...
    async def get_evidence(self, runtime_data: bytes) -> bytes: ...
    async def get_additional_evidence(self, runtime_data: bytes) -> bytes: ...
    async def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> str: ...
    async def get_tee_type(self) -> str: ...
    async def get_additional_tees(self) -> list[str]: ...


class CdhBackend(Protocol):
    """What the router needs from the confidential data hub (``CdhClient`` provides it)."""

    async def get_resource(self, resource_path: str) -> bytes: ...


@dataclass(frozen=True)
class Route:
    """One documented route: ``method`` on ``template`` (OpenAPI path syntax)."""

    method: str
    template: str


ROUTES: Final = (
    Route("GET", "/info"),
    Route("GET", "/aa/token"),
    Route("GET", "/aa/evidence"),
    Route("GET", "/aa/additional-evidence"),
    Route("POST", "/aa/aael"),
    Route("GET", "/cdh/resource/{repository}/{type}/{tag}"),
    Route("GET", "/openapi.json"),
)


def text(status: int, body: str) -> HttpResponse:
    """A plain-text answer."""
    return HttpResponse(status, body.encode("utf-8"), "text/plain; charset=utf-8")


def bad_request() -> HttpResponse:
    """Upstream's 400 answer."""
    return text(400, "BAD REQUEST")


def not_found() -> HttpResponse:
    """Upstream's 404 answer."""
    return text(404, "URL NOT FOUND")


def forbidden() -> HttpResponse:
    """Upstream's 403 answer (a non-loopback client)."""
    return text(403, "Forbidden")


def not_allowed(method: str) -> HttpResponse:
    """Upstream's 405 answer, with ``Allow``."""
    return HttpResponse(405, b"Method Not Allowed", "text/plain; charset=utf-8", (("Allow", method),))


def decode_runtime_data(untrusted_value: str, encoding: str | None) -> bytes:
    """The runtime data of an evidence query: the value's UTF-8 bytes, or with ``encoding=base64`` its
    URL-safe unpadded base64 decoding (canonical form only).

    Raises:
        ProtocolError: an unknown encoding or invalid base64.
    """
    if encoding is None:
        return untrusted_value.encode("utf-8")
    if encoding != "base64":
        msg = f"unsupported runtime_data encoding {encoding[:40]!r}"
        raise ProtocolError(msg)
    if not _B64URL.fullmatch(untrusted_value) or len(untrusted_value) % 4 == 1:
        msg = "runtime_data is not URL-safe base64 without padding"
        raise ProtocolError(msg)
    try:
        data = base64.urlsafe_b64decode(untrusted_value + "=" * (-len(untrusted_value) % 4))
    except binascii.Error as e:
        msg = "runtime_data is not URL-safe base64 without padding"
        raise ProtocolError(msg) from e
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != untrusted_value:
        msg = "runtime_data is not canonical URL-safe base64 (stray trailing bits)"
        raise ProtocolError(msg)
    return data


def _aael_event(untrusted_body: bytes, limits: Limits) -> tuple[str, str, str]:
    document = jsonutil.load_object(untrusted_body, "AAEL event", limits=limits)
    fields = []
    for name in ("domain", "operation", "content"):
        value = document.get(name)
        if not isinstance(value, str):
            msg = f"AAEL event: {name!r} must be a string"
            raise ProtocolError(msg)
        fields.append(value)
    return fields[0], fields[1], fields[2]


class Router:
    """Maps one request to one answer; see the module docstring."""

    def __init__(
        self,
        *,
        feature: Feature,
        aa: AaBackend | None,
        cdh: CdhBackend | None,
        version: str = __version__,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Serve ``feature``; ``aa`` is required when it wants the AA, ``cdh`` when it wants the CDH."""
        if feature.wants_aa and aa is None:
            msg = f"feature {feature.value!r} needs an attestation agent"
            raise ValueError(msg)
        if feature.wants_cdh and cdh is None:
            msg = f"feature {feature.value!r} needs a confidential data hub"
            raise ValueError(msg)
        self._feature = feature
        self._aa = aa if feature.wants_aa else None
        self._cdh = cdh if feature.wants_cdh else None
        self._version = version
        self._limits = limits

    async def route(self, request: HttpRequest) -> HttpResponse:
        """The answer to ``request`` (the peer check happened before)."""
        path = request.path
        if path in ("/info", "/openapi.json"):
            if request.method != "GET":
                return not_allowed("GET")
            return await self._info() if path == "/info" else HttpResponse(200, openapi_document(), JSON)
        if path == "/aa" or path.startswith("/aa/"):
            return await self._aa_route(request)
        if path == "/cdh" or path.startswith("/cdh/"):
            return await self._cdh_route(request)
        return not_found()

    async def _info(self) -> HttpResponse:
        info: dict[str, object] = {"version": self._version}
        if self._aa is not None:
            aa = self._aa
            try:
                info["tee"] = await aa.get_tee_type()
                tees = await aa.get_additional_tees()
            except CocoError as e:
                return text(500, str(e))
            if tees:
                info["additional_tees"] = tees
        info["feature"] = self._feature.value
        return HttpResponse(200, json.dumps(info).encode("utf-8"), JSON)

    async def _aa_route(self, request: HttpRequest) -> HttpResponse:
        aa = self._aa
        if aa is None:
            return text(404, "Attestation Feature Not Enabled")
        handlers: dict[str, tuple[str, Callable[[AaBackend, HttpRequest], Awaitable[HttpResponse]]]] = {
            "/aa/token": ("GET", self._token),
            "/aa/evidence": ("GET", self._evidence),
            "/aa/additional-evidence": ("GET", self._additional_evidence),
            "/aa/aael": ("POST", self._aael),
        }
        entry = handlers.get(request.path)
        if entry is None:
            return not_found()
        method, handler = entry
        if request.method != method:
            return not_allowed(method)
        try:
            return await handler(aa, request)
        except CocoError as e:
            return text(500, str(e))

    @staticmethod
    async def _token(aa: AaBackend, request: HttpRequest) -> HttpResponse:
        token_type = request.query.get("token_type")
        if token_type is None:
            return bad_request()
        return HttpResponse(200, await aa.get_token(token_type), OCTET)

    @staticmethod
    def _runtime_data(request: HttpRequest) -> bytes | None:
        value = request.query.get("runtime_data")
        if value is None:
            return None
        try:
            return decode_runtime_data(value, request.query.get("encoding"))
        except ProtocolError:
            return None

    async def _evidence(self, aa: AaBackend, request: HttpRequest) -> HttpResponse:
        runtime_data = self._runtime_data(request)
        if runtime_data is None:
            return bad_request()
        return HttpResponse(200, await aa.get_evidence(runtime_data), OCTET)

    async def _additional_evidence(self, aa: AaBackend, request: HttpRequest) -> HttpResponse:
        runtime_data = self._runtime_data(request)
        if runtime_data is None:
            return bad_request()
        return HttpResponse(200, await aa.get_additional_evidence(runtime_data), OCTET)

    async def _aael(self, aa: AaBackend, request: HttpRequest) -> HttpResponse:
        try:
            domain, operation, content = _aael_event(request.body, self._limits)
        except ProtocolError as e:
            return text(400, f"Illegal AAEL entry format: {e}")
        result = await aa.extend_runtime_measurement(domain, operation, content)
        return HttpResponse(200, AAEL_ANSWERS.get(result, _AAEL_UNKNOWN).encode("utf-8"), JSON)

    async def _cdh_route(self, request: HttpRequest) -> HttpResponse:
        cdh = self._cdh
        if cdh is None:
            return text(404, "Resource Feature Not Enabled")
        prefix = "/cdh/resource/"
        segments = request.path[len(prefix) :].split("/") if request.path.startswith(prefix) else []
        if len(segments) != 3:
            return not_found()
        if request.method != "GET":
            return not_allowed("GET")
        uri_text = "kbs:///" + "/".join(segments)
        try:
            ResourceUri.parse(uri_text, limits=self._limits)  # SECURITY: no traversal or odd bytes reach the CDH
        except ResourceUriError as e:
            return text(400, str(e))
        try:
            return HttpResponse(200, await cdh.get_resource(uri_text), OCTET)
        except CocoError as e:
            return text(500, str(e))
