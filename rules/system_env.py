"""`system` mode: the proxy process's own proxy environment, read the way curl reads it.

curl's conventions: `http_proxy` in lower case only (the upper-case form is what a
CGI request header `Proxy:` becomes, "httpoxy"); `https_proxy` then `HTTPS_PROXY`, and
`no_proxy` then `NO_PROXY`, lower case first. A variable that is set but empty counts as set,
and means "no proxy", exactly as in curl; one holding only whitespace is an error (curl fails
on it too), never DIRECT. `all_proxy` is not part of the design and is ignored
with a warning. No proxy variable at all means DIRECT for everything, with a loud warning.

`no_proxy` (curl): the whole value `*` means every destination; otherwise a comma (or
whitespace) separated list of names, IPs and CIDRs. A name matches itself and its subdomains,
a leading dot is dropped (`.example.com` also matches `example.com`), there are no wildcards.
Entries curl would never match are dropped with a warning; that only sends more traffic
through the proxy, never less.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pac.routes import Route
from rules.errors import ConfigError
from rules.exclude import Entry, ExcludeMatcher, parse_entry, parse_name_pattern
from rules.names import is_ip_literal
from rules.proxy_url import ProxyURLError, parse_proxy_url

_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True, slots=True)
class SystemProxy:
    """What the environment says: a route per scheme (None = DIRECT) and the bypass list."""

    http: Route | None
    https: Route | None
    no_proxy: ExcludeMatcher
    http_var: str | None
    https_var: str | None
    warnings: tuple[str, ...]

    @property
    def any_proxy(self) -> bool:
        return self.http is not None or self.https is not None


def _lookup(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str]:
    """The first variable that is set, even to "", as curl's getenv-then-uppercase does."""
    for name in names:
        if name in environ:
            return name, environ[name]
    return None, ""


def read_system_proxy(environ: Mapping[str, str]) -> SystemProxy:
    """Read http_proxy/https_proxy/no_proxy. ConfigError on a malformed proxy URL."""
    warnings: list[str] = []
    if "HTTP_PROXY" in environ and "http_proxy" not in environ:
        warnings.append("system mode: HTTP_PROXY ignored (curl reads only lower-case http_proxy)")
    for name in ("all_proxy", "ALL_PROXY"):
        if environ.get(name):
            warnings.append(f"system mode: {name} ignored (only http_proxy and https_proxy count)")
    for lower in ("https_proxy", "no_proxy"):
        upper = lower.upper()
        if lower in environ and upper in environ and environ[lower] != environ[upper]:
            warnings.append(f"system mode: {upper} ignored, {lower} takes precedence")

    routes: dict[str, Route | None] = {}
    used: dict[str, str | None] = {}
    for key, names in (("http", ("http_proxy",)), ("https", ("https_proxy", "HTTPS_PROXY"))):
        var, value = _lookup(environ, names)
        used[key] = var
        try:
            # Only "" means "no proxy" (curl). A blank value is an error, as it is in curl:
            # read as unset it would silently send everything DIRECT.
            routes[key] = parse_proxy_url(value) if value else None
        except ProxyURLError as exc:
            raise ConfigError(f"environment variable {var}: {exc}") from None

    no_var, no_value = _lookup(environ, ("no_proxy", "NO_PROXY"))
    no_proxy = parse_no_proxy(no_value, no_var or "no_proxy", warnings)

    http, https = routes["http"], routes["https"]
    if http is None and https is None:
        warnings.append(
            "system mode: no proxy set in the environment (http_proxy, https_proxy):"
            " EVERY CONNECTION GOES DIRECT"
        )
    elif http is None:
        warnings.append("system mode: http_proxy not set: port 80 connections go DIRECT")
    elif https is None:
        warnings.append("system mode: https_proxy not set: connections not on port 80 go DIRECT")
    return SystemProxy(http, https, no_proxy, used["http"], used["https"], tuple(warnings))


def parse_no_proxy(value: str, var: str, warnings: list[str]) -> ExcludeMatcher:
    """Parse a no_proxy value into a matcher; unusable entries are dropped with a warning."""
    if value.strip() == "*":
        return ExcludeMatcher([], match_everything=f"{var}=*")
    entries: list[Entry] = []
    for token in _SEPARATORS.split(value):
        if not token:
            continue
        try:
            entries.append(_no_proxy_entry(token))
        except ValueError as exc:
            warnings.append(f"system mode: {var} entry {token!r} ignored: {exc}")
    return ExcludeMatcher(entries)


def _no_proxy_entry(token: str) -> Entry:
    bare = token[1:-1] if token.startswith("[") and token.endswith("]") else token
    if "/" in token or is_ip_literal(bare):
        return parse_entry(token)
    if "*" in token:
        raise ValueError("curl supports no wildcards in no_proxy except the whole value '*'")
    name = token[1:] if token.startswith(".") else token
    if name.startswith("."):  # one leading dot is dropped; a second one is not a name
        raise ValueError("not a host name or domain")
    if ":" in name:
        raise ValueError("ports are not supported")
    pattern = parse_name_pattern(name)
    return type(pattern)(token, pattern.labels_rev, False)
