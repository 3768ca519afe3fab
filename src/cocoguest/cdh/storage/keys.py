"""The key of a secure mount: from a sealed secret or ``kbs://`` (through the CDH's fetcher), ``file://``, or random.

Invariants:
    * ``sealed.…`` and ``kbs://…`` keys are obtained only through the ``fetch_key`` callable the CDH passes in
      (it unseals / fetches from the KBS); this module does no network IO.
    * ``file://`` keys are read with ``O_NOFOLLOW`` on the last component, must be regular files, and are
      capped at ``Limits.secure_mount_max_key_bytes``; an empty key is refused.
    * Absent key: 4096 random bytes from ``secrets`` (as upstream; the volume cannot be reopened later).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote, urlsplit

from cocoguest.errors import SecureMountError, SecureMountOptionError
from cocoguest.limits import DEFAULT_LIMITS, Limits

KeyFetcher = Callable[[str], bytes]
"""``fetch_key(uri) -> key bytes`` for ``sealed.…`` and ``kbs://…`` keys (the CDH wires unseal / GetResource)."""

RANDOM_KEY_BYTES: Final = 4096


def resolve_key(key: str | None, fetch_key: KeyFetcher, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The key bytes for the ``key`` option.

    Raises:
        SecureMountOptionError: a malformed ``file://`` URI.
        SecureMountError: the key cannot be read or is empty or too large (names the key source).
        CocoError: whatever ``fetch_key`` raises (unseal or KBS errors), unchanged.
    """
    if key is None:
        return secrets.token_bytes(RANDOM_KEY_BYTES)
    if key.startswith("file://"):
        data = _read_file_key(key, limits)
        where = key
    else:
        data = fetch_key(key)
        where = "the sealed secret" if key.startswith("sealed.") else key
    if not data:
        msg = f"secure mount key from {where} is empty"
        raise SecureMountError(msg)
    if len(data) > limits.secure_mount_max_key_bytes:
        msg = f"secure mount key from {where}: over {limits.secure_mount_max_key_bytes} bytes"
        raise SecureMountError(msg)
    return data


def _read_file_key(uri: str, limits: Limits) -> bytes:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or parts.query or parts.fragment:
        msg = f"secure mount option 'key': {uri[:80]!r} is not file:///absolute/path"
        raise SecureMountOptionError(msg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        msg = f"secure mount key {uri}: cannot open: {e.strerror}"
        raise SecureMountError(msg) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        msg = f"secure mount key {uri}: not a regular file"
        raise SecureMountError(msg)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limits.secure_mount_max_key_bytes + 1)
    if len(data) > limits.secure_mount_max_key_bytes:
        msg = f"secure mount key {uri}: over {limits.secure_mount_max_key_bytes} bytes"
        raise SecureMountError(msg)
    return data
