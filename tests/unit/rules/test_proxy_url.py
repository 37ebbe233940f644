"""Static proxy URLs -> Routes; credentials never reach a message."""

from __future__ import annotations

import pytest

from pac.routes import Route
from rules.proxy_url import ProxyURLError, parse_proxy_url, redact


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("http://proxy.corp:3128", Route("PROXY", "proxy.corp", 3128)),
        ("HTTP://Proxy.Corp:3128/", Route("PROXY", "proxy.corp", 3128)),
        ("http://proxy.corp", Route("PROXY", "proxy.corp", 80)),
        ("https://proxy.corp:8443", Route("HTTPS", "proxy.corp", 8443)),
        ("https://proxy.corp", Route("HTTPS", "proxy.corp", 443)),
        ("socks5://10.0.0.1:1080", Route("SOCKS5", "10.0.0.1", 1080)),
        ("socks5h://socks.corp", Route("SOCKS5", "socks.corp", 1080)),
        ("socks4://socks.corp:1081", Route("SOCKS4", "socks.corp", 1081)),
        ("socks4a://socks.corp:1081", Route("SOCKS4", "socks.corp", 1081)),
        ("proxy.corp:8080", Route("PROXY", "proxy.corp", 8080)),
        ("10.1.2.3:8080", Route("PROXY", "10.1.2.3", 8080)),
        ("http://[2001:db8::1]:3128", Route("PROXY", "2001:db8::1", 3128)),
        ("[2001:db8::1]:3128", Route("PROXY", "2001:db8::1", 3128)),
        ("https://[2001:db8::1]", Route("HTTPS", "2001:db8::1", 443)),
        ("http://[::ffff:10.0.0.1]:3128", Route("PROXY", "10.0.0.1", 3128)),
        ("  http://proxy.corp:3128  ", Route("PROXY", "proxy.corp", 3128)),
    ],
)
def test_valid(text: str, route: Route) -> None:
    assert parse_proxy_url(text) == route


def test_credentials_are_percent_decoded() -> None:
    r = parse_proxy_url("http://us%40er:p%3Ass%2Fw@proxy.corp:3128")
    assert (r.username, r.password) == ("us@er", "p:ss/w")
    assert r.host == "proxy.corp" and r.port == 3128


def test_user_without_password() -> None:
    r = parse_proxy_url("socks5://alice@socks.corp:1080")
    assert (r.username, r.password) == ("alice", None)


def test_credentials_hidden_in_repr_and_spelling() -> None:
    r = parse_proxy_url("http://alice:s3cret@proxy.corp:3128")
    assert "s3cret" not in repr(r)
    assert r.pac_spelling() == "PROXY proxy.corp:3128"


def test_redact() -> None:
    assert redact("http://a:b@h:1") == "http://***@h:1"
    assert redact("a:b@h:1") == "***@h:1"
    assert redact("http://h:1") == "http://h:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty proxy URL"),
        ("ftp://proxy:21", "unsupported scheme 'ftp'"),
        ("http//proxy:80", "no path, query or fragment"),
        ("proxy.corp", "a port is required (host:port)"),
        ("http://proxy.corp:0", "port 0 out of range (1-65535)"),
        ("http://proxy.corp:65536", "port 65536 out of range (1-65535)"),
        ("http://proxy.corp:http", "port 'http' is not a number"),
        ("http://proxy.corp:", "port '' is not a number"),
        ("http://proxy.corp:3128/path", "no path, query or fragment"),
        ("http://proxy.corp:3128?x=1", "no path, query or fragment"),
        ("http://2001:db8::1:3128", "must be in brackets"),
        ("http://[2001:db8::zz]:3128", "bad IPv6 address"),
        ("http://[2001:db8::1:3128", "missing ']'"),
        ("http://[2001:db8::1]x", "unexpected text after ']'"),
        ("http://:3128", "no host"),
        ("http://bad_host:3128", "bad host 'bad_host'"),
        ("http://1.2.3.256:3128", "bad host '1.2.3.256'"),
        ("http://@proxy:3128", "empty user name"),
        ("http://a%ff:b@proxy:3128", "not valid UTF-8"),
        ("http://a%0d%0a:b@proxy:3128", "control characters"),
        ("socks5://" + "u" * 256 + ":p@s:1080", "max 255 bytes"),
        ("1://x", "malformed scheme"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ProxyURLError) as info:
        parse_proxy_url(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "http://alice:s3cret@proxy.corp:99999",
        "http://alice:s3cret@proxy.corp:3128/x",
        "ftp://alice:s3cret@proxy.corp",
        "http://alice:s3cret@bad_host:1",
        "http://alice:s3cret/x@proxy:1",
    ],
)
def test_password_never_in_message(text: str) -> None:
    with pytest.raises(ProxyURLError) as info:
        parse_proxy_url(text)
    assert "s3cret" not in str(info.value)
    assert "alice" not in str(info.value)
