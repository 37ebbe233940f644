"""pac.addr: the one spelling of host:port, port and address rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pac import addr
from proxy.cli import parse_hostport as cli_hostport
from proxy.cli import run_config


@pytest.mark.parametrize("text", ["1", "80", "65535", "08080"])
def test_ascii_ports_parse(text: str) -> None:
    assert addr.parse_port(text) == int(text)


@pytest.mark.parametrize(
    "text", ["", "0", "65536", "123456", "١٥٠٠١", "１５００１", "8²", " 80", "80 ", "+80", "-1"]
)
def test_ports_that_are_not_ascii_digits_or_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="1-65535"):
        addr.parse_port(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:443", ("example.com", 443)),
        ("127.0.0.1:15001", ("127.0.0.1", 15001)),
        ("[::1]:15001", ("::1", 15001)),
        ("[2001:db8::1]:80", ("2001:db8::1", 80)),
    ],
)
def test_hostport(text: str, expected: tuple[str, int]) -> None:
    assert addr.parse_hostport(text) == expected


@pytest.mark.parametrize(
    "text", ["example.com", "::1:80", "[::1]80", "[::1", ":80", "[]:80", "h:", "h:x"]
)
def test_malformed_hostport_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        addr.parse_hostport(text)


def test_the_listen_option_refuses_non_ascii_digits() -> None:
    """`str.isdigit()` accepted these, and `int()` read them as port 15001."""
    for text in ("127.0.0.1:١٥٠٠١", "[::1]:１５００１"):
        with pytest.raises(ValueError, match="1-65535"):
            cli_hostport(text)


def test_a_run_with_such_a_listen_address_is_a_usage_error() -> None:
    from proxy.cli import UsageError, build_parser

    args = build_parser().parse_args(["run", "--listen", "127.0.0.1:١٥٠٠١"])
    with pytest.raises(UsageError, match="--listen"):
        run_config(args, worker=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_canonical_ip_folds_mapped_addresses(text: str, expected: str) -> None:
    assert addr.canonical_ip(text) == expected
    assert addr.socket_ip(text) == expected


@pytest.mark.parametrize("text", ["", "example.com", "1.2.3", "256.1.1.1", "::g"])
def test_canonical_ip_refuses_what_is_no_address(text: str) -> None:
    with pytest.raises(ValueError):
        addr.canonical_ip(text)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_format_and_parse_round_trip(ip: object, port: int) -> None:
    text = addr.format_hostport(str(ip), port)
    assert addr.parse_hostport(text) == (str(ip), port)
