"""`pac-eval` targets, normalised exactly as the proxy builds FindProxyForURL's arguments.

The URL is `scheme://host:port`, port always explicit, never a path; the scheme
is `https` for port 443 and `http` otherwise; IPv6 is bracketed in the URL and bare in
`host`; IPv4-mapped IPv6 is the IPv4 address; names are lower case, without the trailing
dot, IDNA A-labels, LDH labels within RFC 1035 lengths. So `pac-eval example.com:443`
asks the script the very question the proxy will ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from pac import addr

_LDH = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: Every label LDH (one regex for the whole name: a batch parses tens of thousands).
_LDH_NAME = re.compile(rf"{_LDH}(?:\.{_LDH})*")
#: The characters of an IPv4 literal; a host without ':' made of others is a name.
_V4_CHARS = re.compile(r"[0-9.]+")
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}


class TargetError(ValueError):
    """A target that cannot be turned into the proxy's (url, host)."""


@dataclass(frozen=True, slots=True)
class Target:
    """FindProxyForURL's two arguments, plus a note when the input was changed."""

    url: str
    host: str
    note: str | None = None


def canonical_ip(text: str) -> str | None:
    """Canonical text of an IP literal (IPv4-mapped folded to IPv4), or None.

    An IPv6 scope id (`fe80::1%eth0`) is not an address the proxy ever passes: None."""
    if "%" in text:
        return None
    if ":" not in text and not _V4_CHARS.fullmatch(text):
        return None  # a name: no IP literal without ':' has other characters than these
    try:
        return addr.canonical_ip(text)
    except ValueError:
        return None


def canonical_name(text: str) -> str:
    """The proxy's spelling of a host name; TargetError when it has none."""
    name = text[:-1] if text.endswith(".") else text
    if not name:
        raise TargetError("empty host name")
    try:
        name = name.lower() if name.isascii() else idna.encode(name, uts46=True).decode()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise TargetError(f"{text!r} is not a valid host name ({exc})") from None
    if len(name) > 253 or not _LDH_NAME.fullmatch(name):
        raise TargetError(f"{text!r} is not a valid host name (LDH labels, RFC 1035 lengths)")
    if _NUMERIC.fullmatch(name.rpartition(".")[2]):
        raise TargetError(f"{text!r} ends in a numeric label: browsers read it as an IP")
    return name


def canonical_host(text: str) -> str:
    """An IP literal (brackets allowed) or a name, canonical."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    ip = canonical_ip(bare)
    if ip is not None:
        return ip
    if bare != text or ":" in bare:
        raise TargetError(f"{text!r} is not a valid IP address")
    return canonical_name(bare)


def proxy_url(host: str, port: int) -> str:
    """`scheme://host:port` as the proxy builds it."""
    scheme = "https" if port == 443 else "http"
    return f"{scheme}://{addr.format_hostport(host, port)}"


def _port(text: str, what: str) -> int:
    try:
        return addr.parse_port(text)
    except ValueError:
        raise TargetError(f"{what}: port must be 1-65535, got {text!r}") from None


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _no_controls(text: str) -> None:
    if _CONTROL.search(text):
        raise TargetError("control characters are not allowed")


def parse_target(text: str, raw_url: bool = False) -> Target:
    """`host:port`, `[v6]:port` or a URL -> the proxy's (url, host).

    A URL keeps only scheme, host and port, as the proxy sees a connection (the path is
    dropped, with a note) unless `raw_url`, which passes the URL verbatim.
    """
    text = text.strip()
    _no_controls(text)
    if "://" in text:
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # "Invalid IPv6 URL" and the like
            raise TargetError(f"{text!r}: not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        hostname = parts.hostname
        if not hostname:
            raise TargetError(f"{text!r}: no host in URL")
        raw_host = parts.netloc.rpartition("@")[2]
        raw_host = raw_host[: raw_host.index("]") + 1] if raw_host.startswith("[") else hostname
        host = canonical_host(raw_host)
        try:
            explicit = parts.port
        except ValueError:
            raise TargetError(f"{text!r}: port must be 1-65535") from None
        port = explicit if explicit is not None else _DEFAULT_PORTS.get(scheme)
        if port is None or not 1 <= port <= 65535:
            raise TargetError(f"{text!r}: give a port (no default for scheme {scheme!r})")
        if raw_url:
            return Target(text, host)
        url = proxy_url(host, port)
        rest = parts.path not in ("", "/") or parts.query or parts.fragment
        note = f"{text} is evaluated as {url}: the proxy never sees a path" if rest else None
        if note is None and not url.startswith(scheme + "://"):
            note = f"{text} is evaluated as {url}: the proxy picks the scheme from the port"
        return Target(url, host, note)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise TargetError(f"{text!r}: expected [IPv6]:port")
        host, port_text = text[: end + 1], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise TargetError(f"{text!r}: expected host:port or a URL")
        if ":" in host:
            raise TargetError(f"{text!r}: write IPv6 addresses as [addr]:port")
    port = _port(port_text, text)
    host = canonical_host(host)
    return Target(proxy_url(host, port), host)
