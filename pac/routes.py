"""Proxy routes, the unit both the PAC layer and the static policy hand to the proxy.

A route is one entry of a PAC-style fallback list. It lives in `pac/` because the PAC result
string is its richest source; `rules/` builds the same objects from static proxy URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteKind = Literal["DIRECT", "PROXY", "HTTPS", "SOCKS4", "SOCKS5"]

#: The sentinel host that turns a PAC entry into a block (Docker Desktop's convention).
REJECT_HOST = "reject.docker.internal"


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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind} {host}:{self.port}"

    def __str__(self) -> str:
        return self.pac_spelling()


DIRECT = Route("DIRECT")
