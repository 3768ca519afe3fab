"""Init-data: TOML shape, digest of the raw bytes by its algorithm, binding through the attesters."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path

import pytest

from cocoguest.attestation.attester import BindResult, HashAlgorithm
from cocoguest.attestation.configfs_tsm import PROVIDER_SNP, PROVIDER_TDX, ConfigfsTsm
from cocoguest.attestation.drivers.sample import SampleAttester
from cocoguest.attestation.drivers.snp import SnpAttester
from cocoguest.attestation.drivers.tdx import TdxAttester
from cocoguest.attestation.drivers.tpm import TpmAttester
from cocoguest.attestation.initdata import bind_init_data, decode_digest, parse_initdata
from cocoguest.errors import InitDataError, InitDataMismatchError
from cocoguest.limits import Limits
from tests.fixtures.tee_devices import FakeTsmKernel, SoftwareTpm, snp_report, td_quote_v4

TOML = """version = "0.1.0"
algorithm = "{algorithm}"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
"policy.rego" = '''
package agent_policy
default AllowRequestsFailingPolicy := true
'''
"""


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512", "sm3"])
def test_digest_is_the_algorithm_over_the_raw_bytes(algorithm: str) -> None:
    raw = TOML.format(algorithm=algorithm).encode()
    initdata = parse_initdata(raw)
    assert initdata.digest == hashlib.new(algorithm, raw).digest()
    assert initdata.version == "0.1.0"
    assert initdata.algorithm is HashAlgorithm.from_name(algorithm)
    assert set(initdata.data) == {"aa.toml", "policy.rego"}
    assert initdata.text() == raw.decode()


def test_raw_bytes_not_reserialised() -> None:
    raw = TOML.format(algorithm="sha384").encode()
    same_meaning = raw.replace(b'version = "0.1.0"', b'version   =   "0.1.0"   # comment')
    assert parse_initdata(same_meaning).data == parse_initdata(raw).data
    assert parse_initdata(same_meaning).digest != parse_initdata(raw).digest
    assert parse_initdata(same_meaning).digest == hashlib.sha384(same_meaning).digest()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'version = "0.1.0"\nalgorithm = "md5"\n', "algorithm"),
        (b'version = "0.1.0"\n', "algorithm"),
        (b'version = 1\nalgorithm = "sha256"\n', "version"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\ndata = "x"\n', "'data' must be a table"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"a" = 1\n', "must be a string"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\nextra = "x"\n', "unknown key"),
        (b'version = "0.1.0"\nalgorithm = ', "not valid TOML"),
        (b'version = "\xff"\nalgorithm = "sha256"\n', "not UTF-8"),
    ],
)
def test_malformed_documents_refused(document: bytes, message: str) -> None:
    with pytest.raises(InitDataError, match=message):
        parse_initdata(document)


def test_size_and_entry_limits() -> None:
    raw = TOML.format(algorithm="sha256").encode()
    with pytest.raises(InitDataError, match="larger than"):
        parse_initdata(raw, limits=Limits(max_initdata_bytes=len(raw) - 1))
    with pytest.raises(InitDataError, match="2 entries"):
        parse_initdata(raw, limits=Limits(max_initdata_entries=1))


def test_decode_digest() -> None:
    digest = hashlib.sha384(b"x").digest()
    assert decode_digest(base64.b64encode(digest).decode()) == digest
    with pytest.raises(InitDataError, match="base64"):
        decode_digest("not base64!")
    with pytest.raises(InitDataError, match="5 bytes"):
        decode_digest(base64.b64encode(b"12345").decode())


def _tsm(tmp_path: Path, provider: str, respond) -> ConfigfsTsm:  # type: ignore[no-untyped-def]
    kernel = FakeTsmKernel(tmp_path / "tsm", provider, respond)
    return ConfigfsTsm(kernel.root, create_entry=kernel.create_entry, remove_entry=kernel.remove_entry)


def test_binding_tdx_mrconfigid(tmp_path: Path) -> None:
    initdata = parse_initdata(TOML.format(algorithm="sha384").encode())
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    (measurements / "mrconfigid").write_bytes(initdata.digest)
    tdx = TdxAttester(tsm=_tsm(tmp_path, PROVIDER_TDX, td_quote_v4), measurements_dir=measurements)
    assert bind_init_data(tdx, initdata.digest) is BindResult.BOUND
    wrong = parse_initdata(TOML.format(algorithm="sha384").encode() + b"\n")
    with pytest.raises(InitDataMismatchError):
        bind_init_data(tdx, wrong.digest)


def test_binding_snp_host_data(tmp_path: Path) -> None:
    initdata = parse_initdata(TOML.format(algorithm="sha256").encode())
    snp = SnpAttester(tsm=_tsm(tmp_path, PROVIDER_SNP, lambda rd: snp_report(rd, host_data=initdata.digest)))
    assert bind_init_data(snp, initdata.digest) is BindResult.BOUND
    with pytest.raises(InitDataMismatchError):
        bind_init_data(snp, hashlib.sha256(b"other").digest())


def test_binding_vtpm_pcr8() -> None:
    initdata = parse_initdata(TOML.format(algorithm="sha256").encode())
    tpm = SoftwareTpm()
    assert bind_init_data(TpmAttester(tpm, b""), initdata.digest) is BindResult.BOUND
    assert tpm.read_pcr(8) == hashlib.sha256(bytes(32) + hashlib.sha256(initdata.raw).digest()).digest()


def test_unsupported_binding_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert bind_init_data(SampleAttester(), bytes(48)) is BindResult.UNSUPPORTED
    assert any("NOT checked" in r.message for r in caplog.records)
