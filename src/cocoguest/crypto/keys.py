"""Loading public keys, private keys and certificates from the formats skopeo accepts.

Formats (ocicrypt.md §7): PEM and DER SubjectPublicKeyInfo; JWK (public and private); private keys as
PKCS#8, PKCS#1 or SEC1 in PEM or DER, encrypted PKCS#8 PEM and legacy OpenSSL-encrypted PEM; X.509
certificates in PEM or DER.

Invariants:
    * Loaders return ``None`` when the bytes are not of the asked kind, and raise :class:`ConfigError`
      naming the source when they are of that kind but unusable (encrypted without a password, wrong
      password, unsupported curve or key type).
    * Only RSA and EC (P-256, P-384, P-521) keys are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cocoguest.errors import ConfigError
from cocoguest.jsonutil import loads

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Certificate = x509.Certificate
RSAPublicKey = rsa.RSAPublicKey
RSAPrivateKey = rsa.RSAPrivateKey
ECPublicKey = ec.EllipticCurvePublicKey
ECPrivateKey = ec.EllipticCurvePrivateKey

_SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


@dataclass(frozen=True, slots=True)
class PublicKeyMaterial:
    """A recipient public key and where it came from. ``kid`` is a JWK key id, copied into JWE headers."""

    key: PublicKey
    source: str
    kid: str | None = None


@dataclass(frozen=True, slots=True)
class PrivateKeyMaterial:
    """A private key and where it came from."""

    key: PrivateKey
    source: str


def _check_type(key: object, source: str) -> None:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in _SUPPORTED_CURVES:
            msg = f"{source}: EC curve {key.curve.name} is not supported (use P-256, P-384 or P-521)"
            raise ConfigError(msg)
        return
    msg = f"{source}: {type(key).__name__} keys are not supported (use RSA or EC)"
    raise ConfigError(msg)


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def _load_jwk(data: bytes, source: str) -> tuple[object, str | None] | None:
    from jwcrypto import jwk  # noqa: PLC0415  (jwcrypto is only needed for JWK files)

    try:
        obj = loads(data, source, ConfigError)
    except ConfigError:
        return None
    if not isinstance(obj, dict) or "kty" not in obj:
        return None
    try:
        key = jwk.JWK(**obj)
        op_key = key._get_private_key() if key.has_private else key._get_public_key()
    except Exception as e:
        msg = f"{source}: malformed JWK ({e})"
        raise ConfigError(msg) from e
    kid = obj.get("kid")
    return op_key, kid if isinstance(kid, str) else None


def load_public_key(data: bytes, source: str) -> PublicKeyMaterial | None:
    """Load a public key from PEM, DER (SubjectPublicKeyInfo or PKCS#1 RSA) or JWK bytes.

    Returns ``None`` if the bytes hold no public key (a JWK private key yields its public half).

    Raises:
        ConfigError: the key is of an unsupported type or curve, or the JWK is malformed.
    """
    key: object
    kid: str | None = None
    if _looks_like_json(data):
        loaded = _load_jwk(data, source)
        if loaded is None:
            return None
        key, kid = loaded
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            key = key.public_key()
    elif b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            return None
    else:
        try:
            key = serialization.load_der_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            return None
    _check_type(key, source)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)  # noqa: S101  (narrowed above)
    return PublicKeyMaterial(key, source, kid)


def load_private_key(data: bytes, source: str, password: bytes | None = None) -> PrivateKeyMaterial | None:
    """Load a private key from PEM, DER or JWK bytes, decrypting it with ``password`` if needed.

    Returns ``None`` if the bytes hold no private key.

    Raises:
        ConfigError: the key is encrypted and no or a wrong password was given, or its type is unsupported.
    """
    key: object
    if _looks_like_json(data):
        loaded = _load_jwk(data, source)
        if loaded is None:
            return None
        key = loaded[0]
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            return None
    else:
        is_pem = b"-----BEGIN" in data
        if is_pem and b"PRIVATE KEY" not in data:
            return None
        loader = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key
        try:
            key = loader(data, password=password)
        except TypeError as e:
            # cryptography raises TypeError for "encrypted but no password" and "password but not encrypted".
            if password is None:
                msg = f"key file {source}: private key is encrypted; give its password as {source}:pass=PASSWORD"
                raise ConfigError(msg) from e
            key = loader(data, password=None)
        except ValueError as e:
            if password is not None and is_pem and b"ENCRYPTED" in data:
                msg = f"key file {source}: wrong password for the encrypted private key"
                raise ConfigError(msg) from e
            if is_pem:
                msg = f"key file {source}: malformed PEM private key"
                raise ConfigError(msg) from e
            return None
        except UnsupportedAlgorithm as e:
            msg = f"{source}: unsupported private key ({e})"
            raise ConfigError(msg) from e
    _check_type(key, source)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # noqa: S101  (narrowed above)
    return PrivateKeyMaterial(key, source)


def load_certificates(data: bytes, source: str) -> list[Certificate] | None:
    """Load one or more X.509 certificates from PEM or one from DER. ``None`` if there is none."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as e:
            msg = f"{source}: malformed PEM certificate ({e})"
            raise ConfigError(msg) from e
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return None


def certificate_public_key(cert: Certificate, source: str) -> RSAPublicKey:
    """The RSA public key of a certificate.

    Raises:
        ConfigError: the certificate does not carry an RSA key (PKCS7 in ocicrypt needs RSA).
    """
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        msg = f"{source}: the certificate's key is {type(key).__name__}; PKCS7 recipients need RSA"
        raise ConfigError(msg)
    return key
