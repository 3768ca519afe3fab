"""Building the KBC that ``aa_kbc_params`` names.

Invariants:
    * ``cc_kbc`` needs an evidence source; there is no silent fallback to another KBC or to the sample TEE.
    * ``sample_kbc`` is insecure and warns on every use (see :mod:`cocoguest.kbs.kbc.sample_kbc`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cocoguest.errors import ConfigError
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.evidence import EvidenceSource
from cocoguest.kbs.kbc.base import Kbc
from cocoguest.kbs.kbc.cc_kbc import CcKbc
from cocoguest.kbs.kbc.offline_fs_kbc import OfflineFsKbcClient
from cocoguest.kbs.kbc.params import AaKbcParams
from cocoguest.kbs.kbc.sample_kbc import SampleKbc
from cocoguest.kbs.offline_fs import DEFAULT_PATHS, OfflineFsKbc
from cocoguest.kbs.tee_key import DEFAULT_TEE_KEY_ALGORITHM, TeeKeyAlgorithm
from cocoguest.limits import DEFAULT_LIMITS, Limits


def build_kbc(
    params: AaKbcParams,
    *,
    evidence: EvidenceSource | None = None,
    ca_cert_pem: bytes | None = None,
    tee_key_algorithm: TeeKeyAlgorithm = DEFAULT_TEE_KEY_ALGORITHM,
    offline_fs_paths: Sequence[Path] = DEFAULT_PATHS,
    sample_dir: Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Kbc:
    """The KBC named by ``params``.

    Args:
        params: resolved ``aa_kbc_params``.
        evidence: the attester, needed by ``cc_kbc``.
        ca_cert_pem: extra root for an HTTPS KBS.
        tee_key_algorithm: the TEE key of ``cc_kbc``.
        offline_fs_paths: the files of ``offline_fs_kbc``.
        sample_dir: the files of ``sample_kbc``.
        limits: caps and timeouts.

    Raises:
        ConfigError: ``cc_kbc`` without an evidence source, or unreadable KBC files.
    """
    if params.kbc_name == "cc_kbc":
        if evidence is None:
            msg = f"cc_kbc (aa_kbc_params from {params.source}) needs an attester to attest to {params.kbs_uri}"
            raise ConfigError(msg)
        client = KbsClient(
            params.kbs_uri, evidence, tee_key_algorithm=tee_key_algorithm, ca_cert_pem=ca_cert_pem, limits=limits
        )
        return CcKbc(client)
    if params.kbc_name == "offline_fs_kbc":
        return OfflineFsKbcClient(OfflineFsKbc.load(offline_fs_paths))
    return SampleKbc.from_directory(sample_dir, limits) if sample_dir is not None else SampleKbc()
