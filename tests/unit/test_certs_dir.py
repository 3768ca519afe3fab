"""certs.d lookup (registry/config/certs_d.py): CA files, client certificate pairs, directory order, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoguest.errors import ConfigError
from cocoguest.registry.config.certs_d import default_cert_dirs, tls_settings_for, tls_settings_in
from cocoguest.registry.types import TlsSettings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _host_dir(root: Path, host: str, *names: str) -> Path:
    directory = root / host
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_text(PEM)
    return directory


def test_default_cert_dirs() -> None:
    assert default_cert_dirs({"HOME": "/home/u"}) == [
        Path("/home/u/.config/containers/certs.d"),
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    ]
    assert default_cert_dirs({}) == [Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]


def test_ca_files_and_client_pair(tmp_path: Path) -> None:
    directory = _host_dir(tmp_path, "localhost:5000", "b.crt", "a.crt", "client.cert", "client.key", "README")
    settings = tls_settings_for("localhost:5000", [tmp_path])
    assert settings == TlsSettings(
        verify=True,
        ca_files=(directory / "a.crt", directory / "b.crt"),
        client_cert=(directory / "client.cert", directory / "client.key"),
    )


def test_verify_flag_is_kept(tmp_path: Path) -> None:
    _host_dir(tmp_path, "r.io", "ca.crt")
    assert not tls_settings_for("r.io", [tmp_path], verify=False).verify
    assert not tls_settings_for("other.io", [tmp_path], verify=False).verify


def test_nothing_for_host_gives_defaults(tmp_path: Path) -> None:
    _host_dir(tmp_path, "r.io", "ca.crt")
    assert tls_settings_for("r.io:443", [tmp_path, tmp_path / "missing"]) == TlsSettings()
    assert tls_settings_for("r.io", []) == TlsSettings()


def test_first_directory_with_the_host_wins_and_is_not_merged(tmp_path: Path) -> None:
    first, second, third = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    _host_dir(first, "other.io", "x.crt")
    chosen = _host_dir(second, "r.io", "second.crt")
    _host_dir(third, "r.io", "third.crt")
    settings = tls_settings_for("r.io", [first, second, third])
    assert settings.ca_files == (chosen / "second.crt",)


def test_empty_host_directory_still_wins(tmp_path: Path) -> None:
    (tmp_path / "1" / "r.io").mkdir(parents=True)
    _host_dir(tmp_path / "2", "r.io", "ca.crt")
    assert tls_settings_for("r.io", [tmp_path / "1", tmp_path / "2"]) == TlsSettings()


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["client.cert"], r"client certificate client\.cert has no key client\.key"),
        (["client.key"], r"key client\.key has no client certificate client\.cert"),
        (["a.cert", "a.key", "b.cert", "b.key"], r"several client certificates \(a\.cert, b\.cert\)"),
        (["ca.pem.cert"], r"ca\.pem\.cert has no key ca\.pem\.key"),
    ],
)
def test_pair_errors_name_the_files(tmp_path: Path, names: list[str], fragment: str) -> None:
    directory = _host_dir(tmp_path, "r.io", *names)
    with pytest.raises(ConfigError, match=fragment) as info:
        tls_settings_for("r.io", [tmp_path])
    assert str(directory) in str(info.value)


def test_non_file_entries_are_errors(tmp_path: Path) -> None:
    directory = _host_dir(tmp_path, "r.io")
    (directory / "weird.crt").mkdir()
    with pytest.raises(ConfigError, match=r"weird\.crt is not a regular file"):
        tls_settings_for("r.io", [tmp_path])


def test_host_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "r.io").write_text("not a directory")
    with pytest.raises(ConfigError, match="not a directory"):
        tls_settings_for("r.io", [tmp_path])


def test_symlinked_files_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.crt"
    real.write_text(PEM)
    directory = _host_dir(tmp_path / "certs.d", "r.io")
    (directory / "linked.crt").symlink_to(real)
    assert tls_settings_for("r.io", [tmp_path / "certs.d"]).ca_files == (directory / "linked.crt",)


@pytest.mark.parametrize("host", ["", ".", "..", "../etc", "a/b", "a\\b", "a\0b"])
def test_hosts_cannot_escape(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="invalid registry host"):
        tls_settings_for(host, [tmp_path])


def test_flat_directory(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(PEM)
    assert tls_settings_in(tmp_path).ca_files == (tmp_path / "ca.crt",)
    assert tls_settings_in(tmp_path / "missing", verify=False) == TlsSettings(verify=False)


def test_unreadable_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError, match="cannot read"):
        tls_settings_in(not_a_dir)
