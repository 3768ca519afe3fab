"""The AA config model (attestation/config.py): upstream's TOML and JSON examples, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoguest.attestation.config import (
    AaConfig,
    CocoAsTokenConfig,
    EventLogConfig,
    KbsTokenConfig,
    default_aa_config,
    load_aa_config,
)
from cocoguest.errors import ConfigError
from cocoguest.kbs.kbc.params import parse_aa_kbc_params
from cocoguest.kbs.tee_key import TeeKeyAlgorithm
from cocoguest.limits import DEFAULT_LIMITS

TOML = """
[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "https://127.0.0.1:8080/"
cert = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----"
tee_key_algorithm = "RSA-OAEP-256"

[eventlog_config]
init_pcr = 17
enable_eventlog = true

[log]
level = "debug"
"""

JSON = """{
  "token_configs": {"kbs": {"url": "http://127.0.0.1:8080"}, "coco_as": {"url": "http://127.0.0.1:8000"}},
  "eventlog_config": {"init_pcr": 16, "enable_eventlog": false},
  "allow_sample_attester": true
}"""


def test_toml_example(tmp_path: Path) -> None:
    path = tmp_path / "aa.toml"
    path.write_text(TOML)
    config = load_aa_config(path)
    assert config.kbs == KbsTokenConfig(
        "https://127.0.0.1:8080",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        TeeKeyAlgorithm.RSA_OAEP_256,
    )
    assert config.coco_as == CocoAsTokenConfig("http://127.0.0.1:8000")
    assert config.eventlog == EventLogConfig(17, True)
    assert (config.log_level, config.allow_sample_attester, config.source) == ("debug", False, str(path))


def test_json_example(tmp_path: Path) -> None:
    path = tmp_path / "aa.json"
    path.write_text(JSON)
    config = load_aa_config(path)
    assert config.kbs == KbsTokenConfig("http://127.0.0.1:8080")
    assert config.eventlog == EventLogConfig(16, False)
    assert config.allow_sample_attester is True


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "aa.toml"
    path.write_text("")
    config = load_aa_config(path)
    assert (config.kbs, config.coco_as, config.eventlog, config.allow_sample_attester) == (
        None,
        None,
        EventLogConfig(17, False),
        False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[eventlog_config]\nenable_event_log = true\n", "unknown key(s) 'eventlog_config.enable_event_log'"),
        ('[token_configs.kbs]\nurl = "ftp://x"\n', "token_configs.kbs.url 'ftp://x' is not an http(s)"),
        ('[token_configs.kbs]\ncert = "x"\n', "token_configs.kbs.url is required"),
        ('[token_configs.kbs]\nurl = "http://k"\ntee_key_algorithm = "A"\n', "unknown TEE key algorithm 'A'"),
        ("[eventlog_config]\ninit_pcr = 24\n", "init_pcr must be a PCR number 0-23"),
        ('[eventlog_config]\nenable_eventlog = "yes"\n', "enable_eventlog must be true or false"),
        ("allow_sample_attester = 1\n", "allow_sample_attester must be true or false"),
        ('[log]\nlevel = "loud"\n', "log.level 'loud' is not one of"),
        ("token_configs = 3\n", "token_configs must be a table"),
        ("[[x\n", "not valid TOML"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "aa.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"AA config .*aa\.toml") as caught:
        load_aa_config(path)
    assert expected in str(caught.value)


def test_oversized_and_non_json(tmp_path: Path) -> None:
    big = tmp_path / "aa.toml"
    big.write_bytes(b"#" * (DEFAULT_LIMITS.max_aa_config_bytes + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_aa_config(big)
    bad = tmp_path / "aa.json"
    bad.write_text("[1]")
    with pytest.raises(ConfigError, match=r"aa\.json"):
        load_aa_config(bad)


def test_default_config_from_aa_kbc_params() -> None:
    config = default_aa_config(parse_aa_kbc_params("cc_kbc::http://10.0.0.1:8080", "AA_KBC_PARAMS"))
    assert config.kbs == KbsTokenConfig("http://10.0.0.1:8080")
    assert "AA_KBC_PARAMS" in config.source
    assert default_aa_config(parse_aa_kbc_params("offline_fs_kbc::null", "x")) == AaConfig()
    assert default_aa_config(None) == AaConfig()
