"""``cocoguest evidence``: print this guest's TEE evidence (upstream's ``evidence_getter``).

``cocoguest evidence [--runtime-data B64] [--allow-sample-attester]`` prints one line per attester, the primary
TEE first, then each additional device (``ENABLE_SAMPLE_DEVICE`` adds ``sampledevice``)::

    <tee>:<evidence JSON>

As upstream, the report data is the runtime data zero-padded to 64 bytes (32 for the Azure vTPM TEEs). Unlike
upstream, ``<tee>`` is the wire name (``sample``, ``tdx``; upstream prints Rust's ``Debug`` form ``Sample``), and
runtime data longer than the field is refused instead of truncated.

Invariants:
    * SECURITY: never truncates report data (a truncated value binds less than the caller asked for).
    * SECURITY: the sample attester only with ``--allow-sample-attester``; without a TEE the error names every probe.
    * Nothing is printed to stdout unless every attester produced its evidence.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import click

from cocoguest.attestation.attester import Tee, encode_evidence
from cocoguest.cli.attester_source import select_all_attesters
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.errors import ConfigError

REPORT_DATA_BYTES: Final = 64
_NARROW_REPORT_DATA: Final = {Tee.AZ_SNP_VTPM: 32, Tee.AZ_TDX_VTPM: 32}


def parse_runtime_data(text: str) -> bytes:
    """The bytes of ``--runtime-data`` (standard base64, padded).

    Raises:
        ConfigError: not base64, or longer than 64 bytes.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"--runtime-data: {text[:80]!r} is not standard base64"
        raise ConfigError(msg) from e
    if len(data) > REPORT_DATA_BYTES:
        msg = f"--runtime-data: {len(data)} bytes, more than the {REPORT_DATA_BYTES} bytes of report data"
        raise ConfigError(msg)
    return data


def report_data_for(tee: Tee, runtime_data: bytes) -> bytes:
    """``runtime_data`` zero-padded to the width ``evidence_getter`` uses for ``tee``.

    Raises:
        ConfigError: ``runtime_data`` does not fit (never truncated).
    """
    width = _NARROW_REPORT_DATA.get(tee, REPORT_DATA_BYTES)
    if len(runtime_data) > width:
        msg = f"{tee}: runtime data of {len(runtime_data)} bytes does not fit its {width}-byte report data"
        raise ConfigError(msg)
    return runtime_data.ljust(width, b"\0")


@click.command("evidence")
@click.option("--runtime-data", default="", metavar="B64", help="Report data (base64, at most 64 bytes).")
@click.option(
    "--allow-sample-attester",
    is_flag=True,
    help="Use the sample attester when no TEE is found (INSECURE: development only; warns on every use).",
)
def evidence_command(runtime_data: str, allow_sample_attester: bool) -> None:
    """Print the evidence of this guest's TEE (and additional devices) for the given runtime data."""
    data = parse_runtime_data(runtime_data)
    env = environment()
    attesters = select_all_attesters(allow_sample_attester, env, limits_from_env(env))
    lines = [
        f"{attester.tee}:{encode_evidence(attester.evidence(report_data_for(attester.tee, data))).decode('utf-8')}"
        for attester in attesters
    ]
    click.echo("\n".join(lines))
