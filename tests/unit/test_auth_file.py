"""containers-auth.json lookup (registry/config/auth_file.py): default paths, key order, normalisation, errors."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError
from cocoguest.oci.reference import ImageReference
from cocoguest.registry.config.auth_file import default_auth_files, load_credentials


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _auths(tmp_path: Path, entries: dict[str, object], name: str = "auth.json") -> Path:
    return _write(tmp_path / name, {"auths": entries})


def _ref(text: str) -> ImageReference:
    return ImageReference.parse(text)


# --- default paths -----------------------------------------------------------------------------------------


def test_registry_auth_file_is_the_only_file() -> None:
    env = {"REGISTRY_AUTH_FILE": "/x/auth.json", "HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1"}
    assert default_auth_files(env, 1000) == [Path("/x/auth.json")]


def test_default_order_with_xdg_variables() -> None:
    env = {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg"}
    assert default_auth_files(env, 7) == [
        Path("/run/user/7/containers/auth.json"),
        Path("/cfg/containers/auth.json"),
        Path("/home/u/.docker/config.json"),
        Path("/home/u/.dockercfg"),
    ]


def test_default_order_without_xdg_variables_and_docker_config() -> None:
    env = {"HOME": "/home/u", "DOCKER_CONFIG": "/dc"}
    assert default_auth_files(env, 42) == [
        Path("/run/containers/42/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
        Path("/dc/config.json"),
        Path("/home/u/.dockercfg"),
    ]


def test_default_home_falls_back_to_passwd() -> None:
    files = default_auth_files({}, 0)  # root is always in /etc/passwd
    assert files[0] == Path("/run/containers/0/auth.json")
    assert files[-1].name == ".dockercfg"
    assert len(files) == 4


# --- lookup order ------------------------------------------------------------------------------------------


def test_repository_beats_namespace_beats_host(tmp_path: Path) -> None:
    path = _auths(
        tmp_path,
        {
            "quay.io": {"auth": _b64("host:h")},
            "quay.io/ns": {"auth": _b64("ns:n")},
            "quay.io/ns/repo": {"auth": _b64("repo:r")},
        },
    )
    creds = load_credentials(_ref("quay.io/ns/repo:1"), [path])
    assert creds is not None
    assert (creds.username, creds.password) == ("repo", "r")
    assert creds.source == f"{path} (quay.io/ns/repo)"
    creds = load_credentials(_ref("quay.io/ns/other"), [path])
    assert creds is not None
    assert creds.username == "ns"
    creds = load_credentials(_ref("quay.io/elsewhere/x"), [path])
    assert creds is not None
    assert creds.username == "host"
    assert load_credentials(_ref("example.com/ns/repo"), [path]) is None


def test_deep_namespaces_and_no_partial_component_match(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"r.io/a/b": {"auth": _b64("ab:1")}, "r.io/a/bc": {"auth": _b64("abc:1")}})
    creds = load_credentials(_ref("r.io/a/b/c/d"), [path])
    assert creds is not None
    assert creds.username == "ab"
    assert load_credentials(_ref("r.io/a/bcd"), [path]) is None


def test_first_file_with_an_entry_wins(tmp_path: Path) -> None:
    first = _auths(tmp_path, {"quay.io": {"auth": _b64("first:1")}}, "a.json")
    second = _auths(tmp_path, {"quay.io/ns/repo": {"auth": _b64("second:2")}}, "b.json")
    missing = tmp_path / "missing.json"
    creds = load_credentials(_ref("quay.io/ns/repo"), [missing, first, second])
    assert creds is not None
    assert creds.username == "first"  # a file's host entry beats a later file's repository entry
    creds = load_credentials(_ref("quay.io/ns/repo"), [second, first])
    assert creds is not None
    assert creds.username == "second"


def test_no_files_means_anonymous(tmp_path: Path) -> None:
    assert load_credentials(_ref("quay.io/x"), []) is None
    assert load_credentials(_ref("quay.io/x"), [tmp_path / "nope.json"]) is None


def test_empty_entry_ends_the_search_in_that_file(tmp_path: Path) -> None:
    # Docker writes {} for hosts held by a credential helper: containers/image moves to the next file.
    first = _auths(tmp_path, {"quay.io": {}, "https://quay.io": {"auth": _b64("hidden:1")}}, "a.json")
    second = _auths(tmp_path, {"quay.io": {"auth": _b64("next:2")}}, "b.json")
    creds = load_credentials(_ref("quay.io/x"), [first, second])
    assert creds is not None
    assert creds.username == "next"
    assert load_credentials(_ref("quay.io/x"), [first]) is None


# --- docker.io and key normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io", "http://docker.io"]
)
def test_docker_hub_legacy_keys(tmp_path: Path, key: str) -> None:
    path = _auths(tmp_path, {key: {"auth": _b64("hub:secret")}})
    creds = load_credentials(_ref("busybox"), [path])
    assert creds is not None
    assert (creds.username, creds.password) == ("hub", "secret")
    assert key in creds.source


def test_docker_hub_repository_key(tmp_path: Path) -> None:
    path = _auths(
        tmp_path,
        {"https://index.docker.io/v1/": {"auth": _b64("hub:1")}, "docker.io/library/busybox": {"auth": _b64("bb:2")}},
    )
    creds = load_credentials(_ref("busybox:1.36"), [path])
    assert creds is not None
    assert creds.username == "bb"
    creds = load_credentials(_ref("library/alpine"), [path])
    assert creds is not None
    assert creds.username == "hub"


@pytest.mark.parametrize("key", ["https://quay.io", "http://quay.io/", "https://quay.io/v2/", "http://quay.io/v1/"])
def test_url_keys_are_normalised_to_hosts(tmp_path: Path, key: str) -> None:
    path = _auths(tmp_path, {key: {"auth": _b64("u:p")}})
    creds = load_credentials(_ref("quay.io/ns/repo"), [path])
    assert creds is not None
    assert creds.username == "u"


def test_exact_keys_beat_url_keys(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"https://quay.io/v1/": {"auth": _b64("url:1")}, "quay.io": {"auth": _b64("exact:2")}})
    creds = load_credentials(_ref("quay.io/ns/repo"), [path])
    assert creds is not None
    assert creds.username == "exact"


def test_url_keys_do_not_match_other_hosts_or_paths_without_scheme(tmp_path: Path) -> None:
    path = _auths(
        tmp_path,
        {
            "https://quay.io.evil.com/": {"auth": _b64("evil:1")},
            "quay.io/v1/": {"auth": _b64("path:1")},  # no scheme: a repository key, not normalised
        },
    )
    assert load_credentials(_ref("quay.io/ns/repo"), [path]) is None


def test_url_key_with_port(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"https://localhost:5000/v2/": {"auth": _b64("lp:1")}})
    creds = load_credentials(_ref("localhost:5000/x"), [path])
    assert creds is not None
    assert creds.username == "lp"
    assert load_credentials(_ref("localhost:5001/x"), [path]) is None


def test_legacy_dockercfg(tmp_path: Path) -> None:
    path = _write(
        tmp_path / ".dockercfg",
        {"https://index.docker.io/v1/": {"auth": _b64("legacy:1")}, "quay.io/ns": {"auth": _b64("ns:1")}},
    )
    creds = load_credentials(_ref("busybox"), [path])
    assert creds is not None
    assert creds.username == "legacy"
    # Legacy files know hosts only: "quay.io/ns" is read as host quay.io.
    creds = load_credentials(_ref("quay.io/other/x"), [path])
    assert creds is not None
    assert creds.username == "ns"


# --- values ----------------------------------------------------------------------------------------------------


def test_password_may_contain_colons_and_loses_trailing_newline(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"quay.io": {"auth": _b64("user:pa:ss\n")}})
    creds = load_credentials(_ref("quay.io/x"), [path])
    assert creds is not None
    assert (creds.username, creds.password) == ("user", "pa:ss")


def test_identity_token(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"quay.io": {"auth": _b64("<token>:"), "identitytoken": "refresh-me"}})
    creds = load_credentials(_ref("quay.io/x"), [path])
    assert creds is not None
    assert (creds.username, creds.password, creds.identity_token) == ("<token>", "", "refresh-me")
    only_token = _auths(tmp_path, {"quay.io": {"identitytoken": "tok"}}, "b.json")
    creds = load_credentials(_ref("quay.io/x"), [only_token])
    assert creds is not None
    assert (creds.username, creds.identity_token) == ("", "tok")


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"quay.io": {"auth": _b64("user:hunter2"), "identitytoken": "tok-secret"}})
    creds = load_credentials(_ref("quay.io/x"), [path])
    assert "hunter2" not in repr(creds)
    assert "tok-secret" not in repr(creds)


def test_cred_helpers_are_skipped_with_a_debug_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(
        tmp_path / "config.json",
        {"credHelpers": {"quay.io": "ecr-login"}, "credsStore": "desktop", "auths": {"quay.io": {"auth": _b64("a:b")}}},
    )
    with caplog.at_level(logging.DEBUG, logger="cocoguest.registry.config.auth_file"):
        creds = load_credentials(_ref("quay.io/x"), [path])
    assert creds is not None
    assert creds.username == "a"
    assert "credHelpers" in caplog.text
    assert "credsStore" in caplog.text


def test_cred_helper_only_file_is_anonymous(tmp_path: Path) -> None:
    path = _write(tmp_path / "config.json", {"credHelpers": {"quay.io": "ecr-login"}})
    assert load_credentials(_ref("quay.io/x"), [path]) is None


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "top level"),
        ('{"auths": []}', "'auths'"),
        ('{"auths": {"quay.io": "x"}}', "entry 'quay.io'"),
        ('{"auths": {"quay.io": {"auth": 5}}}', "field 'auth'"),
        ('{"auths": {"quay.io": {"identitytoken": []}}}', "field 'identitytoken'"),
        (b"\xff\xfe\x00garbage", "auth file"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    path = tmp_path / "auth.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_credentials(_ref("quay.io/x"), [path])
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [("!!!notbase64", "not base64"), ("dXNlcg", "not base64"), (_b64("nocolon"), "no ':'"), ("/w==", "not base64")],
    ids=["alphabet", "padding", "colon", "utf8"],
)
def test_bad_auth_values(tmp_path: Path, auth: str, fragment: str) -> None:
    path = _auths(tmp_path, {"quay.io": {"auth": auth}})
    with pytest.raises(ConfigError, match=fragment) as info:
        load_credentials(_ref("quay.io/x"), [path])
    message = str(info.value)
    assert str(path) in message
    assert "'quay.io'" in message
    assert auth not in message  # never echo the secret


def test_bad_entry_for_another_registry_is_not_decoded(tmp_path: Path) -> None:
    path = _auths(tmp_path, {"other.io": {"auth": "!!!"}, "quay.io": {"auth": _b64("ok:1")}})
    creds = load_credentials(_ref("quay.io/x"), [path])
    assert creds is not None
    assert creds.username == "ok"


def test_malformed_later_file_not_read_after_a_match(tmp_path: Path) -> None:
    good = _auths(tmp_path, {"quay.io": {"auth": _b64("ok:1")}})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert load_credentials(_ref("quay.io/x"), [good, bad]) is not None
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_credentials(_ref("quay.io/x"), [bad, good])


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    directory = tmp_path / "dir.json"
    directory.mkdir()
    with pytest.raises(ConfigError, match=r"dir\.json"):
        load_credentials(_ref("quay.io/x"), [directory])


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"auths": {}, "pad": "' + "x" * (1024 * 1024) + '"}')
    with pytest.raises(ConfigError, match="larger than"):
        load_credentials(_ref("quay.io/x"), [path])
