"""proxy.explicit's header rewriting (pure): hop-by-hop gone, Host from the URI, Via added."""

from __future__ import annotations

from pac.routes import Route
from proxy.explicit import forward_headers, response_headers
from proxy.forward_head import parse_request_head


def test_request_headers() -> None:
    req = parse_request_head(
        b"POST http://a.example:8080/x HTTP/1.1\r\nHost: evil.example\r\n"
        b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Authorization: Basic eA==\r\n"
        b"Proxy-Connection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"Expect: 100-continue\r\nAccept: */*\r\nContent-Length: 3\r\n\r\n"
    )
    out = forward_headers(req, None)
    names = [n for n, _ in out]
    assert out[0] == (b"host", b"a.example:8080")
    for gone in (b"connection", b"x-secret", b"proxy-authorization", b"proxy-connection",
                 b"keep-alive", b"te", b"upgrade", b"expect"):  # fmt: skip
        assert gone not in names
    assert (b"accept", b"*/*") in out and (b"content-length", b"3") in out
    assert (b"via", b"1.1 airgap-proxy") in out


def test_upstream_credentials_only_for_http_proxies() -> None:
    req = parse_request_head(b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert forward_headers(req, None)[0] == (b"host", b"a.example")
    proxy = Route("PROXY", "corp", 8080, username="u", password="p")
    assert (b"proxy-authorization", b"Basic dTpw") in forward_headers(req, proxy)
    socks = Route("SOCKS5", "corp", 1080, username="u", password="p")
    assert all(n != b"proxy-authorization" for n, _ in forward_headers(req, socks))


def test_response_headers() -> None:
    out = response_headers(
        [
            (b"proxy-authenticate", b"Basic realm=x"),
            (b"connection", b"close, x-hop"),
            (b"x-hop", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", b"text/plain"),
        ]
    )
    assert out == [(b"content-type", b"text/plain"), (b"via", b"1.1 airgap-proxy")]
