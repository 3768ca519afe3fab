"""google.rpc.Code, the status codes carried by ttrpc responses (specs/ttrpc.md §6)."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """The 17 google.rpc status codes, with their wire values."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    """``Code`` name of ``code``, or ``code <n>`` for a value outside the enum (a peer may send any int32)."""
    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"
