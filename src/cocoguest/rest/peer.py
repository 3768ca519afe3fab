"""Who may use api-server-rest: loopback clients only (upstream: ``remote_addr.ip().is_loopback()``).

Invariant: SECURITY: the decision uses only the socket's peer address; no header (``X-Forwarded-For``,
``Forwarded``, ``X-Real-IP``) is ever consulted, so a client cannot talk its way in.
"""

from __future__ import annotations

import ipaddress


def is_loopback_peer(host: str) -> bool:
    """Whether the socket peer ``host`` (an IP address text, optionally with an IPv6 zone) is a loopback address.

    ``127.0.0.0/8``, ``::1`` and IPv4-mapped ``::ffff:127.x.x.x`` are loopback; anything unparsable is not.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # SECURITY: an unknown peer is not trusted
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
