"""Key broker clients (guest-components.md §7.1): ``cc_kbc``, ``offline_fs_kbc``, ``sample_kbc``.

Each is a :class:`~cocoguest.kbs.provider.ResourceProvider` plus ``decrypt_payload`` for AnnotationPackets;
:func:`~cocoguest.kbs.kbc.factory.build_kbc` builds the one ``aa_kbc_params`` names.
"""

from __future__ import annotations

from cocoguest.kbs.kbc.base import Kbc
from cocoguest.kbs.kbc.cc_kbc import CcKbc
from cocoguest.kbs.kbc.offline_fs_kbc import OfflineFsKbcClient
from cocoguest.kbs.kbc.params import AaKbcParams, parse_aa_kbc_params, resolve_aa_kbc_params
from cocoguest.kbs.kbc.sample_kbc import SampleKbc

__all__ = [
    "AaKbcParams",
    "CcKbc",
    "Kbc",
    "OfflineFsKbcClient",
    "SampleKbc",
    "parse_aa_kbc_params",
    "resolve_aa_kbc_params",
]
