"""proxy.forward_head: the explicit proxy's request heads, and every smuggling shape refused."""

from __future__ import annotations

import pytest

from proxy.forward_head import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    HeadError,
    find_head_end,
    parse_request_head,
)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def refused(data: bytes) -> HeadError:
    with pytest.raises(HeadError) as info:
        parse_request_head(data)
    return info.value


def test_connect_authority() -> None:
    req = parse_request_head(head("CONNECT Example.COM:443 HTTP/1.1", "Host: example.com:443"))
    assert (req.method, req.host, req.port, req.is_ip, req.path) == (
        "CONNECT",
        "example.com",
        443,
        False,
        "",
    )
    assert req.is_connect and req.authority == "example.com:443"


def test_connect_ipv6_and_mapped() -> None:
    req = parse_request_head(head("CONNECT [2001:db8::1]:8443 HTTP/1.1", "Host: x"))
    assert (req.host, req.port, req.is_ip, req.authority) == (
        "2001:db8::1",
        8443,
        True,
        "[2001:db8::1]:8443",
    )
    req = parse_request_head(head("CONNECT [::ffff:203.0.113.5]:443 HTTP/1.1", "Host: x"))
    assert req.host == "203.0.113.5"


def test_absolute_form() -> None:
    req = parse_request_head(
        head("GET http://www.example.org:8080/a/b?c=d HTTP/1.1", "Host: other", "Accept: */*")
    )
    assert (req.host, req.port, req.path) == ("www.example.org", 8080, "/a/b?c=d")
    assert (b"accept", b"*/*") in req.headers
    assert req.content_length is None and not req.chunked


def test_absolute_form_defaults() -> None:
    req = parse_request_head(head("GET HTTP://example.org HTTP/1.1", "Host: example.org"))
    assert (req.port, req.path) == (80, "/")
    req = parse_request_head(head("GET http://example.org?q HTTP/1.0"))
    assert req.path == "/?q" and req.http_version == "1.0"


def test_bodies() -> None:
    req = parse_request_head(
        head("POST http://a.example/ HTTP/1.1", "Host: a.example", "Content-Length: 12")
    )
    assert req.content_length == 12
    req = parse_request_head(
        head(
            "POST http://a.example/ HTTP/1.1",
            "Host: a.example",
            "Transfer-Encoding: Chunked",
            "Expect: 100-continue",
        )
    )
    assert req.chunked and req.expect_continue


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (head("GET / HTTP/1.1", "Host: a.example"), 400),  # origin-form
        (head("OPTIONS * HTTP/1.1", "Host: a.example"), 400),
        (head("GET https://a.example/ HTTP/1.1", "Host: a.example"), 501),
        (head("GET ftp://a.example/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://u@a.example/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://a.example/#f HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://:80/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://a.example:0/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://a.example:65536/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://a_b.example/ HTTP/1.1", "Host: a.example"), 400),
        (head("GET http://127.1/ HTTP/1.1", "Host: a.example"), 400),  # an IP in disguise
        (head("CONNECT a.example:0 HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT a.example HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT a.example: HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT [::1 HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT [fe80::1%25eth0]:443 HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT http://a.example/ HTTP/1.1", "Host: a.example"), 400),
        (head("CONNECT a.example:443 HTTP/1.1", "Host: a", "Content-Length: 3"), 400),
        (head("GET http://a.example/ HTTP/2.0", "Host: a.example"), 505),
        (head("GET  http://a.example/ HTTP/1.1", "Host: a.example"), 400),
        (head("G@T http://a.example/ HTTP/1.1", "Host: a.example"), 400),
        # smuggling
        (
            head(
                "POST http://a.example/ HTTP/1.1",
                "Host: a",
                "Content-Length: 3",
                "Content-Length: 4",
            ),
            400,
        ),
        (
            head(
                "POST http://a.example/ HTTP/1.1",
                "Host: a",
                "Content-Length: 3",
                "Content-Length: 3",
            ),
            400,
        ),
        (
            head(
                "POST http://a.example/ HTTP/1.1",
                "Host: a",
                "Content-Length: 3",
                "Transfer-Encoding: chunked",
            ),
            400,
        ),
        (
            head(
                "POST http://a.example/ HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: chunked",
            ),
            400,
        ),
        (
            head("POST http://a.example/ HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"),
            501,
        ),
        (head("POST http://a.example/ HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"), 501),
        (head("POST http://a.example/ HTTP/1.0", "Transfer-Encoding: chunked"), 400),
        (head("POST http://a.example/ HTTP/1.1", "Host: a", "Content-Length: +3"), 400),
        (head("POST http://a.example/ HTTP/1.1", "Host: a", "Content-Length: 3,3"), 400),
        (head("POST http://a.example/ HTTP/1.1", "Host: a", "Content-Length: 0x3"), 400),
        (head("POST http://a.example/ HTTP/1.1", "Host: a", "Content-Length: " + "9" * 19), 400),
        (head("GET http://a.example/ HTTP/1.1", "Host: a", "X: a", " folded"), 400),
        (head("GET http://a.example/ HTTP/1.1", "Host: a", "X: a", "\tfolded"), 400),
        (head("GET http://a.example/ HTTP/1.1", "Host : a"), 400),
        (head("GET http://a.example/ HTTP/1.1", "Transfer-Encoding : chunked", "Host: a"), 400),
        (head("GET http://a.example/ HTTP/1.1", "Host: a", "Host: b"), 400),
        (head("GET http://a.example/ HTTP/1.1"), 400),  # HTTP/1.1 needs a Host
        (head("GET http://a.example/ HTTP/1.1", "Host: a", "X: a\x00b"), 400),
        (b"GET http://a.example/ HTTP/1.1\nHost: a\r\n\r\n", 400),
        (b"GET http://a.example/ HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
        (b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\n\r\nGET", 400),  # not exactly one head
    ],
)
def test_refused(data: bytes, status: int) -> None:
    assert refused(data).status == status


def test_header_count_bound() -> None:
    lines = ["GET http://a.example/ HTTP/1.1", "Host: a"]
    ok = lines + [f"X-{i}: v" for i in range(MAX_HEADERS - 1)]
    assert parse_request_head(head(*ok)).host == "a.example"
    assert refused(head(*ok, "X-last: v")).status == 431


def test_head_size_bound() -> None:
    big = head("GET http://a.example/ HTTP/1.1", "Host: a", "X: " + "v" * MAX_HEAD_BYTES)
    assert refused(big).status == 431
    with pytest.raises(HeadError) as info:
        find_head_end(big[:-4])
    assert info.value.status == 431


def test_find_head_end() -> None:
    data = head("GET http://a.example/ HTTP/1.1", "Host: a")
    assert find_head_end(data[:-1]) == -1
    assert find_head_end(data + b"body") == len(data)
    with pytest.raises(HeadError) as info:  # a bare-LF end is no end: refused, not awaited
        find_head_end(b"GET http://a/ HTTP/1.1\n\n")
    assert info.value.status == 400
