"""How to reach registries: registries.conf, auth files or explicit credentials, certificates, TLS, proxies.

One value per side of a copy (skopeo's ``--src-*`` / ``--dest-*``) and for pulls; built by the CLI, which is the
only reader of the environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.auth_file import load_credentials
from cocoguest.registry.config.certs_d import tls_settings_for, tls_settings_in
from cocoguest.registry.config.registries_conf import RegistriesConfig
from cocoguest.registry.http import RetryPolicy
from cocoguest.registry.types import Credentials, TlsSettings


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach registries on one side of a copy (skopeo's ``--src-*`` / ``--dest-*`` flags)."""

    registries: RegistriesConfig = field(default_factory=lambda: RegistriesConfig.from_toml("", "<defaults>"))
    auth_files: Sequence[Path] = ()
    credentials: Credentials | None = None
    """``--src-creds`` / ``--dest-creds``: used for every registry of this side, instead of auth files."""
    cert_dirs: Sequence[Path] = ()
    """certs.d roots: ``<dir>/<host[:port]>/``."""
    flat_cert_dir: Path | None = None
    """``--src-cert-dir`` / ``--dest-cert-dir``: one flat directory used for every registry."""
    tls_verify: bool = True
    """False: ``--*-tls-verify=false``; every endpoint is insecure. SECURITY: warned on every use."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment for proxy variables."""
    tmp_dir: Path | None = None
    """Parent of the staging directory of transformed blobs bound for a registry (``None``: the system default)."""
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    retry: RetryPolicy | None = None
    """Retry policy; ``None``: the one :attr:`limits` describe."""

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, or the policy of :attr:`limits`."""
        return self.retry if self.retry is not None else RetryPolicy.from_limits(self.limits)

    def tls_for(self, registry: str) -> TlsSettings:
        """TLS settings for ``registry`` (as written in the reference).

        Raises:
            ConfigError: unreadable or inconsistent certificate directory.
        """
        if self.flat_cert_dir is not None:
            return tls_settings_in(self.flat_cert_dir, verify=self.tls_verify)
        return tls_settings_for(registry, self.cert_dirs, verify=self.tls_verify)

    def credentials_for(self, reference: ImageReference) -> Credentials | None:
        """The explicit credentials, else those of the auth files for ``reference`` (the physical one).

        Raises:
            ConfigError: an auth file is malformed.
        """
        if self.credentials is not None:
            return self.credentials
        return load_credentials(reference, self.auth_files, limits=self.limits)


def parse_credentials(text: str, flag: str) -> Credentials:
    """``USER:PASSWORD`` as skopeo's ``--src-creds`` / ``--dest-creds`` (the password may contain ``:``).

    Raises:
        ConfigError: no ``:`` or an empty user name (the message never repeats the password).
    """
    user, sep, password = text.partition(":")
    if not sep or not user:
        msg = f"{flag}: expected USERNAME:PASSWORD"
        raise ConfigError(msg)
    return Credentials(username=user, password=password, source=flag)
