"""``sample_kbc``: upstream's development KBC (guest-components.md §7.1). INSECURE by design.

Upstream semantics:
    * ``decrypt_payload``: AES-256-GCM with a hard-coded, public key (hex ``d99b7705...11daea``), whatever the
      packet's ``wrap_type`` says;
    * ``get_resource``: chosen by the URI's ``type`` segment only: ``security-policy`` -> ``policy.json``,
      ``sigstore-config`` -> ``sigstore_config.yaml``, ``gpg-public-config`` -> ``pubkey.gpg``,
      ``cosign-public-key`` -> ``cosign.pub``, ``credential`` -> ``auth.json``. Upstream embeds these files
      in its binary; here they are read from a directory given at construction (cocoguest ships none).

Invariants:
    * SECURITY: anyone can decrypt what this KBC decrypts (the key is public); every use logs a WARNING.
    * After construction no IO happens (files are read once, each capped at ``Limits.max_offline_fs_file_bytes``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cocoguest.errors import ConfigError, ResourceNotFoundError
from cocoguest.kbs.annotation_packet import AnnotationPacket, decrypt_with_kek
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.limits import DEFAULT_LIMITS, Limits

_logger = logging.getLogger(__name__)

NAME: Final = "sample_kbc"
SAMPLE_KEY: Final = bytes.fromhex("d99b7705b0ba7a168295b3a3367270b0dd9b371bf514ca8b9ba7f0a33711daea")
"""Upstream's hard-coded sample KEK (public: it is in the upstream source)."""
RESOURCE_FILES: Final = {
    "security-policy": "policy.json",
    "sigstore-config": "sigstore_config.yaml",
    "gpg-public-config": "pubkey.gpg",
    "cosign-public-key": "cosign.pub",
    "credential": "auth.json",
}
"""Resource type -> file name, as upstream's embedded files."""


class SampleKbc:
    """The sample KBC: a public key for annotation packets and a few fixed resources."""

    __slots__ = ("_resources",)

    def __init__(self, resources: Mapping[str, bytes] | None = None) -> None:
        """Create it with ``resources`` by type segment (keys of :data:`RESOURCE_FILES`).

        Raises:
            ConfigError: a key that is not a known resource type.
        """
        resources = dict(resources or {})
        unknown = sorted(set(resources) - set(RESOURCE_FILES))
        if unknown:
            msg = f"sample_kbc: unknown resource types {unknown} (known: {sorted(RESOURCE_FILES)})"
            raise ConfigError(msg)
        self._resources = resources

    @classmethod
    def from_directory(cls, directory: Path, limits: Limits = DEFAULT_LIMITS) -> SampleKbc:
        """Load the files of :data:`RESOURCE_FILES` that exist in ``directory``.

        Raises:
            ConfigError: a file is not a regular file, unreadable or larger than the limit.
        """
        resources: dict[str, bytes] = {}
        for resource_type, file_name in RESOURCE_FILES.items():
            path = directory / file_name
            if not path.exists():
                continue
            if not path.is_file():
                msg = f"sample_kbc: {path} is not a regular file"
                raise ConfigError(msg)
            try:
                with path.open("rb") as f:
                    data = f.read(limits.max_offline_fs_file_bytes + 1)
            except OSError as e:
                msg = f"sample_kbc: cannot read {path}: {e.strerror}"
                raise ConfigError(msg) from e
            if len(data) > limits.max_offline_fs_file_bytes:
                msg = f"sample_kbc: {path} is larger than the limit of {limits.max_offline_fs_file_bytes} bytes"
                raise ConfigError(msg)
            resources[resource_type] = data
        return cls(resources)

    @property
    def name(self) -> str:
        """``sample_kbc``."""
        return NAME

    def get_resource(self, uri: ResourceUri) -> bytes:
        """The sample file for ``uri.resource_type`` (repository and tag are ignored, as upstream).

        Raises:
            ResourceNotFoundError: no sample file for that type.
        """
        _logger.warning("sample_kbc (insecure, development only) serves %s", uri)
        try:
            return self._resources[uri.resource_type]
        except KeyError:
            msg = f"resource {uri}: sample_kbc has no {uri.resource_type!r} resource (it has {sorted(self._resources)})"
            raise ResourceNotFoundError(msg) from None

    def decrypt_payload(self, packet: AnnotationPacket) -> bytes:
        """Decrypt with the public sample key, always as A256GCM (upstream ignores ``wrap_type``)."""
        # SECURITY: the sample key is public; this KBC protects nothing. Warn on every use.
        _logger.warning("sample_kbc (insecure, development only) decrypts the key of %s", packet.kid[:200])
        return decrypt_with_kek(dataclasses.replace(packet, wrap_type="A256GCM"), SAMPLE_KEY)
