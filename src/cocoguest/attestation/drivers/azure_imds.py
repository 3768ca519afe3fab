"""The two Azure Instance Metadata Service calls the Azure attesters make.

* VCEK (az-snp-vtpm): ``GET {base}/metadata/THIM/amd/certification`` with ``Metadata: true``; the answer is
  ``{"vcekCert": PEM, "certificateChain": PEM}`` and the evidence carries the VCEK as DER.
* TD quote (az-tdx-vtpm): ``POST {base}/acc/tdquote`` with ``Metadata: true`` and the JSON body
  ``{"report": base64url-nopad(TD report)}``; the answer is ``{"quote": base64url(TD quote)}``.

(Learned from kinvolk/azure-cvm-tooling ``az-snp-vtpm/src/imds.rs`` and ``az-tdx-vtpm/src/imds.rs``.) The base
URL is ``http://169.254.169.254`` unless the caller passes another (tests use a fake IMDS on loopback).

Invariants:
    * Every call is bounded: ``Limits.azure_imds_timeout_s`` from connect to last byte, and an answer over
      ``Limits.azure_imds_max_response_bytes`` is refused (a declared larger one before any of it is read).
    * No redirects, no proxies or certificates from the environment (the IMDS is link-local).
    * Every failure is an :class:`ImdsError` naming the IMDS call and its URL.
    * SECURITY: what the IMDS returns is not trusted here; the verifier checks the VCEK chain and the TD quote.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Final

import httpx

from cocoguest.attestation.http_answer import read_capped_answer
from cocoguest.crypto.sigstore_crypto import pem_blocks
from cocoguest.errors import ImdsError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_IMDS_URL: Final = "http://169.254.169.254"
VCEK_PATH: Final = "/metadata/THIM/amd/certification"
TD_QUOTE_PATH: Final = "/acc/tdquote"
_ERROR_TEXT_CHARS: Final = 200


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ImdsClient:
    """The Azure IMDS at ``base_url`` (see the module docstring)."""

    def __init__(
        self,
        base_url: str = DEFAULT_IMDS_URL,
        *,
        limits: Limits = DEFAULT_LIMITS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._limits = limits
        self._transport = transport

    def _call(self, call: str, method: str, path: str, body: bytes | None = None) -> dict[str, object]:
        url = self.base_url + path
        what = f"Azure IMDS {call} ({method} {url})"
        limits = self._limits
        cap = limits.azure_imds_max_response_bytes
        deadline = time.monotonic() + limits.azure_imds_timeout_s
        headers = {"Metadata": "true", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            with (
                httpx.Client(
                    timeout=limits.azure_imds_timeout_s,
                    follow_redirects=False,
                    trust_env=False,
                    transport=self._transport,
                ) as client,
                client.stream(method, url, content=body, headers=headers) as response,
            ):
                answer = read_capped_answer(
                    response, cap=cap, deadline=deadline, what=what, too_large=ImdsError, too_slow=ImdsError
                )
                status = response.status_code
        except httpx.HTTPError as e:
            msg = f"{what}: {type(e).__name__}: {e}"
            raise ImdsError(msg, retryable=True) from e
        if status != httpx.codes.OK:
            text = answer[:_ERROR_TEXT_CHARS].decode("utf-8", errors="replace")
            msg = f"{what}: HTTP {status}: {' '.join(text.split())}"
            raise ImdsError(msg, retryable=status >= httpx.codes.INTERNAL_SERVER_ERROR)
        # SECURITY: the one strict loader (depth, number size, duplicates), never a traceback on hostile JSON.
        document = loads(answer, f"{what}: the answer is not JSON", ImdsError, limits=self._limits)
        if not isinstance(document, dict):
            msg = f"{what}: the answer is not a JSON object"
            raise ImdsError(msg)
        return document

    @staticmethod
    def _field(document: dict[str, object], name: str, what: str) -> str:
        value = document.get(name)
        if not isinstance(value, str) or not value:
            msg = f"{what}: the answer has no string {name!r}"
            raise ImdsError(msg)
        return value

    def vcek(self) -> bytes:
        """The VCEK certificate (DER) of this SNP CVM's chip.

        Raises:
            ImdsError: the call failed, or ``vcekCert`` is missing or not one PEM certificate.
        """
        what = f"Azure IMDS VCEK (GET {self.base_url}{VCEK_PATH})"
        pem = self._field(self._call("VCEK", "GET", VCEK_PATH), "vcekCert", what)
        try:
            blocks = pem_blocks(pem.encode("utf-8"), "vcekCert")
        except ValueError as e:
            msg = f"{what}: {e}"
            raise ImdsError(msg) from e
        if [label for label, _ in blocks] != ["CERTIFICATE"]:
            msg = f"{what}: vcekCert is not one PEM CERTIFICATE block"
            raise ImdsError(msg)
        return blocks[0][1]

    def td_quote(self, td_report: bytes) -> bytes:
        """A TD quote for ``td_report`` (1024 bytes), made by the host's quoting enclave.

        Raises:
            ImdsError: the call failed, or ``quote`` is missing or not base64url.
        """
        what = f"Azure IMDS TD quote (POST {self.base_url}{TD_QUOTE_PATH})"
        report = base64.urlsafe_b64encode(td_report).rstrip(b"=").decode("ascii")
        body = json.dumps({"report": report}, separators=(",", ":")).encode()
        quote = self._field(self._call("TD quote", "POST", TD_QUOTE_PATH, body), "quote", what)
        try:
            return _b64url_decode(quote)
        except (binascii.Error, ValueError) as e:
            msg = f"{what}: quote is not base64url"
            raise ImdsError(msg) from e
