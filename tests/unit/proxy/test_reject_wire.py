"""proxy.reject_wire: the 403 and the TLS alert, parsed back by real parsers."""

from __future__ import annotations

import ssl

import h11
import pytest

from proxy.reject_wire import (
    MAX_HOST_CHARS,
    MAX_REASON_CHARS,
    http_forbidden,
    sanitise,
    tls_access_denied_alert,
)

from .tls_hello import real_client_hello


def parse_response(raw: bytes) -> tuple[h11.Response, bytes, bool]:
    """(response, body, ended) as an HTTP client reads `raw`."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            break
    return response, body, isinstance(event, h11.EndOfMessage)


def test_forbidden_is_a_complete_403() -> None:
    raw = http_forbidden("blocked.example", "exclude list does not match; https proxy is empty")
    response, body, ended = parse_response(raw)
    assert response.status_code == 403
    assert response.reason == b"Forbidden"
    assert response.http_version == b"1.1"
    headers = dict(response.headers)
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    assert ended
    assert body == (
        b"Connections to blocked.example are forbidden by policy: "
        b"exclude list does not match; https proxy is empty\n"
    )
    assert raw.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert raw.endswith(body)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("evil.example\r\nSet-Cookie: a=b", "x\r\n\r\nHTTP/1.1 200 OK"),
        ("a\x00b\x1b[31m", "tab\there\x7f"),
        ("\u202eexample.com", "line\u2028separator\u0085next"),
        ("\ud800lone-surrogate", "ok"),
    ],
)
def test_hostile_host_and_reason_cannot_inject(host: str, reason: str) -> None:
    raw = http_forbidden(host, reason)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.count(b"\r\n") == 4  # status line + 4 headers, nothing injected
    assert body.count(b"\n") == 1 and body.endswith(b"\n")
    assert b"\r" not in body
    assert all(c >= 0x20 or c == 0x0A for c in body)
    text = body.decode("utf-8")
    assert "\u202e" not in text and "\u2028" not in text and "\u0085" not in text
    response, parsed_body, ended = parse_response(raw)
    assert response.status_code == 403 and parsed_body == body and ended


def test_length_is_bounded() -> None:
    raw = http_forbidden("h" * 10_000, "r" * 10_000)
    _, _, body = raw.partition(b"\r\n\r\n")
    assert len(body) < MAX_HOST_CHARS + MAX_REASON_CHARS + 100
    assert b"h" * MAX_HOST_CHARS not in body
    assert b"..." in body


def test_sanitise_keeps_ordinary_text() -> None:
    assert sanitise("bücher.example", 255) == "bücher.example"
    assert sanitise('PAC returned "PROXY reject.docker.internal:0"', 300).startswith("PAC")
    assert sanitise("abcdef", 5) == "ab..."
    assert sanitise("a\nb", 10) == "a?b"


def test_alert_default() -> None:
    assert tls_access_denied_alert(None) == bytes([21, 3, 3, 0, 2, 2, 49])
    assert tls_access_denied_alert(b"") == bytes([21, 3, 3, 0, 2, 2, 49])
    assert tls_access_denied_alert(b"GET / HTTP/1.1") == bytes([21, 3, 3, 0, 2, 2, 49])


@pytest.mark.parametrize(
    ("maximum", "minor"),
    [(ssl.TLSVersion.MAXIMUM_SUPPORTED, 3), (ssl.TLSVersion.TLSv1_2, 3)],
)
def test_alert_version_from_real_hellos(maximum: ssl.TLSVersion, minor: int) -> None:
    hello = real_client_hello("x.example", maximum)
    assert hello[1:3] == b"\x03\x01"  # the record says TLS 1.0, the hello says more
    assert tls_access_denied_alert(hello) == bytes([21, 3, minor, 0, 2, 2, 49])


@pytest.mark.parametrize(
    ("prefix", "minor"),
    [
        (b"\x16\x03\x01\x00\x50\x01\x00\x00\x4c\x03\x01", 1),  # TLS 1.0 client
        (b"\x16\x03\x00\x00\x50\x01\x00\x00\x4c\x03\x00", 0),  # SSL 3.0 client
        (b"\x16\x03\x01\x00\x50\x01\x00\x00\x4c\x03\x09", 3),  # future: capped at 1.2
        (b"\x16\x03\x02", 2),  # only the record header so far
        (b"\x16\x03\x01\x00\x50\x01\x00\x00\x4c\x7f\x01", 1),  # not 3.x: record version
        (b"\x16\x05\x01", 3),
        (b"\x16", 3),
        (b"\x17\x03\x01\x00\x05", 3),
    ],
)
def test_alert_version_from_prefixes(prefix: bytes, minor: int) -> None:
    alert = tls_access_denied_alert(prefix)
    assert alert == bytes([21, 3, minor, 0, 2, 2, 49])


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_2])
def test_real_tls_client_reports_access_denied(maximum: ssl.TLSVersion) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="blocked.example")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    incoming.write(tls_access_denied_alert(outgoing.read()))
    with pytest.raises(ssl.SSLError, match=r"(?i)access.denied"):
        tls.do_handshake()
