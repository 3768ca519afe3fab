"""ttrpc address parsing (specs/ttrpc.md §1)."""

from __future__ import annotations

import pytest

from cocoguest.errors import ConfigError, UnsupportedError
from cocoguest.rpc.ttrpc.address import VMADDR_CID_ANY, UnixAddress, VsockAddress, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "unix:///run/confidential-containers/cdh.sock",
            UnixAddress("/run/confidential-containers/cdh.sock"),
        ),
        ("unix://@aa", UnixAddress("aa", abstract=True)),
        ("vsock://-1:1024", VsockAddress(VMADDR_CID_ANY, 1024)),
        ("vsock://3:1024", VsockAddress(3, 1024)),
    ],
)
def test_parse_and_format(text: str, expected: UnixAddress | VsockAddress) -> None:
    assert parse_address(text) == expected
    assert str(expected) == text


def test_abstract_sockaddr_starts_with_nul() -> None:
    assert UnixAddress("aa", abstract=True).sockaddr == "\0aa"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/run/x.sock",
        "unix://",
        "unix://relative.sock",
        "unix://@",
        "unix:///" + "a" * 200,
        "vsock://3",
        "vsock://x:1",
        "vsock://3:4294967296",
        "vsock://3:-2",
        "vsock://3:\uff11",  # a fullwidth digit: isdigit() but not ASCII
        "http://x",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="ttrpc address"):
        parse_address(text)


def test_tcp_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="tcp"):
        parse_address("tcp://127.0.0.1:1")
