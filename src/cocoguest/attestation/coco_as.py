"""``GetToken("coco_as")``: evidence to a CoCo attestation service, its answer back verbatim.

Protocol (guest-components.md §4.1): evidence for EMPTY runtime data, then ``POST {url}/attestation`` with
``{"verification_requests":[{"tee":"<tee>","evidence":"<base64url-nopad(evidence JSON)>"}],"policy_ids":[]}``;
the token is the response text, returned as is.

Invariants:
    * The answer is read streaming under ``Limits.aa_coco_as_max_response_bytes`` (a declared larger answer is
      refused before any of it is read) and within ``Limits.kbs_request_deadline_s`` for the whole request.
    * Any status but 200 is an :class:`AttestationError` naming the URL, the status and the start of the answer.
    * No redirects, no proxies from the environment, no cookies.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Final

import httpx

from cocoguest.attestation.http_answer import read_capped_answer
from cocoguest.errors import AttestationError, TransportError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_ERROR_TEXT_CHARS: Final = 200
"""Characters of an error answer quoted in the message (not a limit on what is read)."""


def attestation_request(tee: str, evidence: bytes) -> bytes:
    """The JSON body of ``POST /attestation`` for one piece of evidence."""
    encoded = base64.urlsafe_b64encode(evidence).rstrip(b"=").decode("ascii")
    body = {"verification_requests": [{"tee": tee, "evidence": encoded}], "policy_ids": []}
    return json.dumps(body, separators=(",", ":")).encode()


def request_token(
    url: str,
    tee: str,
    evidence: bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
    transport: httpx.BaseTransport | None = None,
) -> bytes:
    """The attestation service's token for ``evidence`` (its answer, verbatim).

    Raises:
        AttestationError: a status other than 200, or an answer over the size cap.
        TransportError: the service cannot be reached, or the deadline passed.
    """
    endpoint = f"{url.rstrip('/')}/attestation"
    deadline = time.monotonic() + limits.kbs_request_deadline_s
    timeout = httpx.Timeout(limits.kbs_read_timeout_s, connect=limits.kbs_connect_timeout_s)
    cap = limits.aa_coco_as_max_response_bytes
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, transport=transport) as client,
            client.stream(
                "POST",
                endpoint,
                content=attestation_request(tee, evidence),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            answer = read_capped_answer(
                response,
                cap=cap,
                deadline=deadline,
                what=f"GetToken(coco_as) {endpoint}",
                too_large=AttestationError,
                too_slow=TransportError,
            )
            status = response.status_code
    except httpx.HTTPError as e:
        msg = f"GetToken(coco_as) {endpoint}: {type(e).__name__}: {e}"
        raise TransportError(msg) from e
    if status != httpx.codes.OK:
        text = answer[:_ERROR_TEXT_CHARS].decode("utf-8", errors="replace")
        msg = f"GetToken(coco_as) {endpoint}: HTTP {status}: {' '.join(text.split())}"
        raise AttestationError(msg)
    return answer
