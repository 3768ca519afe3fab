"""Image config JSON -> OCI runtime-spec ``config.json`` (pure; no IO).

The conversion follows the OCI image-spec ``conversion.md``:

* ``process.args`` = ``Config.Entrypoint`` + ``Config.Cmd``; ``process.env`` = ``Config.Env`` (plus a default
  ``PATH`` when the image sets none, and ``HOSTNAME`` when a hostname is given and the image sets none: we
  never add a variable whose name is in ``Config.Env``); ``process.cwd`` = ``Config.WorkingDir`` or ``/``.
* ``annotations`` = the implicit ``org.opencontainers.image.*`` annotations (os, architecture, variant,
  os.version, os.features, author, created, stopSignal, exposedPorts) < ``Config.Labels`` < the caller's
  ``annotations`` (later wins; conversion.md "Annotations": labels win over implicit annotations, externally
  provided inputs are unrestricted).
* each ``Config.Volumes`` entry becomes a tmpfs mount (image-rs options ``nosuid,noexec,nodev,relatime,rw``).
* ``process.user`` comes from a :class:`ProcessUser` resolved elsewhere (``users.resolve_user``).

Everything else is the runc/containerd default Linux spec: capabilities, rlimits, default mounts,
namespaces, masked and read-only paths, a deny-all device cgroup.

Decision: an image with neither ``Entrypoint`` nor ``Cmd`` is refused with :class:`ProtocolError`
("no command specified", as containerd): the runtime spec requires at least one ``args`` entry on Linux, so a
bundle without one could not be started by runc.

Invariants:
    * The input is untrusted: every field is type-checked and a wrong type raises :class:`ProtocolError`
      naming the field; a non-Linux image OS raises :class:`UnsupportedError`.
    * No string containing NUL reaches ``args``, ``env``, ``cwd`` or a mount destination.
    * The result is a fresh JSON-serialisable ``dict``; no input object is aliased into it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from cocoguest.errors import ProtocolError, UnsupportedError

OCI_RUNTIME_VERSION: Final = "1.1.0"
DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NOFILE: Final = 1024
"""RLIMIT_NOFILE soft and hard limit of the container process (runc's ``runc spec`` default)."""

# containerd's default capability set (oci/spec.go populateDefaultUnixSpec), = Docker's.
DEFAULT_CAPABILITIES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

NAMESPACES: Final = ("pid", "network", "ipc", "uts", "mount", "cgroup")

MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS: Final = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

VOLUME_TMPFS_OPTIONS: Final = ("nosuid", "noexec", "nodev", "relatime", "rw")

ANNOTATION_PREFIX: Final = "org.opencontainers.image."

_T = TypeVar("_T")
_JSON_NAMES: Final[Mapping[type, str]] = {str: "string", list: "array", dict: "object"}

# Top-level image config string fields -> annotation key suffix (conversion.md "Annotation Fields").
_TOP_LEVEL_ANNOTATIONS: Final = (
    ("os", "os"),
    ("architecture", "architecture"),
    ("variant", "variant"),
    ("os.version", "os.version"),
    ("author", "author"),
    ("created", "created"),
)

# Mount destinations that an image volume must not cover: a tmpfs over /proc or /sys would hide the
# masked and read-only paths above.
_PROTECTED_MOUNT_ROOTS: Final = ("/proc", "/sys")


@dataclass(frozen=True, slots=True)
class ProcessUser:
    """The resolved ``process.user`` of a container.

    Attributes:
        uid: User id.
        gid: Primary group id.
        additional_gids: Supplementary group ids (containerd lists the primary gid here too).
        username: The user name when known (informational; not written to a Linux config).
    """

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    username: str | None


def _default_mounts() -> list[dict[str, object]]:
    """The mounts of runc's default spec (``runc spec``), in mount order."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",  # noqa: S108  (a mount destination in the container)
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def _field(obj: Mapping[str, object], key: str, where: str, kind: type[_T]) -> _T | None:
    """Return ``obj[key]``: None when absent or null, else it must be a ``kind``."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        msg = (
            f"image config: field {where}{key} has the wrong type (want a JSON {_JSON_NAMES.get(kind, kind.__name__)})"
        )
        raise ProtocolError(msg)
    return value


def _string(obj: Mapping[str, object], key: str, where: str = "") -> str | None:
    return _field(obj, key, where, str)


def _no_nul(value: str, what: str) -> str:
    # SECURITY: a NUL would truncate the string at execve/mount time, so what runs differs from what is shown.
    if "\x00" in value:
        msg = f"image config: {what} contains a NUL character"
        raise ProtocolError(msg)
    return value


def _string_list(obj: Mapping[str, object], key: str, where: str = "Config.") -> list[str]:
    value = _field(obj, key, where, list)
    if value is None:
        return []
    result: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            msg = f"image config: field {where}{key}[{index}] must be a string"
            raise ProtocolError(msg)
        result.append(_no_nul(item, f"{where}{key}[{index}]"))
    return result


def _string_map(obj: Mapping[str, object], key: str, where: str = "Config.") -> dict[str, str]:
    value = _field(obj, key, where, dict)
    if value is None:
        return {}
    result: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            msg = f"image config: field {where}{key}[{name!r}] must map a string to a string"
            raise ProtocolError(msg)
        result[name] = item
    return result


def _object_keys(obj: Mapping[str, object], key: str, where: str = "Config.") -> list[str]:
    """Keys of a JSON object whose values must be objects (``Volumes``, ``ExposedPorts``: ``{"k": {}}``)."""
    value = _field(obj, key, where, dict)
    if value is None:
        return []
    keys: list[str] = []
    for name, item in value.items():
        if not isinstance(name, str) or not (item is None or isinstance(item, dict)):
            msg = f"image config: field {where}{key}[{name!r}] must map a string to an object"
            raise ProtocolError(msg)
        keys.append(name)
    return keys


def _args(config: Mapping[str, object]) -> list[str]:
    entrypoint = _string_list(config, "Entrypoint")
    cmd = _string_list(config, "Cmd")
    # conversion.md: if both are specified, Cmd is appended to Entrypoint.
    args = entrypoint + cmd
    if not args:
        msg = "image config: no command specified (Config.Entrypoint and Config.Cmd are both empty)"
        raise ProtocolError(msg)
    return args


def _env(config: Mapping[str, object], hostname: str | None) -> list[str]:
    env = _string_list(config, "Env")
    names: set[str] = set()
    for index, entry in enumerate(env):
        name, sep, _ = entry.partition("=")
        # runc refuses an entry without "=" or with an empty name ("invalid environment variable").
        if not sep or not name:
            msg = f"image config: field Config.Env[{index}] is not NAME=VALUE"
            raise ProtocolError(msg)
        names.add(name)
    # conversion.md note 1: we may add variables but never one whose name the image sets.
    if "PATH" not in names:
        env.append(DEFAULT_PATH)
    if hostname is not None and "HOSTNAME" not in names:
        env.append(f"HOSTNAME={hostname}")
    return env


def _cwd(config: Mapping[str, object]) -> str:
    cwd = _string(config, "WorkingDir", "Config.") or "/"
    _no_nul(cwd, "Config.WorkingDir")
    # The runtime spec requires an absolute cwd; runc refuses a relative one at start, so refuse it now.
    if not cwd.startswith("/"):
        msg = f"image config: Config.WorkingDir {cwd!r} is not an absolute path"
        raise ProtocolError(msg)
    return cwd


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _volume_mounts(config: Mapping[str, object]) -> list[dict[str, object]]:
    defaults = {str(mount["destination"]) for mount in _default_mounts()}
    destinations: set[str] = set()
    for raw in _object_keys(config, "Volumes"):
        _no_nul(raw, f"Config.Volumes[{raw!r}]")
        if not raw.startswith("/"):
            msg = f"image config: Config.Volumes entry {raw!r} is not an absolute path"
            raise ProtocolError(msg)
        destination = posixpath.normpath(raw)
        if destination.startswith("//"):  # POSIX normpath keeps a leading "//"
            destination = "/" + destination.lstrip("/")
        # SECURITY: a tmpfs over "/" would hide the image; over /proc or /sys it would hide the masked paths.
        if destination == "/" or any(_is_under(destination, root) for root in _PROTECTED_MOUNT_ROOTS):
            msg = f"image config: Config.Volumes entry {raw!r} would cover a system mount"
            raise ProtocolError(msg)
        if destination in defaults:
            continue  # /dev, /dev/shm, ...: already a fresh mount of the default set
        destinations.add(destination)
    # Parents before children (containerd sorts mounts by the number of path components).
    ordered = sorted(destinations, key=lambda path: (path.count("/"), path))
    return [
        {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": list(VOLUME_TMPFS_OPTIONS)}
        for path in ordered
    ]


def _annotations(
    image_config: Mapping[str, object], config: Mapping[str, object], extra: Mapping[str, str] | None
) -> dict[str, str]:
    result: dict[str, str] = {}
    for field_name, suffix in _TOP_LEVEL_ANNOTATIONS:
        value = _string(image_config, field_name)
        if value is not None:
            result[ANNOTATION_PREFIX + suffix] = value
    features = _string_list(image_config, "os.features", "")
    if features:
        result[ANNOTATION_PREFIX + "os.features"] = ",".join(features)
    stop_signal = _string(config, "StopSignal", "Config.")
    if stop_signal is not None:
        result[ANNOTATION_PREFIX + "stopSignal"] = stop_signal
    ports = _object_keys(config, "ExposedPorts")
    if ports:
        # conversion.md "Config.ExposedPorts": the keys, comma-separated.
        result[ANNOTATION_PREFIX + "exposedPorts"] = ",".join(ports)
    # conversion.md: Config.Labels take precedence over the implicit annotations.
    result.update(_string_map(config, "Labels"))
    if extra:
        result.update(extra)
    return result


def config_user(image_config: Mapping[str, object]) -> str:
    """Return ``Config.User`` of an image config ("" when absent).

    Raises:
        ProtocolError: ``config`` is not an object or ``Config.User`` is not a string.
    """
    config: Mapping[str, object] = _field(image_config, "config", "", dict) or {}
    return _no_nul(_string(config, "User", "Config.") or "", "Config.User")


def runtime_config(
    image_config: Mapping[str, object],
    user: ProcessUser,
    *,
    hostname: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Convert an image config into an OCI runtime-spec ``config.json`` document.

    Args:
        image_config: The parsed image config JSON (untrusted; every field is type-checked).
        user: The process user, resolved against the rootfs.
        hostname: The container hostname; omitted from the config when None.
        annotations: Caller annotations; they override labels and implicit annotations.

    Returns:
        A JSON-serialisable runtime config (``root.path`` is ``rootfs``).

    Raises:
        ProtocolError: a field has the wrong type or an invalid value, or there is no command.
        UnsupportedError: the image OS is not Linux.
    """
    config: Mapping[str, object] = _field(image_config, "config", "", dict) or {}
    config_user(image_config)  # type-check Config.User even though ``user`` was resolved by the caller
    image_os = _string(image_config, "os")
    if image_os is not None and image_os != "linux":
        msg = f"image config: image OS {image_os!r} is not supported (linux only)"
        raise UnsupportedError(msg)
    if hostname is not None:
        _no_nul(hostname, "hostname")
    capabilities = list(DEFAULT_CAPABILITIES)
    user_json: dict[str, object] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        user_json["additionalGids"] = list(user.additional_gids)
    process: dict[str, object] = {
        "terminal": False,
        "user": user_json,
        "args": _args(config),
        "env": _env(config, hostname),
        "cwd": _cwd(config),
        # SECURITY: no inheritable or ambient capabilities (CVE-2022-24769: inheritable caps survive execve
        # of a file with inheritable file caps).
        "capabilities": {
            "bounding": capabilities,
            "effective": list(capabilities),
            "permitted": list(capabilities),
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": DEFAULT_NOFILE, "soft": DEFAULT_NOFILE}],
        # SECURITY: setuid binaries in the image cannot raise privileges.
        "noNewPrivileges": True,
    }
    result: dict[str, object] = {
        "ociVersion": OCI_RUNTIME_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": False},
    }
    if hostname is not None:
        result["hostname"] = hostname
    result["mounts"] = _default_mounts() + _volume_mounts(config)
    result["annotations"] = _annotations(image_config, config, annotations)
    result["linux"] = {
        # SECURITY: deny every device by default in the device cgroup (runc's default spec).
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": name} for name in NAMESPACES],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    return result
