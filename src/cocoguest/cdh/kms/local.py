"""The ``local`` plugin, for DEVELOPMENT: secrets and AES-256 key-encryption keys as files in one directory.

Layout under ``root`` (``provider_settings.dir`` may not move it: the root is fixed by the host):
    * ``secrets/<name>``: a vault secret's bytes;
    * ``keys/<key_id>``: a 32-byte AES-256 key; data keys are AES-256-GCM encrypted under it with the 12-byte
      IV in annotation ``iv`` (base64 standard).

Invariants:
    * SECURITY: names and key ids are single path components (no ``/``, ``.``/``..``, NUL); nothing outside
      ``root`` is read. Files are size-capped by ``Limits.max_offline_fs_file_bytes``.
    * This plugin protects nothing that the guest's filesystem does not; it exists for development and tests.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Final

from cocoguest.cdh.kms.api import Annotations
from cocoguest.crypto.sealing import a256gcm_encrypt, envelope_decrypt, new_dek
from cocoguest.errors import ConfigError, ProtocolError, ResourceNotFoundError
from cocoguest.limits import DEFAULT_LIMITS, Limits

NAME: Final = "local"


def _component(name: str, what: str) -> str:
    # SECURITY: one plain path component, so the lookup cannot leave the root.
    if not name or name in (".", "..") or "/" in name or "\x00" in name or len(name) > 255:
        msg = f"local KMS: {what} {name[:64]!r} is not a plain file name"
        raise ConfigError(msg)
    return name


class LocalKms:
    """File-backed getter, decrypter and encrypter (see the module docstring)."""

    __slots__ = ("_limits", "_root")

    def __init__(self, root: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        """Serve files under ``root``."""
        self._root = root
        self._limits = limits

    def _read(self, folder: str, name: str, what: str) -> bytes:
        path = self._root / folder / _component(name, what)
        try:
            with path.open("rb") as f:
                data = f.read(self._limits.max_offline_fs_file_bytes + 1)
        except FileNotFoundError:
            msg = f"local KMS: no {what} {name!r} under {self._root / folder}"
            raise ResourceNotFoundError(msg) from None
        except OSError as e:
            msg = f"local KMS: cannot read {what} {name!r}: {e.strerror}"
            raise ConfigError(msg) from e
        if len(data) > self._limits.max_offline_fs_file_bytes:
            msg = f"local KMS: {what} {name!r} is larger than {self._limits.max_offline_fs_file_bytes} bytes"
            raise ConfigError(msg)
        return data

    def get_secret(self, name: str, annotations: Annotations) -> bytes:
        """The file ``secrets/<name>``."""
        del annotations
        return self._read("secrets", name, "secret")

    def decrypt(self, ciphertext: bytes, key_id: str, crypto_context: Annotations) -> bytes:
        """AES-256-GCM-open ``ciphertext`` under ``keys/<key_id>`` with IV ``crypto_context["iv"]``.

        Raises:
            ProtocolError: missing or malformed ``iv``. DecryptionIntegrityError: wrong key or altered data.
        """
        iv_text = crypto_context.get("iv")
        if not isinstance(iv_text, str):
            msg = f"local KMS: key {key_id!r}: annotation 'iv' missing or not a string"
            raise ProtocolError(msg)
        try:
            iv = base64.b64decode(iv_text, validate=True)
        except binascii.Error as e:
            msg = f"local KMS: key {key_id!r}: annotation 'iv' is not base64"
            raise ProtocolError(msg) from e
        key = self._read("keys", key_id, "key")
        return envelope_decrypt("A256GCM", key, iv, ciphertext, f"local KMS key {key_id!r}")

    def encrypt(self, data: bytes, key_id: str) -> tuple[bytes, dict[str, object]]:
        """Encrypt ``data`` under ``keys/<key_id>``; the IV is returned as annotation ``iv``."""
        key = self._read("keys", key_id, "key")
        _, iv = new_dek()
        return a256gcm_encrypt(key, iv, data), {"iv": base64.b64encode(iv).decode("ascii")}
