"""``Config.User`` resolution against an untrusted rootfs, with both resolvers (openat2 and the walk).

Hostile rootfs trees point /etc/passwd (or /etc) at files outside the rootfs; a canary user database
outside must never be read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoguest.errors import ConfigError
from cocoguest.image.bundle import users
from cocoguest.image.bundle.runtime_config import ProcessUser
from cocoguest.image.bundle.users import read_file_in_root, resolve_user
from cocoguest.limits import DEFAULT_LIMITS, Limits

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without fields
badid:x:notanumber:1::/:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh

bob:x:1001:100::/home/bob:/bin/sh
"""

GROUP = """\
root:x:0:root
daemon:x:1:
sudo:x:27:alice,bob
users:x:100:alice
alice:x:1000:
staff:x:50:
wheel:x:10:root,alice
"""

CANARY = "canary:x:4242:4242::/:/bin/sh\nalice:x:6666:6666::/:/bin/sh\n"


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A user database OUTSIDE the rootfs that must never be read."""
    directory = tmp_path / "host" / "etc"
    directory.mkdir(parents=True)
    (directory / "passwd").write_text(CANARY)
    (directory / "group").write_text("canarygroup:x:4242:alice\n")
    before = {p: p.read_text() for p in directory.iterdir()}
    yield directory
    assert {p: p.read_text() for p in directory.iterdir()} == before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ProcessUser(0, 0, (0, 10), "root")),
        ("root", ProcessUser(0, 0, (0, 10), "root")),
        ("alice", ProcessUser(1000, 1000, (1000, 27, 100, 10), "alice")),
        ("1000", ProcessUser(1000, 1000, (1000, 27, 100, 10), "alice")),
        ("bob", ProcessUser(1001, 100, (100, 27), "bob")),
        ("alice:staff", ProcessUser(1000, 50, (50, 27, 100, 10), "alice")),
        ("alice:60", ProcessUser(1000, 60, (60, 27, 100, 10), "alice")),
        ("1000:staff", ProcessUser(1000, 50, (50, 27, 100, 10), "alice")),
        ("1000:60", ProcessUser(1000, 60, (60, 27, 100, 10), "alice")),
        ("alice:", ProcessUser(1000, 1000, (1000, 27, 100, 10), "alice")),
        # a numeric uid need not exist in /etc/passwd: gid 0, no name, so no member groups
        ("4242", ProcessUser(4242, 0, (0,), None)),
        ("4242:staff", ProcessUser(4242, 50, (50,), None)),
        ("4242:77", ProcessUser(4242, 77, (77,), None)),
        ("4294967294", ProcessUser(4294967294, 0, (0,), None)),
    ],
)
def test_spec_forms(rootfs: Path, use_openat2: bool, spec: str, expected: ProcessUser) -> None:
    assert resolve_user(spec, rootfs, use_openat2=use_openat2) == expected


def test_unknown_user(rootfs: Path, use_openat2: bool) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_user("mallory", rootfs, use_openat2=use_openat2)
    assert str(info.value) == "image user 'mallory': no such user in /etc/passwd of the image"


def test_unknown_group(rootfs: Path, use_openat2: bool) -> None:
    with pytest.raises(ConfigError, match="no such group 'nogroup' in /etc/group"):
        resolve_user("alice:nogroup", rootfs, use_openat2=use_openat2)


@pytest.mark.parametrize("spec", ["4294967295", "99999999999", "1:4294967295", "0:123456789012345"])
def test_out_of_range_ids(rootfs: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match="out of range"):
        resolve_user(spec, rootfs)


def test_malformed_lines_are_skipped_not_matched(rootfs: Path) -> None:
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user("badid", rootfs)


def test_no_user_database(tmp_path: Path, use_openat2: bool) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert resolve_user("", root, use_openat2=use_openat2) == ProcessUser(0, 0, (0,), None)
    assert resolve_user("123:45", root, use_openat2=use_openat2) == ProcessUser(123, 45, (45,), None)
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user("alice", root, use_openat2=use_openat2)
    with pytest.raises(ConfigError, match="no such group"):
        resolve_user("0:staff", root, use_openat2=use_openat2)


def test_absolute_symlink_resolves_inside_the_rootfs(rootfs: Path, canary: Path, use_openat2: bool) -> None:
    passwd = rootfs / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(canary / "passwd")  # an absolute path that exists on the HOST
    # Inside the rootfs that path does not exist: no passwd, and the host's canary user is unknown.
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user("canary", rootfs, use_openat2=use_openat2)
    # The same absolute path created inside the rootfs is what the link means.
    inside = rootfs / str(canary / "passwd").lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("canary:x:7:8::/:/bin/sh\n")
    assert resolve_user("canary", rootfs, use_openat2=use_openat2) == ProcessUser(7, 8, (8,), "canary")


def test_dotdot_symlink_is_clamped_at_the_root(rootfs: Path, canary: Path, use_openat2: bool) -> None:
    passwd = rootfs / "etc" / "passwd"
    passwd.unlink()
    # rootfs/etc -> ../../../.. would reach tmp_path/host/etc/passwd on the host
    depth = len(rootfs.parts)
    passwd.symlink_to("../" * depth + str(canary / "passwd").lstrip("/"))
    assert passwd.resolve() == canary / "passwd"  # the host would follow it to the canary
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user("canary", rootfs, use_openat2=use_openat2)
    assert resolve_user("1000", rootfs, use_openat2=use_openat2).username is None


def test_symlinked_etc_directory(rootfs: Path, canary: Path, use_openat2: bool) -> None:
    for entry in (rootfs / "etc").iterdir():
        entry.unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(canary)  # absolute link to the host's canary etc
    assert (rootfs / "etc" / "passwd").read_text() == CANARY  # the host view
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user("canary", rootfs, use_openat2=use_openat2)
    # a relative directory link that stays inside works
    (rootfs / "etc").unlink()
    (rootfs / "real-etc").mkdir()
    (rootfs / "real-etc" / "passwd").write_text("svc:x:9:9::/:/bin/sh\n")
    (rootfs / "etc").symlink_to("./sub/../real-etc")
    (rootfs / "sub").mkdir()
    assert resolve_user("svc", rootfs, use_openat2=use_openat2) == ProcessUser(9, 9, (9,), "svc")


def test_symlink_loop_and_long_chain(rootfs: Path, use_openat2: bool) -> None:
    etc = rootfs / "etc"
    (etc / "passwd").unlink()
    (etc / "passwd").symlink_to("passwd2")
    (etc / "passwd2").symlink_to("passwd")
    with pytest.raises(ConfigError, match="symbolic links"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)
    (etc / "passwd").unlink()
    (etc / "passwd2").unlink()
    previous = "passwd"
    for index in range(45):
        (etc / previous).symlink_to(f"link{index}")
        previous = f"link{index}"
    (etc / previous).write_text(PASSWD)
    with pytest.raises(ConfigError, match="symbolic links"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)


def test_short_chain_is_followed(rootfs: Path, use_openat2: bool) -> None:
    etc = rootfs / "etc"
    (etc / "passwd").rename(etc / "target")
    (etc / "passwd").symlink_to("/etc/../etc/./l1")
    (etc / "l1").symlink_to("l2")
    (etc / "l2").symlink_to("target")
    assert resolve_user("alice", rootfs, use_openat2=use_openat2).uid == 1000


def test_oversized_passwd(rootfs: Path, use_openat2: bool) -> None:
    with (rootfs / "etc" / "passwd").open("a") as stream:
        stream.write("#" * DEFAULT_LIMITS.max_user_db_bytes)
    with pytest.raises(ConfigError, match="/etc/passwd: larger than"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)


def test_file_at_the_limit_is_read(tmp_path: Path, use_openat2: bool) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert (
        read_file_in_root(tmp_path, "/f", limits=Limits(max_user_db_bytes=100), use_openat2=use_openat2) == b"x" * 100
    )
    with pytest.raises(ConfigError, match="larger than 99 bytes"):
        read_file_in_root(tmp_path, "/f", limits=Limits(max_user_db_bytes=99), use_openat2=use_openat2)


def test_fifo_is_not_opened(rootfs: Path, use_openat2: bool) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")  # opening it for reading would block forever
    with pytest.raises(ConfigError, match="not a regular file"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)


def test_directory_is_not_a_passwd(rootfs: Path, use_openat2: bool) -> None:
    (rootfs / "etc" / "group").unlink()
    (rootfs / "etc" / "group").mkdir()
    with pytest.raises(ConfigError, match="/etc/group: not a regular file"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_is_not_opened(rootfs: Path, use_openat2: bool) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mknod(rootfs / "etc" / "passwd", 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero: endless
    with pytest.raises(ConfigError, match="not a regular file"):
        resolve_user("alice", rootfs, use_openat2=use_openat2)


def test_path_through_a_file_is_missing(rootfs: Path, use_openat2: bool) -> None:
    assert read_file_in_root(rootfs, "/etc/passwd/x", use_openat2=use_openat2) is None
    assert read_file_in_root(rootfs, "/nope/passwd", use_openat2=use_openat2) is None


def test_openat2_is_used_where_available(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        opened = users._openat2(fd, "/f", os.O_PATH)
    except users._Openat2UnavailableError:
        pytest.skip("openat2 is not available on this kernel")
    finally:
        os.close(fd)
    os.close(opened)
