"""Reading a small HTTP answer under a byte cap and a deadline (the AA's calls to an attestation service and the
Azure IMDS).

Invariants:
    * A declared ``Content-Length`` over the cap is refused before any byte is read; a streamed answer is refused
      as soon as it passes the cap, and when the deadline passes between two chunks.
    * The raw bytes are read (``iter_raw``): nothing is decompressed, so the cap is a cap on what is held.
    * Errors are the caller's classes, with ``what`` (the call and its URL) at the start of the message.
"""

from __future__ import annotations

import time

import httpx

from cocoguest.errors import CocoError


def read_capped_answer(
    response: httpx.Response,
    *,
    cap: int,
    deadline: float,
    what: str,
    too_large: type[CocoError],
    too_slow: type[CocoError],
) -> bytes:
    """The answer's body, at most ``cap`` bytes, complete before ``deadline`` (``time.monotonic``).

    Raises:
        too_large: the answer declares or sends more than ``cap`` bytes.
        too_slow: ``deadline`` passed before the last byte.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        msg = f"{what}: an answer of {declared} bytes is over the {cap}-byte limit"
        raise too_large(msg)
    answer = bytearray()
    for chunk in response.iter_raw():
        answer += chunk
        if len(answer) > cap:
            msg = f"{what}: the answer is over the {cap}-byte limit"
            raise too_large(msg)
        if time.monotonic() > deadline:
            msg = f"{what}: no answer within the deadline"
            raise too_slow(msg)
    return bytes(answer)
