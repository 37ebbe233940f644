"""Static proxy URLs (`http`, `https`, `https_proxy`...) parsed into `Route`s.

Written by hand rather than with `urllib.parse`, which accepts far more than a proxy address
(paths, empty hosts, unbracketed IPv6) without complaint. Credentials are percent-decoded into
the Route and never appear in an error message: every message quotes `redact(text)`.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes

from pac.routes import Route, RouteKind
from rules.names import canonical_hostname

#: scheme -> (route kind, default port). `socks5h`/`socks4a` are curl's spellings for "let the
#: proxy resolve the name"; our SOCKS routes carry the name whenever one is known anyway.
SCHEMES: dict[str, tuple[RouteKind, int]] = {
    "http": ("PROXY", 80),
    "https": ("HTTPS", 443),
    "socks5": ("SOCKS5", 1080),
    "socks5h": ("SOCKS5", 1080),
    "socks4": ("SOCKS4", 1080),
    "socks4a": ("SOCKS4", 1080),
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"[0-9]{1,5}")
#: RFC 1929: SOCKS5 username and password are at most 255 bytes each.
_SOCKS_CRED_MAX = 255


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used. The message never contains credentials."""


def redact(text: str) -> str:
    """The URL with any `user:pass@` replaced by `***@`, safe for messages and logs."""
    if "@" not in text:
        return text
    m = _SCHEME.match(text)
    start = m.end() if m else 0
    return text[:start] + "***" + text[text.rindex("@") :]


def parse_proxy_url(text: str) -> Route:
    """Parse `scheme://[user:pass@]host[:port][/]` or a bare `host:port` (HTTP proxy).

    Schemes: http (PROXY), https (HTTPS: TLS to the proxy), socks5/socks5h, socks4/socks4a.
    A missing port takes the scheme default (80, 443, 1080); a bare `host:port` needs its
    port. IPv6 hosts must be bracketed; IPv4-mapped IPv6 hosts become IPv4.
    """
    if not isinstance(text, str):
        raise ProxyURLError(f"expected a string, got {type(text).__name__}")
    shown = redact(text.strip())
    rest = text.strip()
    if not rest:
        raise ProxyURLError("empty proxy URL")
    m = _SCHEME.match(rest)
    if m:
        scheme = m.group(1).lower()
        if scheme not in SCHEMES:
            names = ", ".join(SCHEMES)
            raise ProxyURLError(f"proxy URL {shown!r}: unsupported scheme {scheme!r} ({names})")
        rest = rest[m.end() :]
    elif "://" in rest:
        raise ProxyURLError(f"proxy URL {shown!r}: malformed scheme")
    else:
        scheme = ""
    kind, default_port = SCHEMES[scheme or "http"]

    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise ProxyURLError(f"proxy URL {shown!r}: a proxy URL has no path, query or fragment")

    username = password = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        username, password = _credentials(userinfo, shown, kind)

    host, port_text = _split_host_port(rest, shown)
    if port_text is None:
        if not scheme:
            raise ProxyURLError(f"proxy address {shown!r}: a port is required (host:port)")
        port = default_port
    else:
        port = _port(port_text, shown)
    return Route(kind, host, port, username, password)


def _credentials(userinfo: str, shown: str, kind: RouteKind) -> tuple[str, str | None]:
    user_raw, colon, pass_raw = userinfo.partition(":")
    try:
        username = unquote_to_bytes(user_raw).decode("utf-8")
        password = unquote_to_bytes(pass_raw).decode("utf-8") if colon else None
    except UnicodeDecodeError:
        raise ProxyURLError(
            f"proxy URL {shown!r}: credentials are not valid UTF-8 after percent-decoding"
        ) from None
    if not username:
        raise ProxyURLError(f"proxy URL {shown!r}: empty user name before '@'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username + (password or "")):
        raise ProxyURLError(f"proxy URL {shown!r}: control characters in credentials")
    if kind == "SOCKS5" and (
        len(username.encode()) > _SOCKS_CRED_MAX or len((password or "").encode()) > _SOCKS_CRED_MAX
    ):
        raise ProxyURLError(f"proxy URL {shown!r}: SOCKS5 user name and password max 255 bytes")
    return username, password


def _split_host_port(hostport: str, shown: str) -> tuple[str, str | None]:
    """Split and validate `host[:port]`; the host comes back canonical."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ProxyURLError(f"proxy URL {shown!r}: missing ']' after IPv6 address")
        inner, after = hostport[1:end], hostport[end + 1 :]
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            raise ProxyURLError(f"proxy URL {shown!r}: bad IPv6 address {inner!r}") from None
        if after and not after.startswith(":"):
            raise ProxyURLError(f"proxy URL {shown!r}: unexpected text after ']'")
        mapped = addr.ipv4_mapped
        host = str(mapped) if mapped else str(addr)
        return host, (after[1:] if after else None)
    if hostport.count(":") > 1:
        raise ProxyURLError(f"proxy URL {shown!r}: an IPv6 address must be in brackets")
    host_text, colon, port_text = hostport.partition(":")
    if not host_text:
        raise ProxyURLError(f"proxy URL {shown!r}: no host")
    try:
        host = str(ipaddress.IPv4Address(host_text))
    except ValueError:
        name = canonical_hostname(host_text)
        if name is None:
            raise ProxyURLError(f"proxy URL {shown!r}: bad host {host_text!r}") from None
        host = name
    return host, (port_text if colon else None)


def _port(text: str, shown: str) -> int:
    if not _PORT.fullmatch(text):
        raise ProxyURLError(f"proxy URL {shown!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ProxyURLError(f"proxy URL {shown!r}: port {port} out of range (1-65535)")
    return port
