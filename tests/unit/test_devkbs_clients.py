"""The dev KBS with cocoguest's own clients: the KBS client (kbs/client.py), the admin CLI verbs, ``serve``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cocoguest.cli.kbs_admin_commands import config_group
from cocoguest.errors import KbsDeniedError
from cocoguest.kbs.client import KbsClient
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.tee_key import TeeKeyAlgorithm, TeeKeyPair
from tests.fixtures.devkbs import RcarClient, TeeKey, dev_kbs, unb64u
from tests.fixtures.test_kbs import SampleEvidence

INIT_DATA = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = '''\n[token_configs]\n'''\n"


@pytest.mark.parametrize("algorithm", list(TeeKeyAlgorithm))
def test_cocoguest_kbs_client_attests_and_gets_a_resource(tmp_path: Path, algorithm: TeeKeyAlgorithm) -> None:
    with dev_kbs(tmp_path) as kbs:
        assert kbs.admin("POST", "/kbs/v0/resource/default/image-kek/k1", b"\x01" * 32).status_code == 200
        client = KbsClient(kbs.url, SampleEvidence(), tee_key=TeeKeyPair.generate(algorithm), init_data_toml=INIT_DATA)
        assert client.get_resource(ResourceUri.parse("kbs:///default/image-kek/k1")) == b"\x01" * 32
        claims = json.loads(unb64u(client.get_token().token.raw.split(".")[1]))
        annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
        assert annotated["init_data"]  # base64 of SHA-384 of the TOML bytes
        assert annotated["init_data_claims"]["aa.toml"] == {"token_configs": {}}
        kbs.set_policy("deny_all.rego")
        with pytest.raises(KbsDeniedError, match="PolicyDeny"):
            client.get_resource(ResourceUri.parse("kbs:///default/image-kek/k1"))


def test_admin_cli_verbs(tmp_path: Path) -> None:
    runner = CliRunner()
    with dev_kbs(tmp_path) as kbs:
        secret = tmp_path / "secret"
        secret.write_bytes(b"from the cli")
        base = ["--url", kbs.url, "--auth-private-key", str(kbs.admin_key_file)]
        result = runner.invoke(config_group, [*base, "set-resource", "--path", "a/b/c", "--resource-file", str(secret)])
        assert result.exit_code == 0, result.output
        client = RcarClient(kbs.url, TeeKey.generate("P-256"))
        client.get_token()
        assert client.key.decrypt(client.get_resource("a/b/c").content) == b"from the cli"
        # no key: refused the Trustee way
        result = runner.invoke(config_group, ["--url", kbs.url, "delete-resource", "--path", "a/b/c"])
        assert result.exit_code != 0
        assert "AdminAuthInitialization" in str(result.exception)
        result = runner.invoke(config_group, [*base, "set-resource-policy", "--deny-all"])
        assert result.exit_code == 0, result.output
        assert client.get_resource("a/b/c").json()["type"].endswith("/PolicyDeny")
        policy = tmp_path / "p.rego"
        policy.write_text('package policy\nimport rego.v1\nallow if input.submods.cpu0["ear.status"] == "affirming"\n')
        assert runner.invoke(config_group, [*base, "set-resource-policy", "--policy-file", str(policy)]).exit_code == 0
        for name, value, flags in (
            ("svn", "1", []),
            ("launch_digest", "abcde", []),
            ("major_version", "1", ["--as-integer", "--as-single-value"]),
            ("minimum_minor_version", "1", ["--as-integer"]),
        ):
            result = runner.invoke(config_group, [*base, "set-sample-reference-value", name, value, *flags])
            assert result.exit_code == 0, result.output
        client = RcarClient(kbs.url, TeeKey.generate("RSA-OAEP-256"))
        client.get_token()
        assert client.key.decrypt(client.get_resource("a/b/c").content) == b"from the cli"
        attestation_policy = tmp_path / "cpu.rego"
        attestation_policy.write_text('package policy\nimport rego.v1\ntrust_claims := {"hardware": 97}\n')
        args = [*base, "set-attestation-policy", "--policy-file", str(attestation_policy)]
        assert runner.invoke(config_group, args).exit_code == 0
        client = RcarClient(kbs.url, TeeKey.generate("P-256"))
        client.get_token()
        assert client.get_resource("a/b/c").json()["type"].endswith("/PolicyDeny")
        result = runner.invoke(config_group, [*base, "delete-resource", "--path", "a/b/c"])
        assert result.exit_code == 0, result.output
        assert not (kbs.root / "repository/a/b/c").exists()


def test_serve_command_runs_from_a_trustee_shaped_config(tmp_path: Path) -> None:
    config = tmp_path / "kbs-config.toml"
    config.write_text(
        '[http_server]\nsockets = ["127.0.0.1:0"]\ninsecure_http = true\n\n[admin]\ninsecure_api = true\n\n'
        '[attestation_token]\nduration_min = 2\n\n[[plugins]]\nname = "resource"\ntype = "LocalFs"\n'
        'dir_path = "repo"\n\n[policy_engine]\npolicy_path = "policy.rego"\n'
    )
    code = (
        "import sys, threading\n"
        "from cocoguest.devkbs.config import load_config\n"
        "from cocoguest.devkbs.server import DevKbsServer\n"
        "s = DevKbsServer(load_config(__import__('pathlib').Path(sys.argv[1])))\n"
        "print(s.url, flush=True)\n"
        "s.serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(config)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.post(f"{url}/kbs/v0/resource/x/y/z", content=b"insecure api").status_code == 200
        assert (tmp_path / "repo/x/y/z").read_bytes() == b"insecure api"
        assert "default" in (tmp_path / "policy.rego").read_text()
        client = RcarClient(url, TeeKey.generate("P-256"))
        claims = json.loads(unb64u(client.get_token().split(".")[1]))
        assert claims["exp"] - claims["iat"] == 120
        assert client.get_resource("x/y/z").json()["type"].endswith("/PolicyDeny")  # default denies sample
    finally:
        proc.terminate()
        proc.wait(timeout=30)
