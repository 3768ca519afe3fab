"""Key specifications as skopeo takes them, turned into key wrappers and unwrappers (ocicrypt.md §7).

Encryption recipients: ``jwe:FILE``, ``pkcs7:CERT``, ``pgp:RECIPIENT`` or ``pgp:FILE``, ``pkcs11:FILE``,
``provider:NAME[:PARAMS]``. Decryption keys: ``FILE``, ``FILE:pass=PW``, ``FILE:file=PATH``, ``FILE:fd=N``,
``FILE:PW``, ``provider:NAME[:PARAMS]``.

Invariants (where we are stricter than Go ocicrypt):
    * A key file that is not recognised, a password that cannot be used, an unknown protocol or a ``pgp:``
      recipient that cannot be found is a :class:`ConfigError` naming the spec; nothing is silently dropped.
    * Recipients of one scheme are grouped into one wrapper, so each scheme writes one annotation entry.
    * Files are read with a size cap; passwords are never echoed in messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cocoguest.crypto.keys import (
    Certificate,
    PrivateKeyMaterial,
    PublicKeyMaterial,
    load_certificates,
    load_private_key,
    load_public_key,
)
from cocoguest.errors import ConfigError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keyprovider.config import KeyProviderEntry
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper
from cocoguest.ocicrypt.keywrap.jwe import JweUnwrapper, JweWrapper
from cocoguest.ocicrypt.keywrap.keyprovider import KeyProviderUnwrapper, KeyProviderWrapper
from cocoguest.ocicrypt.keywrap.pkcs7 import Pkcs7Unwrapper, Pkcs7Wrapper
from cocoguest.ocicrypt.pkcs11_config import Pkcs11KeyFile, Pkcs11ModuleConfig, load_pkcs11_key_file

if TYPE_CHECKING:
    from cocoguest.ocicrypt.keywrap.pgp import PgpPublicKey, PgpSecretKey

TransportFactory = Callable[[KeyProviderEntry], KeyProviderTransport]


@dataclass(frozen=True)
class KeyContext:
    """Everything besides the specs that key loading needs; gathered by the CLI (the only env reader)."""

    gnupg_home: str | None = None
    """GnuPG home for ``pgp:UID`` lookups (``GNUPGHOME``); ``None`` means gpg's default."""
    oaep_hash: str | None = None
    """``OCICRYPT_OAEP_HASHALG`` for PKCS#11 wrapping."""
    pkcs11_config: Pkcs11ModuleConfig | None = None
    """Module policy from ``OCICRYPT_CONFIG`` or the default paths."""
    key_providers: Mapping[str, KeyProviderEntry] = field(default_factory=dict)
    """From ``OCICRYPT_KEYPROVIDER_CONFIG`` or ``--keyprovider-config``."""
    transport_factory: TransportFactory | None = None
    """Builds a transport for a configured provider (injected: ``rpc`` is above ``ocicrypt``)."""
    limits: Limits = DEFAULT_LIMITS


def split_specs(values: Iterable[str]) -> list[str]:
    """Split repeated flag values on commas too, as pflag's StringSlice does; drop empty items."""
    return [part for value in values for part in value.split(",") if part]


def read_key_file(path: str, limits: Limits, what: str = "key file") -> bytes:
    """Read a key file with a size cap.

    Raises:
        ConfigError: missing, unreadable or too large.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_key_file_bytes + 1)
    except OSError as e:
        msg = f"{what} {path}: {e.strerror or e}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_key_file_bytes:
        msg = f"{what} {path}: larger than {limits.max_key_file_bytes} bytes"
        raise ConfigError(msg)
    if not data.strip():
        msg = f"{what} {path}: empty"
        raise ConfigError(msg)
    return data


def _provider(spec: str, context: KeyContext) -> tuple[str, bytes | None, KeyProviderTransport]:
    rest = spec.removeprefix("provider:")
    name, sep, params = rest.partition(":")
    if not name:
        msg = f"key spec {spec!r}: missing key provider name"
        raise ConfigError(msg)
    entry = context.key_providers.get(name)
    if entry is None:
        configured = ", ".join(sorted(context.key_providers)) or "none"
        msg = (
            f"key spec {spec!r}: key provider {name!r} is not configured "
            f"(configured: {configured}; see OCICRYPT_KEYPROVIDER_CONFIG or --keyprovider-config)"
        )
        raise ConfigError(msg)
    if context.transport_factory is None:
        msg = f"key spec {spec!r}: no key provider transport available"
        raise ConfigError(msg)
    return name, (params.encode() if sep else None), context.transport_factory(entry)


@dataclass
class _Recipients:
    """Recipients gathered from the specs, grouped by scheme."""

    context: KeyContext
    jwe: list[PublicKeyMaterial] = field(default_factory=list)
    pkcs7: list[tuple[Certificate, str]] = field(default_factory=list)
    pgp: list[PgpPublicKey] = field(default_factory=list)
    pkcs11: list[PublicKeyMaterial | Pkcs11KeyFile] = field(default_factory=list)
    providers: list[KeyWrapper] = field(default_factory=list)
    gnupg_keyring: list[PgpPublicKey] | None = None

    def add_jwe(self, value: str) -> None:
        key = load_public_key(read_key_file(value, self.context.limits), value)
        if key is None:
            msg = f"key file {value}: not a public key (expected PEM/DER SubjectPublicKeyInfo or a JWK)"
            raise ConfigError(msg)
        self.jwe.append(key)

    def add_pkcs7(self, value: str) -> None:
        certs = load_certificates(read_key_file(value, self.context.limits, "certificate"), value)
        if not certs:
            msg = f"certificate {value}: not an X.509 certificate (PEM or DER)"
            raise ConfigError(msg)
        self.pkcs7.extend((cert, value) for cert in certs)

    def add_pgp(self, value: str) -> None:
        from cocoguest.ocicrypt.keywrap.pgp import (  # noqa: PLC0415  (OpenPGP only when asked for)
            export_gnupg_public_keyring,
            find_recipients,
            load_public_keys,
        )

        if os.path.isfile(value):
            keys = load_public_keys(read_key_file(value, self.context.limits, "PGP key file"), value)
            if not keys:
                msg = f"PGP key file {value}: no OpenPGP public key in it"
                raise ConfigError(msg)
            self.pgp.extend(keys)
            return
        if self.gnupg_keyring is None:
            exported = export_gnupg_public_keyring(self.context.gnupg_home, limits=self.context.limits)
            self.gnupg_keyring = load_public_keys(exported, "the GnuPG keyring") or []
        self.pgp.extend(find_recipients(self.gnupg_keyring, value, "the GnuPG keyring"))

    def add_pkcs11(self, value: str) -> None:
        data = read_key_file(value, self.context.limits)
        loaded: PublicKeyMaterial | Pkcs11KeyFile | None = load_pkcs11_key_file(data, value, limits=self.context.limits)
        if loaded is None:
            loaded = load_public_key(data, value)
        if loaded is None:
            msg = f"key file {value}: neither a PKCS#11 key file nor a public key"
            raise ConfigError(msg)
        self.pkcs11.append(loaded)

    def wrappers(self) -> list[KeyWrapper]:
        out = list(self.providers)
        if self.jwe:
            out.append(JweWrapper(self.jwe))
        if self.pkcs7:
            out.append(Pkcs7Wrapper(self.pkcs7))
        if self.pgp:
            from cocoguest.ocicrypt.keywrap.pgp import PgpWrapper  # noqa: PLC0415

            out.append(PgpWrapper(self.pgp))
        if self.pkcs11:
            from cocoguest.ocicrypt.keywrap.pkcs11 import Pkcs11Wrapper  # noqa: PLC0415  (python-pkcs11 is heavy)

            out.append(
                Pkcs11Wrapper(
                    self.pkcs11, self.context.oaep_hash, self.context.pkcs11_config, limits=self.context.limits
                )
            )
        return out


def encryption_wrappers(specs: Sequence[str], context: KeyContext) -> list[KeyWrapper]:
    """Build one wrapper per scheme from ``--encryption-key`` specs.

    Raises:
        ConfigError: an unknown protocol, a missing or unusable key file, or a recipient not found.
    """
    recipients = _Recipients(context)
    adders: dict[str, Callable[[str], None]] = {
        "jwe": recipients.add_jwe,
        "pkcs7": recipients.add_pkcs7,
        "pgp": recipients.add_pgp,
        "pkcs11": recipients.add_pkcs11,
    }
    for spec in specs:
        protocol, sep, value = spec.partition(":")
        if not sep or not value:
            msg = f"encryption key {spec!r}: expected PROTOCOL:VALUE (jwe:, pkcs7:, pgp:, pkcs11:, provider:)"
            raise ConfigError(msg)
        if protocol == "provider":
            recipients.providers.append(KeyProviderWrapper(*_provider(spec, context)))
        elif protocol in adders:
            adders[protocol](value)
        else:
            msg = f"encryption key {spec!r}: unknown protocol {protocol!r} (jwe, pkcs7, pgp, pkcs11, provider)"
            raise ConfigError(msg)
    return recipients.wrappers()


def _read_fd(fd_text: str, spec: str, limits: Limits) -> bytes:
    try:
        fd = int(fd_text)
    except ValueError as e:
        msg = f"decryption key {spec.split(':', 1)[0]}: fd={fd_text!r} is not a number"
        raise ConfigError(msg) from e
    try:
        return os.read(fd, limits.max_password_fd_bytes)
    except OSError as e:
        msg = f"decryption key {spec.split(':', 1)[0]}: cannot read password from fd {fd}: {e.strerror}"
        raise ConfigError(msg) from e


def _split_file_and_password(spec: str, limits: Limits) -> tuple[str, bytes | None]:
    """``FILE[:pass=PW|:file=PATH|:fd=N|:PW]``; the file is the shortest prefix that exists.

    Unlike Go (which splits on every ``:`` and drops the password when there are three parts), a path or
    password containing ``:`` works here.
    """
    if os.path.exists(spec):
        return spec, None
    start = 0
    while (colon := spec.find(":", start)) != -1:
        path, secret = spec[:colon], spec[colon + 1 :]
        start = colon + 1
        if not os.path.isfile(path):
            continue
        if secret.startswith("pass="):
            return path, secret.removeprefix("pass=").encode()
        if secret.startswith("file="):
            return path, read_key_file(secret.removeprefix("file="), limits, "password file")
        if secret.startswith("fd="):
            return path, _read_fd(secret.removeprefix("fd="), spec, limits)
        return path, secret.encode()
    msg = f"decryption key {spec.split(':', 1)[0]}: no such file"
    raise ConfigError(msg)


@dataclass
class _DecryptionKeys:
    private_keys: list[PrivateKeyMaterial] = field(default_factory=list)
    certificates: list[tuple[Certificate, str]] = field(default_factory=list)
    pgp_secret_keys: list[PgpSecretKey] = field(default_factory=list)
    pkcs11_keys: list[Pkcs11KeyFile] = field(default_factory=list)
    provider_params: dict[str, bytes | None] = field(default_factory=dict)


def _classify(path: str, password: bytes | None, keys: _DecryptionKeys, limits: Limits) -> None:
    """Sort one key file into its kind, in Go's order: PKCS#11 YAML, private key, PGP, certificates."""
    data = read_key_file(path, limits)
    pkcs11 = load_pkcs11_key_file(data, path, limits=limits)
    if pkcs11 is not None:
        keys.pkcs11_keys.append(pkcs11)
        return
    private = load_private_key(data, path, password)
    if private is not None:
        keys.private_keys.append(private)
        return
    from cocoguest.ocicrypt.keywrap.pgp import load_secret_keys  # noqa: PLC0415  (OpenPGP only when needed)

    secret = load_secret_keys(data, path, password)
    if secret:
        keys.pgp_secret_keys.extend(secret)
        return
    certs = load_certificates(data, path)
    if certs:
        keys.certificates.extend((cert, path) for cert in certs)
        return
    msg = (
        f"key file {path}: not a private key, certificate, OpenPGP secret key or PKCS#11 key file "
        "(a public key cannot decrypt)"
    )
    raise ConfigError(msg)


def decryption_unwrappers(specs: Sequence[str], context: KeyContext) -> list[KeyUnwrapper]:
    """Build unwrappers from ``--decryption-key`` specs, plus one per configured key provider.

    Go tries a configured provider on every ``keys.provider.<name>`` annotation even without a
    ``provider:`` spec; so do we.

    Raises:
        ConfigError: a missing, unrecognised or undecryptable key file, or an unknown provider.
    """
    keys = _DecryptionKeys()
    for spec in specs:
        if spec.startswith("provider:"):
            name, params, _ = _provider(spec, context)
            keys.provider_params[name] = params
            continue
        path, password = _split_file_and_password(spec, context.limits)
        _classify(path, password, keys, context.limits)
    unwrappers: list[KeyUnwrapper] = []
    if keys.private_keys:
        unwrappers.append(JweUnwrapper(keys.private_keys, limits=context.limits))
        unwrappers.append(Pkcs7Unwrapper(keys.private_keys, keys.certificates, limits=context.limits))
    if keys.pgp_secret_keys:
        from cocoguest.ocicrypt.keywrap.pgp import PgpUnwrapper  # noqa: PLC0415

        unwrappers.append(PgpUnwrapper(keys.pgp_secret_keys, limits=context.limits))
    if keys.pkcs11_keys:
        from cocoguest.ocicrypt.keywrap.pkcs11 import Pkcs11Unwrapper  # noqa: PLC0415

        unwrappers.append(Pkcs11Unwrapper(keys.pkcs11_keys, context.pkcs11_config, limits=context.limits))
    if context.transport_factory is not None:
        for name, entry in sorted(context.key_providers.items()):
            transport = context.transport_factory(entry)
            unwrappers.append(KeyProviderUnwrapper(name, keys.provider_params.get(name), transport))
    return unwrappers
