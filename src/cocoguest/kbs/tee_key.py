"""The TEE key pair of a KBS client: its public JWK for ``tee-pubkey`` and resource decryption (kbs-protocol.md §3, §5).

Algorithms (the AA config's ``tee_key_algorithm``, guest-components.md §5.1):

============================  ==============  ===========================================================
name                          key             ``tee-pubkey`` JWK (exactly these members, in this order)
============================  ==============  ===========================================================
``ECDH-ES+A256KW-P256``       EC P-256        ``kty, crv, alg, x, y`` with ``alg`` ``ECDH-ES+A256KW`` (default)
``ECDH-ES+A256KW-P521``       EC P-521        same, ``crv`` ``P-521``
``RSA-OAEP-256``              RSA 2048        ``kty, alg, n, e``
``RSA1_5``                    RSA 2048        same, ``alg`` ``RSA1_5`` (deprecated; interop only)
============================  ==============  ===========================================================

Invariants:
    * SECURITY: a resource is accepted only if it decrypts, and its AES-GCM tag verifies, under this key pair;
      the JWE's ``alg`` must be the one this key advertised (no downgrade from RSA-OAEP-256 to RSA1_5).
    * The private key never appears in ``repr``, logs or messages; :meth:`TeeKeyPair.to_pem` exists for the
      passport hand-over (AA ``GetToken`` answers ``{"token", "tee_keypair"}``).
"""

from __future__ import annotations

import base64
from enum import StrEnum

from cocoguest.crypto import tee_crypto
from cocoguest.errors import ConfigError, DecryptionIntegrityError
from cocoguest.kbs.protocol import JweResponse


class TeeKeyAlgorithm(StrEnum):
    """The TEE key algorithms of the AA config (``tee_key_algorithm``)."""

    EC_P256 = "ECDH-ES+A256KW-P256"
    EC_P521 = "ECDH-ES+A256KW-P521"
    RSA_OAEP_256 = "RSA-OAEP-256"
    RSA1_5 = "RSA1_5"

    @classmethod
    def parse(cls, text: str) -> TeeKeyAlgorithm:
        """The algorithm named ``text``.

        Raises:
            ConfigError: unknown name (the message lists the known ones).
        """
        try:
            return cls(text)
        except ValueError as e:
            known = ", ".join(a.value for a in cls)
            msg = f"unknown TEE key algorithm {text[:64]!r} (known: {known})"
            raise ConfigError(msg) from e

    @property
    def jwe_alg(self) -> str:
        """The JWE ``alg`` the KBS uses for this key."""
        if self in (TeeKeyAlgorithm.EC_P256, TeeKeyAlgorithm.EC_P521):
            return "ECDH-ES+A256KW"
        return self.value

    @property
    def key_kind(self) -> str:
        """``P-256``, ``P-521`` or ``RSA``."""
        return {TeeKeyAlgorithm.EC_P256: "P-256", TeeKeyAlgorithm.EC_P521: "P-521"}.get(self, "RSA")


DEFAULT_TEE_KEY_ALGORITHM = TeeKeyAlgorithm.EC_P256


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TeeKeyPair:
    """This guest's TEE key pair (private key + the algorithm it is advertised with)."""

    __slots__ = ("_algorithm", "_key")

    def __init__(self, key: tee_crypto.TeePrivateKey, algorithm: TeeKeyAlgorithm) -> None:
        """Wrap ``key``; use :meth:`generate` or :meth:`from_pem`.

        Raises:
            ConfigError: ``key`` does not fit ``algorithm``.
        """
        if tee_crypto.kind_of(key) != algorithm.key_kind:
            msg = f"TEE key is {tee_crypto.kind_of(key)}, which does not fit algorithm {algorithm}"
            raise ConfigError(msg)
        self._key = key
        self._algorithm = algorithm

    @classmethod
    def generate(cls, algorithm: TeeKeyAlgorithm = DEFAULT_TEE_KEY_ALGORITHM) -> TeeKeyPair:
        """A fresh key pair."""
        return cls(tee_crypto.generate(algorithm.key_kind), algorithm)

    @classmethod
    def from_pem(cls, pem: bytes, source: str, algorithm: TeeKeyAlgorithm | None = None) -> TeeKeyPair:
        """A key pair from a PEM private key (PKCS#8, PKCS#1 RSA, SEC1 EC), e.g. the AA's ``tee_keypair``.

        Args:
            pem: the PEM text.
            source: names the key in messages.
            algorithm: defaults to ECDH-ES+A256KW on the key's curve, or RSA-OAEP-256 for RSA.

        Raises:
            ConfigError: not a usable key, or it does not fit ``algorithm``.
        """
        key = tee_crypto.from_pem(pem, source)
        if algorithm is None:
            kind = tee_crypto.kind_of(key)
            algorithm = {"P-256": TeeKeyAlgorithm.EC_P256, "P-521": TeeKeyAlgorithm.EC_P521}.get(
                kind, TeeKeyAlgorithm.RSA_OAEP_256
            )
        return cls(key, algorithm)

    @property
    def algorithm(self) -> TeeKeyAlgorithm:
        """The algorithm this key is advertised with."""
        return self._algorithm

    def public_jwk(self) -> dict[str, str]:
        """The ``tee-pubkey`` JWK, with exactly the kbs-types members (kbs-protocol.md §3: extra members break
        the KBS's runtime-data hash)."""
        members = tee_crypto.public_members(self._key)
        if "n" in members:
            return {"kty": "RSA", "alg": self._algorithm.jwe_alg, "n": _b64u(members["n"]), "e": _b64u(members["e"])}
        return {
            "kty": "EC",
            "crv": self._algorithm.key_kind,
            "alg": self._algorithm.jwe_alg,
            "x": _b64u(members["x"]),
            "y": _b64u(members["y"]),
        }

    def to_pem(self) -> bytes:
        """The private key as PKCS#8 PEM (for the passport hand-over only)."""
        return tee_crypto.to_pem(self._key)

    def decrypt(self, response: JweResponse, what: str) -> bytes:
        """The plaintext of a KBS resource answer encrypted to this key.

        Args:
            response: the parsed answer (:func:`cocoguest.kbs.protocol.parse_resource_response`).
            what: names the resource in messages.

        Raises:
            DecryptionIntegrityError: encrypted to another key, wrong algorithm, or altered.
            ProtocolError: malformed members.
        """
        # SECURITY: only the algorithm we advertised; an RSA-OAEP-256 key must not be used for RSA1_5.
        if response.alg != self._algorithm.jwe_alg:
            msg = (
                f"{what}: the KBS encrypted with {response.alg}, but this guest's TEE key is {self._algorithm.jwe_alg} "
                "(not encrypted to this guest's key)"
            )
            raise DecryptionIntegrityError(msg)
        return tee_crypto.decrypt_response(
            self._key,
            alg=response.alg,
            untrusted_protected=response.untrusted_protected,
            untrusted_epk=response.untrusted_epk,
            encrypted_key=response.encrypted_key,
            iv=response.iv,
            ciphertext=response.ciphertext,
            tag=response.tag,
            what=what,
        )

    def __repr__(self) -> str:
        """The algorithm only, never key material."""
        return f"TeeKeyPair({self._algorithm})"
