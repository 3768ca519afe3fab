"""The admin client of a Trustee-compatible KBS (Trustee kbs-client ``config ...`` verbs, kbs-protocol.md §11.3, §12).

Each call is one HTTP request with ``Authorization: Bearer <EdDSA JWT>`` when an Ed25519 private key is given
(legacy Trustee admin auth, as coco-keyprovider uses it): header ``{"alg":"EdDSA","typ":"JWT"}``, claims
``iat``, ``nbf``, ``exp`` = iat + 2 hours.

Invariants:
    * Policy uploads are base64url WITHOUT padding (Trustee refuses padded input).
    * A non-200 answer raises :class:`KbsStatusError` naming the verb, the status and the KBS's ``{type, detail}``.
    * Answers are size-capped (``Limits.kbs_max_response_bytes``).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Final

import httpx

from cocoguest.crypto.jws import Ed25519PrivateKey, b64u, sign_eddsa
from cocoguest.errors import KbsStatusError, TransportError
from cocoguest.kbs.http import check_kbs_url
from cocoguest.kbs.protocol import API_PREFIX, parse_error_information
from cocoguest.limits import DEFAULT_LIMITS, Limits

ADMIN_TOKEN_LIFETIME_S: Final = 7200
"""kbs-client's legacy admin token lifetime (2 hours)."""


class KbsAdminClient:
    """Admin calls to the KBS at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: Ed25519PrivateKey | None = None,
        ca_cert: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Talk to ``url``; sign admin tokens with ``auth_key`` if given; trust ``ca_cert`` (a PEM file) for HTTPS.

        Raises:
            ConfigError: ``url`` is not an http(s) URL.
        """
        self._url = check_kbs_url(url)
        self._key = auth_key
        self._limits = limits
        verify: str | bool = ca_cert if ca_cert is not None else True
        self._http = httpx.Client(timeout=limits.kbs_read_timeout_s, verify=verify, trust_env=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, verb: str, method: str, path: str, content: bytes, content_type: str) -> bytes:
        headers = {"Content-Type": content_type}
        if self._key is not None:
            now = int(time.time())
            token = sign_eddsa(self._key, {"iat": now, "nbf": now, "exp": now + ADMIN_TOKEN_LIFETIME_S})
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self._url}{API_PREFIX}/{path}"
        try:
            answer = self._http.request(method, url, content=content, headers=headers)
        except httpx.HTTPError as e:
            msg = f"KBS {verb}: {url}: {e}"
            raise TransportError(msg, retryable=isinstance(e, httpx.TransportError)) from e
        body = answer.content[: self._limits.kbs_max_response_bytes]
        if answer.status_code != 200:
            error_type, detail = parse_error_information(body, self._limits)
            said = ": ".join(p for p in (error_type, detail) if p) or "no error information"
            msg = f"KBS {verb} {path}: HTTP {answer.status_code} ({said})"
            raise KbsStatusError(msg, step=verb, status=answer.status_code, error_type=error_type, detail=detail)
        return body

    def set_resource(self, path: str, data: bytes) -> None:
        """Store resource ``repo/type/tag``."""
        self._request("set-resource", "POST", f"resource/{path}", data, "application/octet-stream")

    def delete_resource(self, path: str) -> None:
        """Delete resource ``repo/type/tag``."""
        self._request("delete-resource", "DELETE", f"resource/{path}", b"", "application/octet-stream")

    def set_resource_policy(self, rego: str) -> None:
        """Replace the resource policy."""
        body = json.dumps({"policy": b64u(rego.encode("utf-8"))}).encode("utf-8")
        self._request("set-resource-policy", "POST", "resource-policy", body, "application/json")

    def set_attestation_policy(self, rego: str, policy_id: str = "default_cpu", policy_type: str = "rego") -> None:
        """Install attestation policy ``policy_id``."""
        document = {"type": policy_type, "policy_id": policy_id, "policy": b64u(rego.encode("utf-8"))}
        self._request(
            "set-attestation-policy", "POST", "attestation-policy", json.dumps(document).encode(), "application/json"
        )

    def set_sample_reference_value(self, name: str, value: object) -> None:
        """Register a reference value through the RVPS ``sample`` extractor."""
        payload = base64.b64encode(json.dumps({name: value}).encode("utf-8")).decode("ascii")
        message = {"version": "0.1.0", "type": "sample", "payload": payload}
        self._request(
            "set-sample-reference-value", "POST", "reference-value", json.dumps(message).encode(), "application/json"
        )
