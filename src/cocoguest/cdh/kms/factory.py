"""Choosing a KMS plugin by provider name (case-insensitive), as upstream's ``new_getter``/``new_decryptor``.

Invariants:
    * Getters: ``kbs``, ``local``, ``aws``; decrypters: ``local``, ``aws`` (there is no ``kbs`` decrypter).
    * An unknown provider, or one whose extra is not installed, is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cocoguest.cdh.kms.api import Decrypter, Getter, ProviderSettings
from cocoguest.cdh.kms.aws import AwsKms  # boto3 itself is imported only when an AwsKms is built
from cocoguest.cdh.kms.kbs import KbsGetter
from cocoguest.cdh.kms.local import LocalKms
from cocoguest.errors import ConfigError
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.limits import DEFAULT_LIMITS, Limits

DEFAULT_CREDENTIAL_DIR: Final = Path("/run/confidential-containers/cdh/kbs/kms-credential")
GETTERS: Final = ("kbs", "local", "aws")
DECRYPTERS: Final = ("local", "aws")


@dataclass(frozen=True)
class KmsContext:
    """What plugins may need: the KBC (``kbs``), the local plugin's root, the credential directory."""

    resources: ResourceProvider | None = None
    local_root: Path | None = None
    credential_dir: Path = DEFAULT_CREDENTIAL_DIR
    limits: Limits = DEFAULT_LIMITS


def _local(context: KmsContext) -> LocalKms:
    if context.local_root is None:
        msg = "KMS provider 'local' (development) is not configured (no local KMS directory)"
        raise ConfigError(msg)
    return LocalKms(context.local_root, context.limits)


def _aws(settings: ProviderSettings, context: KmsContext) -> AwsKms:
    return AwsKms(settings, context.credential_dir / "aws", context.limits)


def new_getter(provider: str, settings: ProviderSettings, context: KmsContext) -> Getter:
    """The getter for ``provider``.

    Raises:
        ConfigError: unknown or unavailable provider (names it and, for aws, the extra).
    """
    name = provider.lower()
    if name == "kbs":
        if context.resources is None:
            msg = "KMS provider 'kbs': no KBC configured"
            raise ConfigError(msg)
        return KbsGetter(context.resources, context.limits)
    if name == "local":
        return _local(context)
    if name == "aws":
        return _aws(settings, context)
    msg = f"KMS provider {provider[:64]!r} has no secret getter (known: {', '.join(GETTERS)})"
    raise ConfigError(msg)


def new_decryptor(provider: str, settings: ProviderSettings, context: KmsContext) -> Decrypter:
    """The decrypter for ``provider``.

    Raises:
        ConfigError: unknown or unavailable provider.
    """
    name = provider.lower()
    if name == "local":
        return _local(context)
    if name == "aws":
        return _aws(settings, context)
    msg = f"KMS provider {provider[:64]!r} has no decrypter (known: {', '.join(DECRYPTERS)})"
    raise ConfigError(msg)
