"""Resources on disk, Trustee's legacy LocalFs layout: ``<dir_path>/<repo>/<type>/<tag>`` (kbs-protocol.md §13).

Names (trustee:kbs/src/plugins/implementations/resource/backend.rs): exactly three segments, each matching
``[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*`` in full. A segment therefore starts with a letter, digit, ``_`` or ``-`` (never
``.``, so never ``.`` or ``..``) and contains no ``/``.

Invariants:
    * SECURITY: every path is checked by :func:`parse_resource_path` before it touches the file system; the
      result is always inside ``dir_path``.
    * Writes are atomic: the bytes go to a temporary file in the target directory, are fsynced and renamed over
      the target; a reader sees the old or the new resource, never a torn one.
    * Reads are capped at ``Limits.devkbs_max_resource_bytes`` and take regular files only: a directory, FIFO,
      socket or device under the repository reads as "not found" (opened non-blocking, so a FIFO cannot hang
      the server's event loop).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Final

from cocoguest.errors import KbsApiError
from cocoguest.fileio import write_atomically
from cocoguest.limits import DEFAULT_LIMITS, Limits

_SEGMENT: Final = re.compile(r"[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*", re.ASCII)
_SEGMENTS: Final = 3
_GROWTH_CHUNK: Final = 64 * 1024


def parse_resource_path(untrusted_path: str) -> tuple[str, str, str]:
    """``(repo, type, tag)`` of ``repo/type/tag``.

    Raises:
        KbsApiError: not three valid segments (Trustee: ``PluginInternalError``, 401).
    """
    parts = untrusted_path.split("/")
    if len(parts) != _SEGMENTS or not all(_SEGMENT.fullmatch(p) for p in parts):
        shown = untrusted_path[:120]
        msg = f"Plugin internal error: invalid resource path {shown!r} (need repo/type/tag)"
        raise KbsApiError("PluginInternalError", msg)
    return parts[0], parts[1], parts[2]


def _read_capped(fd: int, cap: int) -> bytes:
    """The bytes of open regular file ``fd`` up to EOF, or ``cap + 1`` bytes if it is longer than ``cap``.

    Reads into buffers sized by ``fstat`` (not one of ``cap + 1`` bytes: allocating and zeroing megabytes for a
    32-byte key cost more than the rest of a GET); a file that grows while it is read is followed to EOF.

    Raises:
        IsADirectoryError: ``fd`` is not a regular file (a directory, FIFO, socket or device).
    """
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "not a regular file")
    want = min(status.st_size, cap) + 1
    chunks: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = os.read(fd, min(want, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = _GROWTH_CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ResourceStore:
    """The LocalFs resource repository under ``root``."""

    def __init__(self, root: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        """Use (and create) the directory ``root``."""
        self._root = root
        self._root_text = str(root)
        self._limits = limits
        root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        """The repository directory."""
        return self._root

    def _file(self, untrusted_path: str) -> Path:
        repo, kind, tag = parse_resource_path(untrusted_path)
        return self._root / repo / kind / tag

    def read(self, untrusted_path: str) -> bytes:
        """The bytes of resource ``repo/type/tag``.

        Raises:
            KbsApiError: invalid name, missing, or larger than the limit (``PluginInternalError``).
        """
        repo, kind, tag = parse_resource_path(untrusted_path)
        path = os.path.join(self._root_text, repo, kind, tag)  # a str join: pathlib's costs more than the read
        cap = self._limits.devkbs_max_resource_bytes
        try:
            # O_NONBLOCK: a FIFO planted in the repository must not hang the server's only thread.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                data = _read_capped(fd, cap)
            finally:
                os.close(fd)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            msg = f"Plugin internal error: resource {untrusted_path} not found"
            raise KbsApiError("PluginInternalError", msg) from e
        except OSError as e:
            msg = f"Plugin internal error: resource {untrusted_path}: {e.strerror}"
            raise KbsApiError("PluginInternalError", msg) from e
        if len(data) > cap:
            msg = f"Plugin internal error: resource {untrusted_path} is larger than {cap} bytes"
            raise KbsApiError("PluginInternalError", msg)
        return data

    def write(self, untrusted_path: str, data: bytes) -> None:
        """Store ``data`` as resource ``repo/type/tag``, atomically.

        Raises:
            KbsApiError: invalid name, too large, or the write failed (``PluginInternalError``).
        """
        path = self._file(untrusted_path)
        cap = self._limits.devkbs_max_resource_bytes
        if len(data) > cap:
            msg = f"Plugin internal error: resource {untrusted_path} is larger than {cap} bytes"
            raise KbsApiError("PluginInternalError", msg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as e:
            msg = f"Plugin internal error: writing resource {untrusted_path}: {e.strerror}"
            raise KbsApiError("PluginInternalError", msg) from e

    def delete(self, untrusted_path: str) -> None:
        """Remove resource ``repo/type/tag``.

        Raises:
            KbsApiError: invalid name or missing (Trustee: 401 ``PluginInternalError``).
        """
        path = self._file(untrusted_path)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            msg = f"Plugin internal error: resource {untrusted_path} not found"
            raise KbsApiError("PluginInternalError", msg) from e
        except OSError as e:
            msg = f"Plugin internal error: deleting resource {untrusted_path}: {e.strerror}"
            raise KbsApiError("PluginInternalError", msg) from e
