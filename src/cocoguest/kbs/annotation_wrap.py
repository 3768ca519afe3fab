"""Making an AnnotationPacket v1: the wrap that coco-keyprovider does (guest-components.md §7.2, §7.4).

The packet is ``{"kid","wrapped_data","iv","wrap_type"}`` with standard padded base64, exactly the v1 shape
upstream's coco_keyprovider emits; :func:`cocoguest.kbs.annotation_packet.parse_annotation_packet` reads it back.

Invariants:
    * Pure apart from the random IV: no IO.
    * The output always parses with :func:`~cocoguest.kbs.annotation_packet.parse_annotation_packet` and
      decrypts with :func:`~cocoguest.kbs.annotation_packet.decrypt_with_kek` under the same KEK.
"""

from __future__ import annotations

import base64
import json

from cocoguest.crypto import kek_wrap
from cocoguest.kbs.resource_uri import ResourceUri


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrap_to_packet(
    kid: ResourceUri, kek: bytes, private_options: bytes, wrap_type: str = "A256GCM", iv: bytes | None = None
) -> bytes:
    """The AnnotationPacket v1 JSON sealing ``private_options`` under ``kek`` (a fresh IV unless given).

    Raises:
        UnsupportedError: an unknown wrap type.
        ProtocolError: a KEK that is not 32 bytes or an IV of the wrong length.
    """
    iv = kek_wrap.random_iv(wrap_type) if iv is None else iv
    sealed = kek_wrap.seal(wrap_type, kek, iv, private_options)
    packet = {"kid": str(kid), "wrapped_data": _b64(sealed), "iv": _b64(iv), "wrap_type": wrap_type}
    return json.dumps(packet, separators=(",", ":")).encode("utf-8")
