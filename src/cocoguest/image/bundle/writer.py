"""Write an OCI runtime bundle: ``BUNDLE/rootfs`` (overlay mount or merged copy) and ``BUNDLE/config.json``.

Two ways in: :func:`write_bundle` does all the steps below from finished layer directories; or
:func:`prepare_bundle` (steps 1-2 and an empty ``rootfs``), then the caller fills the rootfs itself (e.g. merging
each layer as soon as it is pulled), then :func:`finish_bundle` (steps 4-5), or :meth:`PreparedBundle.discard`
on failure. :func:`check_bundle` is steps 1-2 without creating anything, for callers that want to fail early.

Steps (DESIGN.md §2 step 6):

1. Check the image config (a dry-run conversion) before anything is created, so a malformed config or an
   image without a command costs no mount or copy.
2. Refuse an existing non-empty bundle directory; create missing parents and a private (0700), locked build
   directory beside the bundle (:mod:`~cocoguest.image.bundle.staging`), removing stale ones of killed builds.
3. ``rootfs``: overlay mount of the layer dirs (``overlay``), a merged copy by the caller's ``merge``
   (``copy``), or overlay with a logged fallback to copy when the kernel refuses (``auto``).
4. Resolve ``Config.User`` against the new rootfs (``users.resolve_user``, symlink-safe).
5. Write ``config.json`` (indent 2) to a temporary file in the bundle and rename it into place.
6. Rename the build directory to the bundle path.

Invariants:
    * An existing non-empty bundle is never touched: the refusal happens before any write.
    * The bundle appears complete or not at all: it is built beside its target and renamed into place last, so a
      killed build leaves the target as it was (absent or an empty directory) and a retry succeeds.
    * SECURITY: the bundle directory is mode 0700 (the rootfs holds the image's setuid binaries and devices).
    * ``config.json`` appears complete or not at all (temp file + ``rename``), and only after the rootfs.
    * On any failure (also KeyboardInterrupt) the rootfs is unmounted if it was mounted, and everything this
      call created is removed: the bundle's contents, the bundle dir and parents it created (a pre-existing
      empty bundle dir is left as it was), and the overlay upper/work dirs. A rootfs that cannot be unmounted
      is left in place rather than deleted through the mount. With ``prepare_bundle`` the same holds once the
      caller calls ``discard`` (``finish_bundle`` calls it itself when it fails).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cocoguest.errors import ConfigError, TransportError, UnsupportedError
from cocoguest.image.bundle.rootfs import UPPER_DIR, WORK_DIR, mount_overlay, unmount
from cocoguest.image.bundle.runtime_config import ProcessUser, config_user, runtime_config
from cocoguest.image.bundle.staging import BundleStaging
from cocoguest.image.bundle.users import resolve_user
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

ROOTFS_DIR: Final = "rootfs"
CONFIG_FILE: Final = "config.json"

Snapshotter = Literal["overlay", "copy", "auto"]


@dataclass(frozen=True, slots=True)
class BundleResult:
    """A written bundle.

    Attributes:
        bundle: The bundle directory.
        rootfs: ``bundle/rootfs``.
        snapshotter: How the rootfs was made (``auto`` resolves to one of the two).
        config: The runtime config written to ``config.json``.
    """

    bundle: Path
    rootfs: Path
    snapshotter: Literal["overlay", "copy"]
    config: dict[str, object]


class _Undo:
    """What ``write_bundle`` created, to remove on failure (in reverse order)."""

    def __init__(self) -> None:
        self.mounted: Path | None = None
        self.paths: list[Path] = []  # files and dirs we created, parents before children
        self.staging: BundleStaging | None = None

    def run(self) -> None:
        if self.mounted is not None:
            try:
                unmount(self.mounted)
            except TransportError:
                _logger.exception("bundle cleanup: cannot unmount %s; leaving it in place", self.mounted)
                return
            self.mounted = None
        try:
            self._remove()
        finally:
            if self.staging is not None:
                self.staging.release()

    def _remove(self) -> None:
        for path in reversed(self.paths):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                _logger.exception("bundle cleanup: cannot remove %s", path)


def _check_bundle_dir(bundle: Path) -> bool:
    """Whether ``bundle`` exists (as an empty directory); nothing is created.

    Raises:
        ConfigError: the bundle exists and is not an empty directory.
        TransportError: it cannot be inspected.
    """
    try:
        if bundle.is_dir():
            # SECURITY: a non-empty bundle (maybe another container's) is refused before anything is written.
            if any(bundle.iterdir()):
                msg = f"bundle {bundle}: directory exists and is not empty"
                raise ConfigError(msg)
            return True
        if bundle.exists() or bundle.is_symlink():
            msg = f"bundle {bundle}: exists and is not a directory"
            raise ConfigError(msg)
    except OSError as e:
        msg = f"bundle {bundle}: cannot inspect: {e.strerror}"
        raise TransportError(msg) from e
    return False


def _prepare_bundle_dir(bundle: Path, undo: _Undo) -> BundleStaging:
    """Check ``bundle`` (absent or empty), create missing parents and the build directory beside it.

    Raises:
        ConfigError: the bundle exists and is not an empty directory.
        TransportError: a directory cannot be created.
    """
    if not _check_bundle_dir(bundle):
        try:
            missing = [parent for parent in bundle.parents if not parent.exists()]
            for directory in reversed(missing):
                directory.mkdir(mode=0o755)
                undo.paths.append(directory)
        except OSError as e:
            msg = f"bundle {bundle}: cannot create: {e.strerror}"
            raise TransportError(msg) from e
    staging = BundleStaging.create(bundle)
    undo.staging = staging
    undo.paths.append(staging.path)
    return staging


def _overlay_dirs(work_root: Path, undo: _Undo) -> None:
    """Register the overlay dirs ``mount_overlay`` will create under ``work_root`` for cleanup."""
    if not work_root.exists():
        undo.paths.append(work_root)
        return
    for name in (UPPER_DIR, WORK_DIR):
        if not (work_root / name).exists():
            undo.paths.append(work_root / name)


def _write_config(bundle: Path, config: dict[str, object], undo: _Undo) -> None:
    data = (json.dumps(config, indent=2) + "\n").encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{CONFIG_FILE}.", suffix=".tmp", dir=bundle)
    tmp = Path(tmp_name)
    undo.paths.append(tmp)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), 0o644)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        final = bundle / CONFIG_FILE
        undo.paths.append(final)
        tmp.replace(final)
    except OSError as e:
        msg = f"bundle {bundle}: cannot write {CONFIG_FILE}: {e.strerror}"
        raise TransportError(msg) from e


def check_bundle(
    bundle: Path, image_config: Mapping[str, object], *, annotations: Mapping[str, str] | None = None
) -> None:
    """Steps 1-2 without writing: the image config converts and ``bundle`` is absent or an empty directory.

    For failing before any layer is pulled; :func:`prepare_bundle` and :func:`write_bundle` check again.

    Raises:
        ConfigError: the bundle exists and is not empty.
        ProtocolError: the image config is malformed or has no command.
        UnsupportedError: the image OS is not Linux.
        TransportError: the bundle path cannot be inspected.
    """
    config_user(image_config)
    runtime_config(image_config, ProcessUser(0, 0, (0,), None), annotations=annotations)
    _check_bundle_dir(bundle)


class PreparedBundle:
    """A bundle directory with an empty ``rootfs`` made by :func:`prepare_bundle`, not yet finished.

    Attributes:
        bundle: The bundle directory (it appears only when the bundle is finished).
        rootfs: ``rootfs`` of the hidden build directory beside ``bundle``: an empty directory for the caller to
            fill; it becomes ``bundle/rootfs`` when finished.
    """

    def __init__(self, bundle: Path, rootfs: Path, undo: _Undo, staging: BundleStaging) -> None:
        self.bundle = bundle
        self.rootfs = rootfs
        self._staging = staging
        self._undo = undo
        self._done = False

    def discard(self) -> None:
        """Remove everything :func:`prepare_bundle` created (and anything since put in it); idempotent.

        A pre-existing empty bundle directory is left as it was.
        """
        if not self._done:
            self._done = True
            self._undo.run()


def _make_bundle(
    bundle: Path, image_config: Mapping[str, object], annotations: Mapping[str, str] | None
) -> tuple[_Undo, BundleStaging]:
    """Steps 1-2 and an empty ``rootfs`` in the build directory; on failure nothing is left."""
    # (1) check the config before doing anything expensive or visible.
    config_user(image_config)
    runtime_config(image_config, ProcessUser(0, 0, (0,), None), annotations=annotations)
    undo = _Undo()
    try:
        # (2) the bundle directory.
        staging = _prepare_bundle_dir(bundle, undo)
        rootfs = staging.path / ROOTFS_DIR
        try:
            rootfs.mkdir(mode=0o755)
        except OSError as e:
            msg = f"bundle {bundle}: cannot create {ROOTFS_DIR}: {e.strerror}"
            raise TransportError(msg) from e
    except BaseException:
        undo.run()
        raise
    return undo, staging


def prepare_bundle(
    bundle: Path, image_config: Mapping[str, object], *, annotations: Mapping[str, str] | None = None
) -> PreparedBundle:
    """Steps 1-2: check the image config, then create ``bundle`` and an empty ``bundle/rootfs``.

    The caller fills the rootfs (a copy, never a mount), then calls :func:`finish_bundle`, or
    :meth:`PreparedBundle.discard` if anything fails (also KeyboardInterrupt).

    Args:
        bundle: The bundle directory: must not exist, or be an empty directory.
        image_config: The parsed image config JSON (untrusted); checked here, used again by ``finish_bundle``.
        annotations: As for :func:`write_bundle` (checked here with the config).

    Raises:
        ConfigError: the bundle exists and is not empty.
        ProtocolError: the image config is malformed or has no command.
        UnsupportedError: the image OS is not Linux.
        TransportError: a filesystem operation failed; nothing is left behind.
    """
    undo, staging = _make_bundle(bundle, image_config, annotations)
    return PreparedBundle(bundle, staging.path / ROOTFS_DIR, undo, staging)


def _finish(
    staging: BundleStaging,
    image_config: Mapping[str, object],
    annotations: Mapping[str, str] | None,
    undo: _Undo,
    limits: Limits,
) -> dict[str, object]:
    # (4) the user, resolved inside the new rootfs; (5) config.json, atomically; (6) the bundle, atomically.
    user = resolve_user(config_user(image_config), staging.path / ROOTFS_DIR, limits=limits)
    config = runtime_config(image_config, user, annotations=annotations)
    _write_config(staging.path, config, undo)
    staging.publish()
    return config


def finish_bundle(
    prepared: PreparedBundle,
    image_config: Mapping[str, object],
    *,
    annotations: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> BundleResult:
    """Steps 4-5 on a bundle whose rootfs the caller has filled: resolve ``Config.User``, write ``config.json``.

    On any failure but ``ValueError`` the bundle is discarded before the error propagates.

    Args:
        prepared: From :func:`prepare_bundle`, not discarded or finished before.
        image_config: The same image config as given to ``prepare_bundle``.
        annotations: The same annotations as given to ``prepare_bundle``.

    Returns:
        The bundle (snapshotter ``copy``).

    Raises:
        ConfigError: unknown image user or group.
        TransportError: a filesystem operation failed.
        ValueError: ``prepared`` was already discarded or finished.
    """
    if prepared._done:
        msg = f"bundle {prepared.bundle}: already finished or discarded"
        raise ValueError(msg)
    try:
        config = _finish(prepared._staging, image_config, annotations, prepared._undo, limits)
    except BaseException:
        prepared.discard()
        raise
    prepared._done = True
    _logger.info("bundle %s written (copy rootfs)", prepared.bundle)
    rootfs = prepared.bundle / ROOTFS_DIR
    return BundleResult(bundle=prepared.bundle, rootfs=rootfs, snapshotter="copy", config=config)


def write_bundle(
    bundle: Path,
    layer_dirs: Sequence[Path],
    image_config: Mapping[str, object],
    *,
    snapshotter: Snapshotter,
    work_root: Path,
    merge: Callable[[Sequence[Path], Path], None],
    annotations: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> BundleResult:
    """Create an OCI runtime bundle from stored layer directories and an image config.

    Args:
        bundle: The bundle directory: must not exist, or be an empty directory.
        layer_dirs: The unpacked layer directories, lowest (base) layer first.
        image_config: The parsed image config JSON (untrusted).
        snapshotter: ``overlay``, ``copy``, or ``auto`` (overlay, else copy).
        work_root: Per-bundle directory for the overlay upper and work dirs; a path inside ``bundle`` is made
            inside the build directory (and so ends up at that path in the finished bundle).
        merge: Merges layer dirs (lowest first) into an existing empty directory, applying whiteouts.
        annotations: Extra annotations for ``config.json`` (they win over labels).
        limits: Caps on reading the image's user database (``max_user_db_bytes``, ``max_symlink_hops``).

    Returns:
        The bundle, its rootfs, the snapshotter used and the runtime config.

    Raises:
        ConfigError: the bundle exists and is not empty; unknown image user or group.
        ProtocolError: the image config is malformed or has no command.
        UnsupportedError: ``overlay`` was requested and is not available; the image OS is not Linux.
        TransportError: a filesystem operation failed.
    """
    # (1) and (2): checked config, build dir, empty rootfs.
    undo, staging = _make_bundle(bundle, image_config, annotations)
    rootfs = staging.path / ROOTFS_DIR
    if work_root.is_relative_to(bundle):
        work_root = staging.path / work_root.relative_to(bundle)
    try:
        # (3) the rootfs.
        used: Literal["overlay", "copy"] = "copy"
        if snapshotter in {"overlay", "auto"}:
            _overlay_dirs(work_root, undo)
            try:
                mount_overlay(layer_dirs, rootfs, work_root)
                undo.mounted = rootfs
                used = "overlay"
            except UnsupportedError as e:
                if snapshotter == "overlay":
                    raise
                _logger.info("bundle %s: overlay unavailable (%s); falling back to a merged copy", bundle, e)
        if used == "copy":
            merge(layer_dirs, rootfs)
        # (4) and (5).
        config = _finish(staging, image_config, annotations, undo, limits)
    except BaseException:
        undo.run()
        raise
    _logger.info("bundle %s written (%s rootfs)", bundle, used)
    return BundleResult(bundle=bundle, rootfs=bundle / ROOTFS_DIR, snapshotter=used, config=config)
