"""The pull's key broker client: ``aa_kbc_params`` from flag, environment or kernel command line, built once.

Sources, highest first (kbs/kbc/params.py; DESIGN.md §5): ``--aa-kbc-params``, ``AA_KBC_PARAMS``, the kernel
command line's ``agent.aa_kbc_params=`` (``/proc/cmdline``), then the default ``offline_fs_kbc::null``.

The one KBC built here serves both the ``kbs:///`` locations of the policy, registries.d and keys
(``PolicySettings.resources``) and the ``provider.attestation-agent`` layer keys
(:class:`~cocoguest.kbs.kbc.layer_unwrapper.KbcLayerKeyUnwrapper`). For ``cc_kbc`` that is one KBS client with one
token cache, so a pull attests once per token lifetime, however many layers and policy documents it reads.

Invariants:
    * ``offline_fs_kbc`` (the default) reads the offline_fs files (the default paths that exist, then
      ``--offline-fs-resources``); with the default and no such file there is no KBC and nothing is served.
    * ``cc_kbc`` attests with this guest's TEE; the sample attester only with ``--allow-sample-attester``.
    * A malformed value of the winning source is an error, never skipped (see ``resolve_aa_kbc_params``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cocoguest.cli.attester_source import select_evidence_source
from cocoguest.cli.kbs_commands import read_ca_certificate
from cocoguest.errors import ConfigError
from cocoguest.kbs.kbc.base import Kbc
from cocoguest.kbs.kbc.factory import build_kbc
from cocoguest.kbs.kbc.params import DEFAULT_SOURCE, AaKbcParams, resolve_aa_kbc_params
from cocoguest.kbs.offline_fs import DEFAULT_PATHS
from cocoguest.limits import Limits

KERNEL_CMDLINE: Final = Path("/proc/cmdline")
ENV_VARIABLE: Final = "AA_KBC_PARAMS"


def read_kernel_cmdline(path: Path = KERNEL_CMDLINE, limit: int = 64 * 1024) -> str | None:
    """The kernel command line text, or ``None`` where there is none (not Linux, no procfs)."""
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def resolve_params(flag: str | None, env: Mapping[str, str], cmdline_path: Path = KERNEL_CMDLINE) -> AaKbcParams:
    """The effective ``aa_kbc_params`` (module docstring order).

    Raises:
        ConfigError: the winning value is malformed (names its source).
    """
    return resolve_aa_kbc_params(flag=flag, env=env.get(ENV_VARIABLE), cmdline=read_kernel_cmdline(cmdline_path))


def pull_kbc(
    params: AaKbcParams,
    *,
    allow_sample_attester: bool,
    kbs_cert_file: Path | None,
    offline_fs_resources: Sequence[Path],
    env: Mapping[str, str],
    limits: Limits,
) -> Kbc | None:
    """The KBC of a pull, or ``None`` when nothing is configured (the default and no offline_fs file).

    Raises:
        ConfigError: options that do not fit the KBC, an unreadable certificate or offline_fs file.
        TeeNotFoundError: ``cc_kbc`` on a TEE-less machine without ``--allow-sample-attester``.
        UnsupportedError: a detected TEE that cannot be driven here.
    """
    if params.kbc_name != "offline_fs_kbc" and offline_fs_resources:
        msg = (
            f"--offline-fs-resources serves offline_fs_kbc, "
            f"but aa_kbc_params from {params.source} selects {params.kbc_name}"
        )
        raise ConfigError(msg)
    if params.kbc_name != "cc_kbc" and kbs_cert_file is not None:
        msg = f"--kbs-cert-file is for cc_kbc, but aa_kbc_params from {params.source} selects {params.kbc_name}"
        raise ConfigError(msg)
    offline_fs_paths = [p for p in DEFAULT_PATHS if p.exists()] + list(offline_fs_resources)
    if params.kbc_name == "offline_fs_kbc" and params.source == DEFAULT_SOURCE and not offline_fs_paths:
        return None
    evidence = None
    ca_cert_pem = None
    if params.kbc_name == "cc_kbc":
        ca_cert_pem = read_ca_certificate(kbs_cert_file, limits) if kbs_cert_file is not None else None
        evidence = select_evidence_source(allow_sample_attester, env, limits)
    return build_kbc(
        params, evidence=evidence, ca_cert_pem=ca_cert_pem, offline_fs_paths=offline_fs_paths, limits=limits
    )
