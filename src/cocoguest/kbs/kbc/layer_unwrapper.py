"""Native ``provider:attestation-agent`` layer keys: an ocicrypt key unwrapper over a KBC (guest-components.md §7.2).

A layer encrypted through the attestation-agent key provider carries
``org.opencontainers.image.enc.keys.provider.attestation-agent`` whose entries are AnnotationPacket JSON documents.
:class:`KbcLayerKeyUnwrapper` opens them in process, through :func:`~cocoguest.kbs.key_unwrap.unwrap_key` and the
configured KBC (the KEK is the KBS resource at the packet's ``kid``), with no key provider process or config.

It satisfies :class:`cocoguest.ocicrypt.keywrap.KeyUnwrapper` structurally, so ``kbs`` does not import ``ocicrypt``.

Invariants:
    * Handles exactly the ``provider.attestation-agent`` annotation.
    * A KEK that does not open the packet (:class:`DecryptionIntegrityError`) or a malformed or non-``kbs`` packet
      is a :class:`KeyUnwrapError` naming the packet's ``kid`` (another entry or key may still fit); a KEK the KBC
      could not obtain (not found, policy denial, attestation or transport failure) propagates unchanged: it
      names the resource and the KBS's reason, and retrying other entries against the same KBS would not help.
    * Only AES-GCM-authenticated packet plaintext is returned for ``A256GCM`` (see ``annotation_packet``).
"""

from __future__ import annotations

from typing import Final

from cocoguest.errors import (
    DecryptionIntegrityError,
    KbsProtocolError,
    KeyUnwrapError,
    ProtocolError,
    UnsupportedError,
)
from cocoguest.kbs.kbc.base import Kbc
from cocoguest.kbs.key_unwrap import unwrap_key
from cocoguest.limits import DEFAULT_LIMITS, Limits

PROVIDER_NAME: Final = "attestation-agent"
SCHEME: Final = f"provider.{PROVIDER_NAME}"
ANNOTATION_KEY: Final = f"org.opencontainers.image.enc.keys.{SCHEME}"
"""The layer annotation the attestation-agent key provider writes (ocicrypt.md §5.5)."""


class KbcLayerKeyUnwrapper:
    """Unwraps ``provider.attestation-agent`` layer keys with a KBC (``cc_kbc``, ``offline_fs_kbc``, ...)."""

    __slots__ = ("_kbc", "_limits")

    def __init__(self, kbc: Kbc, limits: Limits = DEFAULT_LIMITS) -> None:
        """Unwrap with ``kbc``; packets are bounded by ``limits.max_annotation_packet_bytes``."""
        self._kbc = kbc
        self._limits = limits

    @property
    def scheme(self) -> str:
        """``provider.attestation-agent``."""
        return SCHEME

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.provider.attestation-agent``."""
        return annotation_key == ANNOTATION_KEY

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """The private options in the AnnotationPacket ``entry`` (raw JSON bytes, already base64-decoded).

        Raises:
            ValueError: ``annotation_key`` is not the attestation-agent one (a programming error).
            KeyUnwrapError: the packet is malformed or for another provider, or the KEK does not open it.
            ResourceNotFoundError, KbsDeniedError, KbsProtocolError, TransportError, AttestationError: the KBC
                could not release the KEK (see the module docstring).
        """
        if not self.handles(annotation_key):
            msg = f"{SCHEME} cannot unwrap {annotation_key}"
            raise ValueError(msg)
        try:
            return unwrap_key(entry, self._kbc, self._limits)
        except KbsProtocolError:
            raise  # the KBS answered badly: not a property of this packet
        except (DecryptionIntegrityError, UnsupportedError, ProtocolError) as e:
            msg = f"{SCHEME} ({self._kbc.name}): {e}"
            raise KeyUnwrapError(msg) from e
