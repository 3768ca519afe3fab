"""Values shared by the registry client and its configuration sources (auth.json, registries.conf, certs.d)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Credentials:
    """Registry credentials: username + password, or an identity (refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""
    """Where they came from, for messages (never the secret itself)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to talk TLS to one registry host."""

    verify: bool = True
    ca_files: tuple[Path, ...] = ()
    client_cert: tuple[Path, Path] | None = None
    """(certificate, key) for mutual TLS."""


@dataclass(frozen=True, slots=True)
class RegistryEndpoint:
    """Where and how to reach a registry: ``host`` is ``name[:port]`` as used in URLs."""

    host: str
    insecure: bool = False
    """registries.conf ``insecure = true`` or ``--tls-verify=false``: plain HTTP is tried after HTTPS fails,
    and TLS certificates are not verified. SECURITY: logs a warning on every use."""
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True, slots=True)
class SigstoreSignature:
    """One cosign signature attachment layer, untrusted."""

    payload: bytes
    """The simplesigning payload blob (``application/vnd.dev.cosign.simplesigning.v1+json``)."""
    signature_b64: str
    """The ``dev.cosignproject.cosign/signature`` annotation."""
    certificate_pem: bytes | None = None
    """``dev.sigstore.cosign/certificate`` (keyless)."""
    chain_pem: bytes | None = None
    """``dev.sigstore.cosign/chain``."""
    bundle_json: bytes | None = None
    """``dev.sigstore.cosign/bundle`` (Rekor SET)."""
