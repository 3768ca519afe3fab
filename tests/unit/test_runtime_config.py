"""Image config -> OCI runtime config conversion (image-spec conversion.md), pure, no IO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoguest.errors import ProtocolError, UnsupportedError
from cocoguest.image.bundle.runtime_config import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    ProcessUser,
    config_user,
    runtime_config,
)

ROOT = ProcessUser(uid=0, gid=0, additional_gids=(0,), username="root")


def _image(**config: object) -> dict[str, object]:
    return {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers", "diff_ids": []}}


def _process(result: dict[str, object]) -> dict[str, Any]:
    process = result["process"]
    assert isinstance(process, dict)
    return process


def _mounts(result: dict[str, object]) -> list[dict[str, Any]]:
    mounts = result["mounts"]
    assert isinstance(mounts, list)
    return mounts


def _annotations(result: dict[str, object]) -> dict[str, str]:
    annotations = result["annotations"]
    assert isinstance(annotations, dict)
    return annotations


@pytest.mark.parametrize(
    ("config", "args"),
    [
        ({"Entrypoint": ["/bin/app", "--serve"]}, ["/bin/app", "--serve"]),
        ({"Cmd": ["sh", "-c", "echo hi"]}, ["sh", "-c", "echo hi"]),
        ({"Entrypoint": ["/entry.sh"], "Cmd": ["--flag", "x"]}, ["/entry.sh", "--flag", "x"]),
        ({"Entrypoint": None, "Cmd": ["sh"]}, ["sh"]),
        ({"Entrypoint": [], "Cmd": ["sh"]}, ["sh"]),
    ],
)
def test_args_are_entrypoint_then_cmd(config: dict[str, object], args: list[str]) -> None:
    assert _process(runtime_config(_image(**config), ROOT))["args"] == args


@pytest.mark.parametrize("config", [{}, {"Entrypoint": [], "Cmd": []}, {"Entrypoint": None, "Cmd": None}])
def test_no_command_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ProtocolError, match="no command specified"):
        runtime_config(_image(**config), ROOT)


def test_missing_config_object_means_no_command() -> None:
    with pytest.raises(ProtocolError, match="no command"):
        runtime_config({"os": "linux", "architecture": "amd64"}, ROOT)


def test_env_gets_default_path_only_when_missing() -> None:
    env = _process(runtime_config(_image(Cmd=["sh"], Env=["A=1", "B="]), ROOT))["env"]
    assert env == ["A=1", "B=", DEFAULT_PATH]
    env = _process(runtime_config(_image(Cmd=["sh"], Env=["PATH=/opt/bin", "A=1"]), ROOT))["env"]
    assert env == ["PATH=/opt/bin", "A=1"]


def test_env_hostname_added_unless_image_sets_it() -> None:
    result = runtime_config(_image(Cmd=["sh"]), ROOT, hostname="box")
    assert result["hostname"] == "box"
    assert "HOSTNAME=box" in _process(result)["env"]
    env = _process(runtime_config(_image(Cmd=["sh"], Env=["HOSTNAME=mine"]), ROOT, hostname="box"))["env"]
    assert env.count("HOSTNAME=mine") == 1
    assert "HOSTNAME=box" not in env
    assert "hostname" not in runtime_config(_image(Cmd=["sh"]), ROOT)


@pytest.mark.parametrize("entry", ["NOEQUALS", "=value"])
def test_env_entry_must_be_name_value(entry: str) -> None:
    with pytest.raises(ProtocolError, match=r"Config\.Env\[1\]"):
        runtime_config(_image(Cmd=["sh"], Env=["A=1", entry]), ROOT)


def test_cwd() -> None:
    assert _process(runtime_config(_image(Cmd=["sh"]), ROOT))["cwd"] == "/"
    assert _process(runtime_config(_image(Cmd=["sh"], WorkingDir=""), ROOT))["cwd"] == "/"
    assert _process(runtime_config(_image(Cmd=["sh"], WorkingDir="/srv/app"), ROOT))["cwd"] == "/srv/app"
    with pytest.raises(ProtocolError, match="WorkingDir"):
        runtime_config(_image(Cmd=["sh"], WorkingDir="relative/dir"), ROOT)


def test_volumes_become_tmpfs_mounts_after_defaults_parents_first() -> None:
    volumes: dict[str, object] = {"/data/sub": {}, "/data": {}, "/var/lib/x/": {}, "/a/../b": {}, "/dev/shm": {}}
    mounts = _mounts(runtime_config(_image(Cmd=["sh"], Volumes=volumes), ROOT))
    destinations = [m["destination"] for m in mounts]
    assert destinations[:7] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert destinations[7:] == ["/b", "/data", "/data/sub", "/var/lib/x"]
    for mount in mounts[7:]:
        assert mount["type"] == "tmpfs"
        assert mount["source"] == "tmpfs"
        assert mount["options"] == ["nosuid", "noexec", "nodev", "relatime", "rw"]


@pytest.mark.parametrize(
    "volume", ["/proc", "/proc/sys", "/sys/../proc/x", "//proc", "/sys", "/", "/../..", "relative"]
)
def test_hostile_volumes_refused(volume: str) -> None:
    with pytest.raises(ProtocolError, match="Volumes"):
        runtime_config(_image(Cmd=["sh"], Volumes={volume: {}}), ROOT)


def test_labels_and_implicit_annotations_with_precedence() -> None:
    image = _image(
        Cmd=["sh"],
        Labels={"com.example.x": "1", "org.opencontainers.image.author": "label-author"},
        ExposedPorts={"80/tcp": {}, "53/udp": {}},
        StopSignal="SIGTERM",
    )
    image.update({"author": "config-author", "created": "2024-01-02T03:04:05Z", "variant": "v8", "os.version": "10.0"})
    image["os.features"] = ["a", "b"]
    annotations = _annotations(runtime_config(image, ROOT, annotations={"com.example.x": "caller"}))
    assert annotations == {
        "org.opencontainers.image.os": "linux",
        "org.opencontainers.image.architecture": "amd64",
        "org.opencontainers.image.variant": "v8",
        "org.opencontainers.image.os.version": "10.0",
        "org.opencontainers.image.os.features": "a,b",
        # conversion.md: a label wins over the implicit annotation
        "org.opencontainers.image.author": "label-author",
        "org.opencontainers.image.created": "2024-01-02T03:04:05Z",
        "org.opencontainers.image.stopSignal": "SIGTERM",
        "org.opencontainers.image.exposedPorts": "80/tcp,53/udp",
        # caller annotations win over labels
        "com.example.x": "caller",
    }


def test_no_exposed_ports_no_annotation() -> None:
    annotations = _annotations(runtime_config(_image(Cmd=["sh"]), ROOT))
    assert "org.opencontainers.image.exposedPorts" not in annotations
    assert "org.opencontainers.image.stopSignal" not in annotations


def test_defaults_of_the_linux_spec() -> None:
    user = ProcessUser(uid=1000, gid=100, additional_gids=(100, 27), username="alice")
    result = runtime_config(_image(Cmd=["sh"]), user)
    assert result["ociVersion"] == "1.1.0"
    assert result["root"] == {"path": "rootfs", "readonly": False}
    process = _process(result)
    assert process["terminal"] is False
    assert process["user"] == {"uid": 1000, "gid": 100, "additionalGids": [100, 27]}
    assert process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    caps = process["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}  # no inheritable/ambient
    for kind in caps.values():
        assert kind == list(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    linux = result["linux"]
    assert isinstance(linux, dict)
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    sys_mount = next(m for m in _mounts(result) if m["destination"] == "/sys")
    assert "ro" in sys_mount["options"]
    json.dumps(result)  # serialisable


def test_user_without_additional_gids_omits_the_field() -> None:
    user = ProcessUser(uid=5, gid=6, additional_gids=(), username=None)
    assert _process(runtime_config(_image(Cmd=["sh"]), user))["user"] == {"uid": 5, "gid": 6}


def test_result_does_not_alias_the_input() -> None:
    image = _image(Cmd=["sh"], Env=["A=1"])
    result = runtime_config(image, ROOT)
    _process(result)["env"].append("B=2")
    _process(result)["args"].append("x")
    assert image["config"] == {"Cmd": ["sh"], "Env": ["A=1"]}


def test_non_linux_image_refused() -> None:
    image = _image(Cmd=["cmd.exe"])
    image["os"] = "windows"
    with pytest.raises(UnsupportedError, match="windows"):
        runtime_config(image, ROOT)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"Entrypoint": "/bin/sh"}, "Config.Entrypoint"),
        ({"Cmd": ["sh", 1]}, r"Config.Cmd\[1\]"),
        ({"Cmd": ["sh"], "Env": {"A": "1"}}, "Config.Env"),
        ({"Cmd": ["sh"], "Env": ["A=1", None]}, r"Config.Env\[1\]"),
        ({"Cmd": ["sh"], "WorkingDir": 5}, "Config.WorkingDir"),
        ({"Cmd": ["sh"], "Labels": {"a": 1}}, "Config.Labels"),
        ({"Cmd": ["sh"], "Labels": ["a"]}, "Config.Labels"),
        ({"Cmd": ["sh"], "Volumes": ["/data"]}, "Config.Volumes"),
        ({"Cmd": ["sh"], "Volumes": {"/data": "yes"}}, "Config.Volumes"),
        ({"Cmd": ["sh"], "ExposedPorts": {"80/tcp": 1}}, "Config.ExposedPorts"),
        ({"Cmd": ["sh"], "StopSignal": 15}, "Config.StopSignal"),
        ({"Cmd": ["sh"], "User": 0}, "Config.User"),
        ({"Cmd": ["sh\x00rm"]}, r"Config.Cmd\[0\]"),
    ],
)
def test_wrong_types_name_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        runtime_config(_image(**config), ROOT)


@pytest.mark.parametrize(
    ("top", "field"),
    [({"config": "x"}, "config"), ({"os.features": "a"}, "os.features"), ({"author": 1}, "author")],
)
def test_wrong_top_level_types_name_the_field(top: dict[str, object], field: str) -> None:
    image = _image(Cmd=["sh"])
    image.update(top)
    with pytest.raises(ProtocolError, match=field):
        runtime_config(image, ROOT)


def test_config_user() -> None:
    assert config_user(_image(Cmd=["sh"])) == ""
    assert config_user(_image(User="alice:staff")) == "alice:staff"
    assert config_user({}) == ""
    with pytest.raises(ProtocolError, match=r"Config\.User"):
        config_user(_image(User=["alice"]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_config_keys = st.sampled_from(
    ["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "Volumes", "ExposedPorts", "Labels", "StopSignal"]
)


@settings(max_examples=300, deadline=None)
@given(
    config=st.dictionaries(_config_keys, _json | st.lists(st.text(max_size=6), max_size=3), max_size=6),
    os_name=st.sampled_from(["linux", "windows", None, 3]),
)
def test_any_input_converts_or_raises_a_coco_error(config: dict[str, object], os_name: object) -> None:
    image: dict[str, object] = {"config": config}
    if os_name is not None:
        image["os"] = os_name
    try:
        result = runtime_config(image, ROOT)
    except (ProtocolError, UnsupportedError):
        return
    json.dumps(result)
    args = _process(result)["args"]
    assert args
    assert all(isinstance(arg, str) and "\x00" not in arg for arg in args)
