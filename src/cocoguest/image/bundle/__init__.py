"""OCI runtime bundles: ``rootfs`` (overlay mount or merged copy) and ``config.json`` from an image config.

Modules: ``runtime_config`` (pure image config -> runtime config), ``users`` (``Config.User`` resolved
safely inside the rootfs), ``rootfs`` (overlay mount/unmount), ``writer`` (the bundle, with cleanup;
whole, or prepared, filled by the caller and finished).
"""

from cocoguest.image.bundle.rootfs import mount_overlay, overlay_available, unmount
from cocoguest.image.bundle.runtime_config import ProcessUser, config_user, runtime_config
from cocoguest.image.bundle.users import resolve_user
from cocoguest.image.bundle.writer import (
    BundleResult,
    PreparedBundle,
    Snapshotter,
    check_bundle,
    finish_bundle,
    prepare_bundle,
    write_bundle,
)

__all__ = [
    "BundleResult",
    "PreparedBundle",
    "ProcessUser",
    "Snapshotter",
    "check_bundle",
    "config_user",
    "finish_bundle",
    "mount_overlay",
    "overlay_available",
    "prepare_bundle",
    "resolve_user",
    "runtime_config",
    "unmount",
    "write_bundle",
]
