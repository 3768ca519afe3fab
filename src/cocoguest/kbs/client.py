"""The KBS client: RCAR over HTTP, the token cache, resource release; background-check and passport modes.

Background-check mode (:class:`KbsClient`): the client owns a TEE key pair and an :class:`EvidenceSource`;
:meth:`KbsClient.get_token` runs an RCAR handshake (:mod:`cocoguest.kbs.protocol`) when the cache has no fresh
token. Passport mode (:class:`PassportKbsClient`): a :class:`TokenProvider` (the AA's ``GetToken("kbs")``)
supplies the token and the TEE key pair.

Resource release (both modes), ``GET /kbs/v0/resource/<repo>/<type>/<tag>`` with ``Authorization: Bearer``:
    (1) credentials from the token cache (attesting if needed);
    (2) GET; on 200 parse the JWE and decrypt it with the credentials' TEE key;
    (3) on 401 other than ``PolicyDeny``, drop the refused token, get new credentials and GET once more;
    (4) any other answer raises an error naming the step, the HTTP status and the KBS's ``{type, detail}``.

Invariants:
    * SECURITY: a resource is returned only after it decrypted under this guest's TEE key (the key whose public
      half went into the evidence); a KBS answer encrypted to any other key is refused.
    * SECURITY: nonce and TEE public key are bound into the evidence by the protocol state machine (for IBM SE
      through the ``runtime_data_digest`` it injects into the challenge's ``SeAttestationRequest``).
    * At most one attestation in flight (the cache's lock), whether callers are threads or asyncio tasks
      (:class:`AsyncKbsClient`).
    * Every answer is size-capped while streaming (:mod:`cocoguest.kbs.http`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from cocoguest.errors import KbsDeniedError, KbsProtocolError, ProtocolError
from cocoguest.jsonutil import load_object
from cocoguest.kbs.evidence import EvidenceSource
from cocoguest.kbs.http import HttpAnswer, KbsHttp
from cocoguest.kbs.protocol import (
    API_PREFIX,
    SESSION_COOKIE,
    AttestationToken,
    RcarHandshake,
    Step,
    parse_resource_response,
    parse_token,
    resource_path,
    status_error,
)
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import DEFAULT_TEE_KEY_ALGORITHM, TeeKeyAlgorithm, TeeKeyPair
from cocoguest.kbs.token_cache import Credentials, TokenCache
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

_OK = 200
_UNAUTHORIZED = 401
_POLICY_DENY = "PolicyDeny"


class TokenProvider(Protocol):
    """Supplies passport-mode credentials (the AA's ``GetToken("kbs")``)."""

    def get_kbs_credentials(self) -> Credentials:
        """A token and the TEE key pair it was issued for.

        Raises:
            CocoError: the provider could not produce a token.
        """
        ...


def credentials_to_aa_json(credentials: Credentials) -> bytes:
    """The AA's ``GetToken("kbs")`` answer ``{"token": JWT, "tee_keypair": PEM}`` (guest-components.md §7.3)."""
    document = {"token": credentials.token.raw, "tee_keypair": credentials.tee_key.to_pem().decode("ascii")}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def credentials_from_aa_json(untrusted: bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> Credentials:
    """Parse an AA ``GetToken("kbs")`` answer into credentials.

    Raises:
        ProtocolError: not ``{"token": str, "tee_keypair": str}``, or the token is not a JWT.
        ConfigError: the key is not a usable PEM private key.
    """
    document = load_object(untrusted, f"{source} token answer", limits=limits)
    token, keypair = document.get("token"), document.get("tee_keypair")
    if not isinstance(keypair, str):
        msg = f"{source} token answer has no string 'tee_keypair'"
        raise ProtocolError(msg)
    return Credentials(
        parse_token(token, Step.ATTEST, limits),
        TeeKeyPair.from_pem(keypair.encode("utf-8"), f"{source} tee_keypair"),
    )


class _ResourceClient:
    """Resource release over a token cache; shared by both modes."""

    def __init__(self, http: KbsHttp, cache: TokenCache, limits: Limits) -> None:
        self._http = http
        self._cache = cache
        self._limits = limits

    @property
    def url(self) -> str:
        """The KBS URL."""
        return self._http.base_url

    def get_token(self) -> Credentials:
        """Fresh credentials, from the cache or a new attestation / token provider call.

        Raises:
            KbsDeniedError, KbsProtocolError, TransportError, AttestationError: the attestation failed.
        """
        return self._cache.get()

    def attest_now(self) -> Credentials:
        """New credentials even if the cached token is fresh (Trustee kbs-client's ``attest``).

        Raises:
            KbsDeniedError, KbsProtocolError, TransportError, AttestationError: the attestation failed.
        """
        return self._cache.refresh()

    @property
    def fetches(self) -> int:
        """Attestations (or token provider calls) made so far."""
        return self._cache.fetches

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The plaintext of resource ``uri`` (module docstring steps (1)-(4)).

        Raises:
            ResourceNotFoundError: the KBS answered 404.
            KbsDeniedError: attestation refused, or the resource policy denied the release (names the KBS's type).
            KbsProtocolError: malformed or oversized answer.
            DecryptionIntegrityError: not encrypted to this guest's TEE key, or altered.
            TransportError: the KBS could not be reached.
        """
        what = f"resource {uri}"
        path = resource_path(uri)
        refreshed = False
        while True:
            credentials = self._cache.get()  # (1)
            answer = self._http.request(
                Step.RESOURCE,
                "GET",
                path,
                max_bytes=self._limits.kbs_max_resource_response_bytes,
                headers={"Authorization": f"Bearer {credentials.token.raw}"},
            )  # (2)
            if answer.status == _OK:
                response = parse_resource_response(answer.untrusted_body, what, self._limits)
                return credentials.tee_key.decrypt(response, what)
            error = status_error(Step.RESOURCE, answer.status, answer.untrusted_body, str(uri), self._limits)
            if (
                isinstance(error, KbsDeniedError)
                and answer.status == _UNAUTHORIZED
                and error.error_type != _POLICY_DENY
                and not refreshed
            ):
                # (3) the token may have expired or been revoked: one new token, one more try.
                _logger.info("KBS refused the token for %s (%s); attesting again", what, error.error_type)
                self._cache.invalidate(credentials)
                refreshed = True
                continue
            raise error  # (4)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


class KbsClient(_ResourceClient):
    """Background-check KBS client: attests with its own TEE key and evidence source."""

    def __init__(
        self,
        url: str,
        evidence: EvidenceSource,
        *,
        tee_key: TeeKeyPair | None = None,
        tee_key_algorithm: TeeKeyAlgorithm = DEFAULT_TEE_KEY_ALGORITHM,
        ca_cert_pem: bytes | None = None,
        init_data_toml: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a client; nothing is sent until a token or resource is asked for.

        Args:
            url: the KBS, ``http(s)://host[:port]``.
            evidence: the attester.
            tee_key: the TEE key pair; a fresh one of ``tee_key_algorithm`` by default (it lives as long as the
                client, as upstream).
            tee_key_algorithm: algorithm of the generated key.
            ca_cert_pem: extra trusted root for HTTPS.
            init_data_toml: init-data sent with every ``/attest``.
            limits: caps, timeouts and the token refresh margin.
            clock: seconds since the epoch (tests pass a fake clock).

        Raises:
            ConfigError: malformed URL or CA certificate.
        """
        http = KbsHttp(url, ca_cert_pem=ca_cert_pem, limits=limits)
        self._evidence = evidence
        self._tee_key = tee_key if tee_key is not None else TeeKeyPair.generate(tee_key_algorithm)
        self._init_data_toml = init_data_toml
        cache = TokenCache(self._attest, margin_s=limits.kbs_token_refresh_margin_s, clock=clock)
        super().__init__(http, cache, limits)

    @property
    def tee_key(self) -> TeeKeyPair:
        """This client's TEE key pair."""
        return self._tee_key

    def _post(self, step: Step, body: bytes, headers: dict[str, str] | None = None) -> HttpAnswer:
        answer = self._http.request(
            step,
            "POST",
            f"{API_PREFIX}/{step}",
            body=body,
            headers=headers,
            max_bytes=self._limits.kbs_max_response_bytes,
        )
        if answer.status != _OK:
            raise status_error(step, answer.status, answer.untrusted_body, f"{self._http.base_url}", self._limits)
        return answer

    def _attest(self) -> Credentials:
        """One RCAR handshake (called by the token cache, under its lock)."""
        handshake = RcarHandshake(
            self._evidence.tee, self._tee_key.public_jwk(), init_data_toml=self._init_data_toml, limits=self._limits
        )
        challenge = self._post(Step.AUTH, handshake.auth_request())
        cookie = challenge.untrusted_session_cookie
        if cookie is None:
            msg = f"KBS auth {self._http.base_url}: the challenge came without a {SESSION_COOKIE} cookie"
            raise KbsProtocolError(msg, step=str(Step.AUTH))
        report_data = handshake.receive_challenge(challenge.untrusted_body)
        evidence = self._evidence.get_evidence(report_data)
        answer = self._post(Step.ATTEST, handshake.attest_request(evidence), {"Cookie": f"{SESSION_COOKIE}={cookie}"})
        token: AttestationToken = handshake.receive_token(answer.untrusted_body)
        _logger.info(
            "attested to KBS %s as %s (token exp %s)", self._http.base_url, self._evidence.tee, token.untrusted_exp
        )
        return Credentials(token, self._tee_key)


class PassportKbsClient(_ResourceClient):
    """Passport-mode KBS client: token and TEE key come from a :class:`TokenProvider` (the AA)."""

    def __init__(
        self,
        url: str,
        provider: TokenProvider,
        *,
        ca_cert_pem: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a client that asks ``provider`` for credentials when the cached token is stale or refused.

        Raises:
            ConfigError: malformed URL or CA certificate.
        """
        http = KbsHttp(url, ca_cert_pem=ca_cert_pem, limits=limits)
        cache = TokenCache(provider.get_kbs_credentials, margin_s=limits.kbs_token_refresh_margin_s, clock=clock)
        super().__init__(http, cache, limits)


class AsyncKbsClient:
    """asyncio facade over a sync client: calls run in worker threads and share its cache lock.

    N concurrent ``await get_token()`` calls on a cold cache therefore cause one attestation.
    """

    def __init__(self, client: _ResourceClient) -> None:
        """Wrap ``client`` (a :class:`KbsClient` or :class:`PassportKbsClient`)."""
        self._client = client

    async def get_token(self) -> Credentials:
        """See :meth:`KbsClient.get_token`."""
        return await asyncio.to_thread(self._client.get_token)

    async def get_resource(self, uri: ResourceUri) -> bytes:
        """See :meth:`KbsClient.get_resource`."""
        return await asyncio.to_thread(self._client.get_resource, uri)
