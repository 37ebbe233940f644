"""Property tests: the REJECT bytes (proxy.reject_wire) and sockaddr parsing (proxy.origdst).

The host and reason in a 403 are hostile (sniffed name, PAC text): whatever they hold, the
response is one well-formed 403 with a one-line body and nothing injected. The sockaddr
bytes come from the kernel, but a short or foreign one must be an OSError, not a crash.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from pac.addr import socket_ip as canonical_ip
from proxy.origdst import parse_sockaddr_in, parse_sockaddr_in6
from proxy.reject_wire import (
    MAX_HOST_CHARS,
    MAX_REASON_CHARS,
    http_forbidden,
    sanitise,
    tls_access_denied_alert,
)

from .test_reject_wire import parse_response

_hostile = st.one_of(
    st.text(max_size=400),
    st.lists(
        st.sampled_from(["\r\n", "\n", "\r", "\x00", "\u2028", "\u202e", "\ud800", "\x85", "a"]),
        max_size=50,
    ).map("".join),
)


@given(_hostile, st.integers(0, 400))
@example("\r\nSet-Cookie: x", 10)
@example("abc", 0)
@example("abcdef", 2)
def test_sanitise_leaves_only_printable_text_within_the_limit(text: str, limit: int) -> None:
    out = sanitise(text, limit)
    assert len(out) <= max(limit, 3)
    for ch in out:
        assert ch == " " or not unicodedata.category(ch).startswith(("C", "Z")), repr(ch)
    if len(text) <= limit:
        assert len(out) == len(text)


@given(_hostile, _hostile)
@example("a.example\r\nX-Injected: 1", "reason\r\n\r\nHTTP/1.1 200 OK")
def test_forbidden_is_one_well_formed_403_whatever_the_text(host: str, reason: str) -> None:
    raw = http_forbidden(host, reason)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.count(b"\r\n") == 4 and b"\n" not in head.replace(b"\r\n", b"")
    response, parsed_body, ended = parse_response(raw)
    assert response.status_code == 403 and ended
    assert parsed_body == body
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and b"\r" not in body
    text = body.decode("utf-8")  # valid UTF-8 even for lone surrogates
    assert len(text) <= len("Connections to  are forbidden by policy: \n") + 4 + (
        MAX_HOST_CHARS + MAX_REASON_CHARS
    )
    assert dict(response.headers)[b"connection"] == b"close"


@given(st.one_of(st.none(), st.binary(max_size=20)))
@example(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03\x04")
@example(b"\x16\x03\x00")
def test_alert_is_always_one_fatal_access_denied_record(prefix: bytes | None) -> None:
    alert = tls_access_denied_alert(prefix)
    assert len(alert) == 7
    assert alert[0] == 21 and alert[1] == 3 and 0 <= alert[2] <= 3
    assert alert[3:] == b"\x00\x02\x02\x31"


# --------------------------------------------------------------------------- origdst


def _sockaddr_in(ip: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton(ip)
        + bytes(8)
    )


def _sockaddr_in6(ip: str, port: int, scope: int = 0) -> bytes:
    head = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + bytes(4)
    return head + socket.inet_pton(socket.AF_INET6, ip) + struct.pack("=I", scope)


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_sockaddr_in_round_trip(ip: ipaddress.IPv4Address, port: int) -> None:
    assert parse_sockaddr_in(_sockaddr_in(str(ip), port)) == (str(ip), port)


@given(st.ip_addresses(v=6), st.integers(1, 65535), st.integers(0, 2**32 - 1))
def test_sockaddr_in6_round_trip(ip: ipaddress.IPv6Address, port: int, scope: int) -> None:
    expected = str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)
    assert parse_sockaddr_in6(_sockaddr_in6(str(ip), port, scope)) == (expected, port)
    assert canonical_ip(str(ip)) == expected


@given(st.binary(max_size=40))
@example(b"")
@example(_sockaddr_in("1.2.3.4", 0))
@example(_sockaddr_in("1.2.3.4", 80)[:7])
@example(_sockaddr_in6("::1", 80)[:23])
@example(_sockaddr_in6("::1", 80)[:16])  # an IPv4-sized answer to the IPv6 option
def test_any_sockaddr_bytes_parse_or_raise_oserror(raw: bytes) -> None:
    for parse in (parse_sockaddr_in, parse_sockaddr_in6):
        try:
            ip, port = parse(raw)
        except OSError:
            continue
        assert 1 <= port <= 65535
        assert canonical_ip(ip) == ip
        ipaddress.ip_address(ip)
