"""The key-provider ``UnWrapKey`` core of the attestation-agent provider (guest-components.md §7.2).

Steps: (1) parse the AnnotationPacket (v1/v2); (2) only the ``kbs`` provider is served here (KMS providers
belong to CDH); (3) the KBC obtains the KEK named by ``kid`` and decrypts ``wrapped_data``; the result is the
layer's private options JSON (ocicrypt ``optsdata``).

Invariant: no RPC or proto types here; the rpc layer decodes the request and calls :func:`unwrap_key`.
"""

from __future__ import annotations

from cocoguest.errors import UnsupportedError
from cocoguest.kbs.annotation_packet import DEFAULT_PROVIDER, parse_annotation_packet
from cocoguest.kbs.kbc.base import Kbc
from cocoguest.limits import DEFAULT_LIMITS, Limits


def unwrap_key(untrusted_packet: bytes, kbc: Kbc, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The layer key options wrapped in the AnnotationPacket JSON ``untrusted_packet``.

    Raises:
        ProtocolError: a malformed packet.
        UnsupportedError: a provider other than ``kbs``.
        ResourceNotFoundError, KbsDeniedError, TransportError: the KBC could not release the KEK.
        DecryptionIntegrityError: the KEK does not open the packet (wrong key or altered packet).
    """
    packet = parse_annotation_packet(untrusted_packet, limits)  # (1)
    if packet.provider != DEFAULT_PROVIDER:  # (2)
        msg = f"AnnotationPacket {packet.kid[:200]}: provider {packet.provider[:64]!r} is not served by {kbc.name}"
        raise UnsupportedError(msg)
    return kbc.decrypt_payload(packet)  # (3)
