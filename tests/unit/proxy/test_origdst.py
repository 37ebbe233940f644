"""proxy.origdst: the sockaddr bytes SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST return."""

from __future__ import annotations

import socket
import struct

import pytest

from proxy.origdst import parse_sockaddr_in, parse_sockaddr_in6


def test_ipv4_and_ipv6_sockaddrs() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + b"\x01\xbb" + bytes([203, 0, 113, 9]) + bytes(8)
    assert parse_sockaddr_in(v4) == ("203.0.113.9", 443)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.1")
    v6 = struct.pack("=H", socket.AF_INET6) + b"\x00\x50" + bytes(4) + mapped + bytes(4)
    assert parse_sockaddr_in6(v6) == ("192.0.2.1", 80)


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # struct.error before
        struct.pack("=H", socket.AF_INET) + b"\x01\xbb\x01\x02",  # short: inet_ntop ValueError
        struct.pack("=H", socket.AF_INET6) + b"\x01\xbb" + bytes(12),  # a sockaddr_in6 cut short
        struct.pack("=H", socket.AF_INET) + b"\x00\x00" + bytes(12),  # port 0
        struct.pack("=H", socket.AF_UNIX) + b"\x01\xbb" + bytes(12),  # another family
    ],
)
def test_short_or_foreign_sockaddr_is_an_oserror(raw: bytes) -> None:
    with pytest.raises(OSError):
        parse_sockaddr_in(raw)
    with pytest.raises(OSError):
        parse_sockaddr_in6(raw)
