"""Per-registry TLS material from containers-certs.d(5) directories.

Layout: ``<dir>/<host[:port]>/`` holds ``*.crt`` files (extra CA certificates, added to the system roots),
and ``NAME.cert`` + ``NAME.key`` pairs (a client certificate for mutual TLS). As containers/image
(``docker/docker_client.go`` ``dockerCertDir``, ``pkg/tlsclientconfig``):

* The candidate directories are ``$HOME/.config/containers/certs.d``, ``/etc/containers/certs.d`` and
  ``/etc/docker/certs.d``, in that order, and only the FIRST one that has a ``<host[:port]>`` subdirectory is
  used (they are not merged).
* The subdirectory is named after the registry as written in the image reference (``docker.io``,
  ``localhost:5000``).
* A ``.cert`` without its ``.key``, or a ``.key`` without its ``.cert``, is an error.

Invariants:
    * Only paths are returned; certificates are loaded (and their syntax checked) by the TLS client.
    * A host name can never address a directory outside the certs.d directory (no ``/``, no ``..``).
    * Files are reported in sorted order, so the result does not depend on directory order.
    * Library code: the environment comes in as a mapping.

Difference from containers/image: at most one client certificate pair per host (Go loads all of them and lets
the TLS handshake choose); several pairs are a :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cocoguest.errors import ConfigError
from cocoguest.registry.types import TlsSettings

_logger = logging.getLogger(__name__)


def default_cert_dirs(env: Mapping[str, str]) -> list[Path]:
    """The certs.d directories containers/image searches, in order (the first with the host's directory wins).

    Args:
        env: the process environment (``HOME``).
    """
    dirs: list[Path] = []
    home = env.get("HOME")
    if home:
        dirs.append(Path(home) / ".config" / "containers" / "certs.d")
    dirs += [Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]
    return dirs


def _check_host(host: str) -> None:
    # SECURITY: the host names a subdirectory; it must not be able to point anywhere else.
    if not host or host in {".", ".."} or "/" in host or "\\" in host or "\0" in host:
        msg = f"invalid registry host {host!r} for a certs.d lookup"
        raise ValueError(msg)


def tls_settings_in(directory: Path, *, verify: bool = True) -> TlsSettings:
    """The TLS settings given by the files of one directory (``*.crt``, ``*.cert`` + ``*.key``).

    Usable directly for a flat ``--cert-dir`` (skopeo's meaning) as well as for a certs.d host directory.

    Args:
        directory: the directory; a missing one gives default settings.
        verify: whether server certificates are verified (``--tls-verify``).

    Raises:
        ConfigError: the directory cannot be read, a ``.cert``/``.key`` lacks its partner, a matching name is
            not a regular file, or there are several client certificates.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return TlsSettings(verify=verify)
    except OSError as e:
        msg = f"certificate directory {directory}: cannot read: {e.strerror or e}"
        raise ConfigError(msg) from e
    present = set(names)
    ca_files: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for name in names:
        stem, dot, extension = name.rpartition(".")
        if not dot or extension not in {"crt", "cert", "key"}:
            continue
        path = directory / name
        if not path.is_file():
            msg = f"certificate directory {directory}: {name} is not a regular file"
            raise ConfigError(msg)
        if extension == "crt":
            ca_files.append(path)
        elif extension == "cert":
            if f"{stem}.key" not in present:
                msg = (
                    f"certificate directory {directory}: client certificate {name} has no key {stem}.key"
                    " (CA certificates must end in .crt)"
                )
                raise ConfigError(msg)
            pairs.append((path, directory / f"{stem}.key"))
        elif f"{stem}.cert" not in present:
            msg = f"certificate directory {directory}: key {name} has no client certificate {stem}.cert"
            raise ConfigError(msg)
    if len(pairs) > 1:
        listed = ", ".join(cert.name for cert, _ in pairs)
        msg = f"certificate directory {directory}: several client certificates ({listed}); only one is supported"
        raise ConfigError(msg)
    _logger.debug("TLS material in %s: %d CA file(s), client certificate: %s", directory, len(ca_files), bool(pairs))
    return TlsSettings(verify=verify, ca_files=tuple(ca_files), client_cert=pairs[0] if pairs else None)


def tls_settings_for(host: str, cert_dirs: Sequence[Path], *, verify: bool = True) -> TlsSettings:
    """TLS settings for ``host`` (``name[:port]`` as in the image reference) from certs.d-style directories.

    Args:
        host: the registry as written in the reference (``localhost:5000``, ``docker.io``).
        cert_dirs: candidate certs.d directories in order (see :func:`default_cert_dirs`); the first one with a
            ``host`` subdirectory is used.
        verify: whether server certificates are verified.

    Returns:
        The settings; ``TlsSettings(verify=verify)`` when no directory has anything for ``host``.

    Raises:
        ValueError: ``host`` could address something other than a subdirectory.
        ConfigError: see :func:`tls_settings_in`.
    """
    _check_host(host)
    for cert_dir in cert_dirs:
        candidate = cert_dir / host
        try:
            exists = candidate.exists()
        except PermissionError:
            _logger.debug("certificate directory %s: not accessible; skipped", candidate)
            continue
        if not exists:
            continue
        if not candidate.is_dir():
            msg = f"certificate directory {candidate}: not a directory"
            raise ConfigError(msg)
        return tls_settings_in(candidate, verify=verify)
    return TlsSettings(verify=verify)
