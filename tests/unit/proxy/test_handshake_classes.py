"""proxy.handshake: which failures mean "the upstream refused this request" (UpstreamRefused:
the connection is REJECTed, never moved on to the next route) and which mean "the upstream
is unusable" (a plain HandshakeError: the next route is tried).

A filtering upstream answers a destination it refuses with an HTTP status or a SOCKS error
code. Reading that as a dead proxy moved `PROXY corp:8080; DIRECT` to DIRECT for the very
destination the corporate proxy refused; so every well-formed refusal must be told apart
from a dropped or garbled handshake.
"""

from __future__ import annotations

import pytest

from proxy.handshake import (
    HandshakeError,
    UpstreamHandshake,
    UpstreamRefused,
    http_connect,
    socks4,
    socks5,
)


def _failure(hs: UpstreamHandshake, *replies: bytes) -> HandshakeError:
    """Start `hs`, feed each reply in turn; the error the last one raises."""
    hs.start()
    for reply in replies[:-1]:
        hs.receive(reply)
    with pytest.raises(HandshakeError) as info:
        hs.receive(replies[-1])
    return info.value


@pytest.mark.parametrize(
    "status",
    [
        b"403 Filtered",
        b"407 Proxy Authentication Required",
        b"400 Bad Request",
        b"404 Not Found",
        b"302 Found",
        b"500 Unable to connect",
        b"502 Bad Gateway",
        b"503 Service Unavailable",
        b"504 Gateway Timeout",
        b"599",
    ],
)
def test_every_http_status_other_than_2xx_is_a_refusal(status: bytes) -> None:
    reply = b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
    exc = _failure(http_connect("evil.example", 443), reply)
    assert isinstance(exc, UpstreamRefused), exc
    assert status.decode() in str(exc)


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2000 OK\r\n\r\n",  # no valid status
        b"\x05\x00",  # a SOCKS server
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",  # garbled head
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 20_000 + b"\r\n\r\n",  # head over the bound
        b"",  # closed before a reply
    ],
)
def test_a_garbled_or_missing_http_reply_is_unusable(reply: bytes) -> None:
    exc = _failure(http_connect("evil.example", 443), reply)
    assert not isinstance(exc, UpstreamRefused), exc


@pytest.mark.parametrize("code", [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0xFF])
def test_every_socks5_error_reply_is_a_refusal(code: int) -> None:
    exc = _failure(socks5("evil.example", 443), b"\x05\x00", bytes([5, code]))
    assert isinstance(exc, UpstreamRefused), exc
    assert f"{code:#04x}" in str(exc)


@pytest.mark.parametrize(
    ("credentials", "replies"),
    [
        ((None, None), (b"\x05\xff",)),  # no acceptable method
        ((None, None), (b"\x05\x02",)),  # wants credentials we do not have
        (("alice", "pw"), (b"\x05\xff",)),
        (("alice", "pw"), (b"\x05\x02", b"\x01\x01")),  # credentials refused
    ],
)
def test_socks5_authentication_refusals_are_refusals(
    credentials: tuple[str | None, str | None], replies: tuple[bytes, ...]
) -> None:
    exc = _failure(socks5("evil.example", 443, *credentials), *replies)
    assert isinstance(exc, UpstreamRefused), exc


@pytest.mark.parametrize(
    "replies",
    [
        (b"\x04\x00",),  # not SOCKS5
        (b"\x05\x01",),  # a method we did not offer
        (b"\x05\x00\x05",),  # bytes past the method reply
        (b"HTTP/1.1 400 Bad Request\r\n\r\n",),  # an HTTP proxy
        (b"\x05\x00", b"\x04\x00"),  # reply with the wrong version
        (b"\x05\x00", b"\x05\x00\x01\x01"),  # reserved byte set
        (b"\x05\x00", b"\x05\x00\x00\x02"),  # unknown address type
        (b"",),  # closed before a reply
        (b"\x05\x00", b""),
    ],
)
def test_a_garbled_or_missing_socks5_reply_is_unusable(replies: tuple[bytes, ...]) -> None:
    exc = _failure(socks5("evil.example", 443), *replies)
    assert not isinstance(exc, UpstreamRefused), exc


@pytest.mark.parametrize("code", [0x5B, 0x5C, 0x5D])
def test_socks4_replies_91_to_93_are_refusals(code: int) -> None:
    exc = _failure(socks4("evil.example", 443), bytes([0, code]))
    assert isinstance(exc, UpstreamRefused), exc


@pytest.mark.parametrize("reply", [b"\x00\x00", b"\x00\x5e", b"\x04\x5a", b"\x05\x00", b""])
def test_a_garbled_or_missing_socks4_reply_is_unusable(reply: bytes) -> None:
    exc = _failure(socks4("evil.example", 443), reply)
    assert not isinstance(exc, UpstreamRefused), exc
