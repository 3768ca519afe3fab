"""Remove a bundle written by a pull: unmount its rootfs if it is an overlay mount, then delete the directory.

Invariants:
    * SECURITY: only a directory that looks like a bundle is deleted (its entries are among ``rootfs``,
      ``config.json`` and the overlay state dir, and ``rootfs`` exists), so a mistyped path such as ``/`` or a
      home directory is refused, not emptied.
    * Nothing is deleted through a mount point: the rootfs is unmounted first, and a bundle with any other mount
      below it (a runtime's ``/proc``, a bind mount) is refused.
    * Deletion is fd-relative and never follows a symlink.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, ResourceNotFoundError, TransportError
from cocoguest.image.bundle.rootfs import unmount
from cocoguest.image.bundle.staging import mounts_under
from cocoguest.image.bundle.writer import CONFIG_FILE, ROOTFS_DIR
from cocoguest.image.fs.safe_ops import DIR_FLAGS, remove_at

OVERLAY_STATE_DIR: Final = ".cocoguest-overlay"
"""Inside the bundle: the overlay's upper and work dirs (see :mod:`cocoguest.image.pull`)."""
_BUNDLE_ENTRIES: Final = frozenset({ROOTFS_DIR, CONFIG_FILE, OVERLAY_STATE_DIR})


def remove_bundle(bundle: Path) -> None:
    """Unmount ``bundle/rootfs`` if it is mounted, then delete ``bundle``.

    Raises:
        ResourceNotFoundError: ``bundle`` does not exist.
        ConfigError: ``bundle`` is not a bundle, or something else is mounted below it.
        TransportError: the unmount or the deletion failed.
    """
    try:
        names = set(os.listdir(bundle)) if not bundle.is_symlink() else None
    except FileNotFoundError as e:
        msg = f"bundle {bundle}: does not exist"
        raise ResourceNotFoundError(msg) from e
    except OSError as e:
        msg = f"bundle {bundle}: cannot read: {e.strerror}"
        raise (ConfigError if isinstance(e, NotADirectoryError) else TransportError)(msg) from e
    if names is None or ROOTFS_DIR not in names or not names <= _BUNDLE_ENTRIES:
        # SECURITY: refuse to delete a directory that is not a bundle.
        msg = f"bundle {bundle}: not a bundle (expected only {', '.join(sorted(_BUNDLE_ENTRIES))})"
        raise ConfigError(msg)
    rootfs = bundle / ROOTFS_DIR
    if os.path.ismount(rootfs):
        unmount(rootfs)
    others = mounts_under(bundle)
    if others:
        msg = f"bundle {bundle}: {others[0]} is mounted inside it; unmount it first"
        raise ConfigError(msg)
    try:
        parent_fd = os.open(bundle.parent, DIR_FLAGS)
        try:
            remove_at(parent_fd, bundle.name)
        finally:
            os.close(parent_fd)
    except OSError as e:
        msg = f"bundle {bundle}: cannot delete: {e.strerror or e}"
        raise TransportError(msg) from e
