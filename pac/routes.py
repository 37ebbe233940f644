"""Proxy routes, the unit both the PAC layer and the static policy hand to the proxy.

A route is one entry of a PAC-style fallback list. It lives in `pac/` because the PAC result
string is its richest source; `rules/` builds the same objects from static proxy URLs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from pac import addr
from pac.sentinel import REJECT_HOST, names_reject_sentinel

RouteKind = Literal["DIRECT", "PROXY", "HTTPS", "SOCKS4", "SOCKS5"]


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach a destination.

    `PROXY` is HTTP CONNECT over plain TCP, `HTTPS` is HTTP CONNECT over TLS to the proxy,
    `SOCKS4` is SOCKS v4 (v4a when a hostname is carried), `SOCKS5` is SOCKS v5.
    Credentials only come from static proxy URLs; they are never shown in logs (`repr`
    hides the password, `pac_spelling` omits both).
    """

    kind: RouteKind
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def pac_spelling(self) -> str:
        """The route as a PAC result entry: `DIRECT`, `PROXY h:p`, `SOCKS5 [v6]:p`..."""
        if self.kind == "DIRECT":
            return "DIRECT"
        return f"{self.kind} {addr.format_hostport(self.host, self.port)}"

    def __str__(self) -> str:
        return self.pac_spelling()


DIRECT = Route("DIRECT")


# --- Reading a PAC result string -------------------------------------------------------------
#
# Two layers: `parse_pac_result` is Chromium's reading of the string, which the
# conformance corpus checks; `decide_routes` is our decision on top of it (the block sentinel,
# and failing closed where Chromium would fall back to DIRECT).

#: PAC type keywords, case-insensitive, as Chromium maps them. `SOCKS` means SOCKS v4 (as in
#: Chromium and Firefox, unlike some libraries that guess v5); `HTTP` is accepted as `PROXY`.
_PAC_KEYWORDS: dict[str, RouteKind] = {
    "direct": "DIRECT",
    "proxy": "PROXY",
    "http": "PROXY",
    "https": "HTTPS",
    "socks": "SOCKS4",
    "socks4": "SOCKS4",
    "socks5": "SOCKS5",
}

#: Port used when an entry gives none (Chromium's defaults per scheme).
_DEFAULT_PORTS: dict[RouteKind, int] = {"PROXY": 80, "HTTPS": 443, "SOCKS4": 1080, "SOCKS5": 1080}

# HTTP whitespace as Chromium trims it around entries and between the keyword and host.
_WS = " \t\r\n\f\v"
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
#: The first whitespace character, by `_WS` (`str.split()` would also split on \x1c-\x1f,
#: \x85 and Unicode spaces, which no PAC reader treats as separators).
_FIRST_WS = re.compile(r"[ \t\r\n\f\v]")


@dataclass(frozen=True, slots=True)
class DroppedEntry:
    """A non-empty entry of the result string that does not read as a route, and why."""

    entry: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedResult:
    """Chromium's reading of a PAC result: the routes in order, plus what was dropped.

    An empty `routes` is what Chromium turns into DIRECT (`chromium_routes`); our layer
    (`decide_routes`) turns it into REJECT instead.
    """

    routes: tuple[Route, ...]
    dropped: tuple[DroppedEntry, ...] = ()

    @property
    def chromium_routes(self) -> tuple[Route, ...]:
        """What a browser would try: the routes, or DIRECT when none survived."""
        return self.routes or (DIRECT,)

    def pac_spelling(self) -> str:
        """Chromium's canonical `;`-joined spelling (the corpus `parsed` field): as
        `ProxyList::ToPacString`, SOCKS v4 is spelled `SOCKS`."""
        return ";".join(chromium_spelling(r) for r in self.chromium_routes)


def chromium_spelling(route: Route) -> str:
    """A route as Chromium writes it back (`SOCKS` for SOCKS v4, else `Route.pac_spelling`)."""
    text = route.pac_spelling()
    return "SOCKS" + text[len("SOCKS4") :] if route.kind == "SOCKS4" else text


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """Our decision from a PAC result string.

    `routes` are tried in order; when `rejected` is True the connection is refused once they
    are exhausted (or at once when `routes` is empty). `reason` says why, for logs.
    """

    routes: tuple[Route, ...]
    rejected: bool
    reason: str
    dropped: tuple[DroppedEntry, ...] = ()


def _split_keyword(entry: str) -> tuple[str, str]:
    """(keyword, rest): the keyword ends at the first `_WS` character, `rest` is trimmed."""
    m = _FIRST_WS.search(entry)
    if m is None:
        return entry, ""
    return entry[: m.start()], entry[m.end() :].strip(_WS)


def _split_entries(text: str) -> list[str]:
    """`;`-separated entries, trimmed, empty ones ignored (Chromium's tokenizer)."""
    return [e.strip(_WS) for e in text.split(";") if e.strip(_WS)]


def _parse_port(text: str) -> int | None:
    """A decimal port 1-65535, or None. Only ASCII digits: no sign, no spaces."""
    try:
        return addr.parse_port(text)
    except ValueError:
        return None


def _valid_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text


def _parse_host_port(text: str, kind: RouteKind) -> tuple[str, int] | str:
    """Split `host[:port]` / `[v6][:port]`; returns (host, port) or the reason it is invalid."""
    if "@" in text:
        return "credentials are not allowed in a PAC result"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return "unterminated IPv6 bracket"
        host, rest = text[1:end].lower(), text[end + 1 :]
        if not _valid_ipv6(host):
            return f"invalid IPv6 address {host!r}"
        if rest and not rest.startswith(":"):
            return "unexpected text after the IPv6 address"
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        else:
            port_text = port_text_raw
        host = host.lower()
        if not host:
            return "missing host"
        if ":" in host:
            return "IPv6 address without brackets"
        if not set(host) <= _HOSTNAME_CHARS or host.startswith(".") or ".." in host:
            return f"invalid host {host!r}"
    if port_text is None:
        return host, _DEFAULT_PORTS[kind]
    port = _parse_port(port_text)
    if port is None:
        return f"missing or invalid port {port_text!r}"
    return host, port


def _parse_entry(entry: str) -> Route | str:
    """One trimmed entry -> a Route, or the reason it is dropped."""
    keyword, rest = _split_keyword(entry)
    kind = _PAC_KEYWORDS.get(keyword.lower())
    if kind is None:
        return f"unknown type {keyword!r}"
    if kind == "DIRECT":
        return DIRECT if not rest else "DIRECT takes no host"
    if not rest:
        return f"{keyword} without host:port"
    if not rest.isascii():  # "\u212a".lower() is "k": no lower-casing into a valid host
        return "non-ASCII characters in host:port"
    if any(c in rest for c in _WS):
        return "unexpected text after host:port"
    parsed = _parse_host_port(rest, kind)
    if isinstance(parsed, str):
        return parsed
    return Route(kind, parsed[0], parsed[1])


def parse_pac_result(text: str) -> ParsedResult:
    """Read a FindProxyForURL result as Chromium does.

    Entries are tried in order; malformed ones are dropped (and reported, so `pac-eval`
    and the proxy's logs can say why a route vanished), never guessed at.
    """
    routes: list[Route] = []
    dropped: list[DroppedEntry] = []
    for entry in _split_entries(text):
        parsed = _parse_entry(entry)
        if isinstance(parsed, Route):
            routes.append(parsed)
        else:
            dropped.append(DroppedEntry(entry, parsed))
    return ParsedResult(tuple(routes), tuple(dropped))


def decide_routes(text: str) -> RouteVerdict:
    """Our decision from a PAC result string (README, "PAC-driven proxying").

    Routes before the sentinel are still tried first; reaching the sentinel, or a list with
    no usable route at all, means REJECT (Chromium would go DIRECT on an empty list: we
    fail closed).
    """
    routes: list[Route] = []
    dropped: list[DroppedEntry] = []
    for entry in _split_entries(text):
        # Before validation, on the whole entry: a sentinel that is not a valid route must
        # not be dropped (and the list go on, often to DIRECT). See pac.sentinel.
        if names_reject_sentinel(entry):
            reason = f"PAC result reaches the block sentinel {REJECT_HOST} ({entry!r})"
            return RouteVerdict(tuple(routes), True, reason, tuple(dropped))
        parsed = _parse_entry(entry)
        if isinstance(parsed, Route):
            routes.append(parsed)
        else:
            dropped.append(DroppedEntry(entry, parsed))
    if not routes:
        why = "empty" if not dropped else "no valid entry"
        return RouteVerdict(
            (), True, f"PAC result has no usable route ({why}: {text!r})", tuple(dropped)
        )
    return RouteVerdict(tuple(routes), False, f"PAC result {text!r}", tuple(dropped))
