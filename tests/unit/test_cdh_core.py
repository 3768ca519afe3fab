"""CDH core without processes: config parsing, sealed secrets (seal -> unseal, refusals), local and aws KMS."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from cocoguest.cdh.config import default_cdh_config, parse_cdh_config
from cocoguest.cdh.kms.factory import KmsContext, new_decryptor
from cocoguest.cdh.kms.local import LocalKms
from cocoguest.cdh.secret.keys import SealedSecretKeys
from cocoguest.cdh.secret.seal import envelope_payload, seal
from cocoguest.cdh.secret.unseal import unseal_secret
from cocoguest.crypto.sealing import generate_p256_jwk_pair
from cocoguest.errors import ConfigError, ResourceNotFoundError, SealedSecretError
from cocoguest.kbs.kbc.params import parse_aa_kbc_params


def test_config_keys_as_upstream_and_refusals() -> None:
    text = b"""
socket = "127.0.0.1:50000"
[kbc]
name = "cc_kbc"
url = "http://1.2.3.4:8080"
[[credentials]]
resource_uri = "kbs:///default/credential/test"
path = "/run/confidential-containers/cdh/kbs/auth.json"
[image]
work_dir = "/run/image-rs"
image_security_policy_uri = "kbs:///default/security-policy/test"
max_concurrent_layer_downloads_per_image = 5
"""
    config = parse_cdh_config(text, "t.toml", json_format=False)
    assert config.socket == "127.0.0.1:50000"
    assert config.kbc.kbc_name == "cc_kbc"
    assert config.credentials[0].path == Path("/run/confidential-containers/cdh/kbs/auth.json")
    assert config.image.max_concurrent_layer_downloads_per_image == 5
    bad_path = text.replace(b"cdh/kbs/auth.json", b"cdh/kbs/../../etc/passwd")
    with pytest.raises(ConfigError, match="credential path"):
        parse_cdh_config(bad_path, "t.toml", json_format=False)
    with pytest.raises(ConfigError, match=r"image\.nope"):
        parse_cdh_config(text + b"nope = 1\n", "t.toml", json_format=False)


def test_defaults_from_kernel_cmdline() -> None:
    cmdline = (
        "quiet cdh.kbs_resources=kbs:///a/b/c::/run/confidential-containers/cdh/kbs/x "
        "agent.image_policy_file=kbs:///d/security-policy/p agent.enable_signature_verification=true"
    )
    config = default_cdh_config(parse_aa_kbc_params("offline_fs_kbc::null", "AA_KBC_PARAMS"), cmdline)
    assert config.credentials[0].resource_uri == "kbs:///a/b/c"
    assert config.image.image_security_policy_uri == "kbs:///d/security-policy/p"
    unverified = default_cdh_config(parse_aa_kbc_params("offline_fs_kbc::null", "x"), "agent.image_policy_file=p")
    assert unverified.image.image_security_policy_uri is None


def _local(tmp_path: Path) -> tuple[SealedSecretKeys, KmsContext, dict[str, str]]:
    private, public = generate_p256_jwk_pair("dev")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dev").write_text(json.dumps(public))
    (tmp_path / "kms" / "secrets").mkdir(parents=True)
    (tmp_path / "kms" / "keys").mkdir()
    (tmp_path / "kms" / "secrets" / "s1").write_bytes(b"local secret")
    (tmp_path / "kms" / "keys" / "k1").write_bytes(bytes(32))
    return SealedSecretKeys(None, tmp_path / "keys"), KmsContext(local_root=tmp_path / "kms"), private


def test_seal_unseal_vault_and_envelope_with_local_keys(tmp_path: Path) -> None:
    keys, kms, private = _local(tmp_path)
    vault = {"version": "0.1.0", "type": "vault", "name": "s1", "provider": "local"}
    vault |= {"provider_settings": {}, "annotations": {}}
    assert unseal_secret(seal(vault, "dev", private).encode(), keys, kms) == b"local secret"
    envelope = envelope_payload(b"envelope plaintext", "k1", "local", LocalKms(tmp_path / "kms"))
    assert unseal_secret(seal(envelope, "dev", private).encode(), keys, kms) == b"envelope plaintext"

    sealed = seal(vault, "dev", private)
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealedSecretError, match="does not verify"):
        unseal_secret(tampered.encode(), keys, kms)
    with pytest.raises(ResourceNotFoundError, match="unknown kid"):
        unseal_secret(seal(vault, "other", private).encode(), keys, kms)
    with pytest.raises(ConfigError, match="plain file name"):
        unseal_secret(seal(vault, "..", private).encode(), keys, kms)
    legacy = f"sealed.fakejwsheader.{base64.urlsafe_b64encode(json.dumps(vault).encode()).decode().rstrip('=')}.x"
    with pytest.raises(SealedSecretError):
        unseal_secret(legacy.encode(), keys, kms)
    assert unseal_secret(legacy.encode(), keys, kms, skip_verification=True) == b"local secret"


def test_aws_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"'aws' extra"):
        new_decryptor("AWS", {"region": "eu-west-1"}, KmsContext())
    with pytest.raises(ConfigError, match="no decrypter"):
        new_decryptor("kbs", {}, KmsContext())


def test_registry_access_from_image_settings(tmp_path: Path) -> None:
    """registries.conf from a kbs:/// resource (an offline_fs KBC), the auth file from a file, proxies as env."""
    from cocoguest.cdh.hub import Hub  # noqa: PLC0415
    from cocoguest.kbs.kbc.factory import build_kbc  # noqa: PLC0415

    conf = b'[[registry]]\nlocation = "mirror.example:5000"\ninsecure = true\n'
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"default/registry/conf": base64.b64encode(conf).decode()}))
    auth = tmp_path / "auth.json"
    auth.write_text('{"auths":{"mirror.example:5000":{"auth":"dTpw"}}}')
    work = tmp_path / "work"
    config = parse_cdh_config(
        (
            '[kbc]\nname = "offline_fs_kbc"\n[image]\n'
            f'work_dir = "{work}"\nregistry_configuration_uri = "kbs:///default/registry/conf"\n'
            f'authenticated_registry_credentials_uri = "{auth}"\n'
            '[image.image_pull_proxy]\nhttps_proxy = "http://proxy:3128"\nno_proxy = "localhost"\n'
        ).encode(),
        "test",
        json_format=False,
    )
    kbc = build_kbc(config.kbc, offline_fs_paths=[resources])
    access = Hub(config, kbc, agent=None).registry_access()  # type: ignore[arg-type]  # no AA needed here
    assert access.registries.source == "registry configuration kbs:///default/registry/conf"
    assert len(access.registries.rules) == 1
    written = work / ".cdh-auth.json"
    assert access.auth_files == (written,)
    assert written.read_bytes() == auth.read_bytes()
    assert written.stat().st_mode & 0o077 == 0
    assert access.env == {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost"}

    bad = parse_cdh_config(
        b'[kbc]\nname = "offline_fs_kbc"\n[image]\nregistry_configuration_uri = "kbs:///default/registry/none"\n',
        "test",
        json_format=False,
    )
    with pytest.raises(ResourceNotFoundError, match="default/registry/none"):
        Hub(bad, kbc, agent=None).registry_access()  # type: ignore[arg-type]


def test_extra_root_certificates_become_the_flat_cert_dir(tmp_path: Path) -> None:
    """[image] extra_root_certificates: a 0700 directory holding exactly those PEMs, used for every registry."""
    from cocoguest.cdh.hub import EXTRA_ROOTS_DIR_NAME, Hub  # noqa: PLC0415
    from cocoguest.kbs.kbc.factory import build_kbc  # noqa: PLC0415
    from tests.fixtures.registry import make_ca  # noqa: PLC0415

    pems = [make_ca(tmp_path / name, name).ca_cert.read_text() for name in ("ca-one", "ca-two")]
    work = tmp_path / "work"

    def config_with(roots: list[str]) -> bytes:
        return json.dumps(
            {"kbc": {"name": "offline_fs_kbc"}, "image": {"work_dir": str(work), "extra_root_certificates": roots}}
        ).encode()

    config = parse_cdh_config(config_with(pems), "test", json_format=True)
    kbc = build_kbc(config.kbc, offline_fs_paths=[])
    cert_dir = work / EXTRA_ROOTS_DIR_NAME
    cert_dir.mkdir(parents=True)
    (cert_dir / "stale.crt").write_text(pems[0])  # left by an earlier configuration: removed
    access = Hub(config, kbc, agent=None).registry_access()  # type: ignore[arg-type]  # no AA needed here
    assert access.flat_cert_dir == cert_dir
    assert cert_dir.stat().st_mode & 0o777 == 0o700
    files = sorted(cert_dir.iterdir())
    assert sorted(f.read_text() for f in files) == sorted(pems)
    assert all(f.suffix == ".crt" for f in files)
    tls = access.tls_for("registry.example:5000")
    assert tls.verify
    assert sorted(tls.ca_files) == files

    # A configuration without extra roots keeps the default (certs.d) lookup.
    plain = parse_cdh_config(config_with([]), "test", json_format=True)
    assert Hub(plain, kbc, agent=None).registry_access().flat_cert_dir is None  # type: ignore[arg-type]

    # SECURITY: a symlink in place of the directory is refused, not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for f in files:
        f.unlink()
    cert_dir.rmdir()
    cert_dir.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=EXTRA_ROOTS_DIR_NAME):
        Hub(config, kbc, agent=None).registry_access()  # type: ignore[arg-type]
    assert list(elsewhere.iterdir()) == []
