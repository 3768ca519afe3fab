"""Replacing a whole file atomically: readers see the old content or the new, never a part of it.

Invariants:
    * The data goes to a temporary file in the same directory (created ``O_EXCL`` by :func:`tempfile.mkstemp`,
      given ``mode`` before any byte is written), is fsynced, then renamed over the target.
    * On any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, temp_prefix: str = ".tmp-") -> None:
    """Make ``path`` hold ``data`` (file mode ``mode``); its directory must exist.

    ``temp_prefix`` names the temporary file, so that a reader of the directory can skip one in progress.

    Raises:
        OSError: the directory is not writable, the disk is full, ...; the caller names what failed.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
