"""The ``aws`` plugin: KMS Decrypt/Encrypt for envelopes and Secrets Manager for vault secrets, through boto3.

boto3 is an optional extra (``pip install cocoguest[aws]``); without it, building the plugin is a
:class:`~cocoguest.errors.ConfigError` naming the extra. Not tested against AWS (no network here).

Settings: ``provider_settings.region`` (required). Credentials: ``credential.json`` (``access_key_id``,
``secret_access_key``, optional ``session_token``) in the credential directory given by the caller (upstream:
``/run/confidential-containers/cdh/kbs/kms-credential/aws``, overridable by ``AWS_IN_GUEST_KEY_PATH``).
Annotation ``encryption_context`` (a JSON object of strings) is passed to KMS; ``version_id`` and
``version_stage`` to Secrets Manager.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final

from cocoguest.cdh.kms.api import Annotations, ProviderSettings
from cocoguest.errors import ConfigError, TransportError
from cocoguest.jsonutil import load_object
from cocoguest.limits import DEFAULT_LIMITS, Limits

NAME: Final = "aws"
CREDENTIAL_FILE: Final = "credential.json"


def _boto3() -> Any:
    try:
        return importlib.import_module("boto3")
    except ImportError as e:
        msg = "KMS provider 'aws' needs boto3: install the 'aws' extra (pip install 'cocoguest[aws]')"
        raise ConfigError(msg) from e


class AwsKms:
    """AWS KMS and Secrets Manager clients built from a credential file."""

    def __init__(self, settings: ProviderSettings, credential_dir: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        """Build the clients.

        Raises:
            ConfigError: boto3 missing (names the extra), no region, unreadable or malformed credential file.
        """
        boto3 = _boto3()
        region = settings.get("region")
        if not isinstance(region, str) or not region:
            msg = "KMS provider 'aws': provider_settings.region is required"
            raise ConfigError(msg)
        path = credential_dir / CREDENTIAL_FILE
        try:
            raw = path.read_bytes()[: limits.max_offline_fs_file_bytes + 1]
        except OSError as e:
            msg = f"KMS provider 'aws': cannot read {path}: {e.strerror}"
            raise ConfigError(msg) from e
        creds = load_object(raw, f"KMS provider 'aws' {path}", ConfigError, limits=limits)
        session = boto3.session.Session(
            aws_access_key_id=creds.get("access_key_id"),
            aws_secret_access_key=creds.get("secret_access_key"),
            aws_session_token=creds.get("session_token"),
            region_name=region,
        )
        self._kms = session.client("kms")
        self._secrets = session.client("secretsmanager")

    def decrypt(self, ciphertext: bytes, key_id: str, crypto_context: Annotations) -> bytes:
        """KMS Decrypt."""
        kwargs: dict[str, object] = {"CiphertextBlob": ciphertext, "KeyId": key_id}
        context = crypto_context.get("encryption_context")
        if isinstance(context, dict):
            kwargs["EncryptionContext"] = context
        try:
            return bytes(self._kms.decrypt(**kwargs)["Plaintext"])
        except Exception as e:
            msg = f"KMS provider 'aws': Decrypt with key {key_id!r} failed: {e}"
            raise TransportError(msg) from e

    def encrypt(self, data: bytes, key_id: str) -> tuple[bytes, dict[str, object]]:
        """KMS Encrypt."""
        try:
            return bytes(self._kms.encrypt(KeyId=key_id, Plaintext=data)["CiphertextBlob"]), {}
        except Exception as e:
            msg = f"KMS provider 'aws': Encrypt with key {key_id!r} failed: {e}"
            raise TransportError(msg) from e

    def get_secret(self, name: str, annotations: Annotations) -> bytes:
        """Secrets Manager GetSecretValue."""
        kwargs: dict[str, object] = {"SecretId": name}
        for annotation, parameter in (("version_id", "VersionId"), ("version_stage", "VersionStage")):
            value = annotations.get(annotation)
            if isinstance(value, str):
                kwargs[parameter] = value
        try:
            answer = self._secrets.get_secret_value(**kwargs)
        except Exception as e:
            msg = f"KMS provider 'aws': GetSecretValue of {name!r} failed: {e}"
            raise TransportError(msg) from e
        if "SecretBinary" in answer:
            return bytes(answer["SecretBinary"])
        return str(answer.get("SecretString", "")).encode("utf-8")
