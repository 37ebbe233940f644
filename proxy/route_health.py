"""Proxies that just failed are tried last for a while (`--bad-proxy-ttl`), as browsers do.

Only a proxy that could not be used counts as failed (`rules.routing.after_failure`): one
that answered with a refusal is working, so a client asking for a refused destination never
moves every other client's connections to the next entry of the list (often DIRECT).

Without this, a dead first proxy in a PAC list would cost every new connection the full
connect timeout before the next entry is tried. A bad proxy is never dropped: when nothing
else is left it is still tried, so this only reorders, it never widens a decision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pac.addr import format_hostport
from pac.routes import Route
from proxy.config import DEFAULTS

#: Failed proxies remembered at most (a PAC may name a proxy per destination, e.g. built
#: from the host, so a client choosing names could otherwise grow the table for ever).
MAX_REMEMBERED = 4096


class BadProxies:
    """Routes that failed recently, with the time they count as bad until."""

    __slots__ = ("_until", "ttl")

    def __init__(self, ttl: float = DEFAULTS.bad_proxy_ttl) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, str, int], float] = {}

    def order(self, routes: Sequence[Route]) -> tuple[Route, ...]:
        """The routes with recently failed proxies moved to the end (order kept otherwise)."""
        if not self._until or len(routes) < 2:
            return tuple(routes)
        now = time.monotonic()
        good: list[Route] = []
        bad: list[Route] = []
        for route in routes:
            until = self._until.get((route.kind, route.host, route.port))
            if until is not None and until > now:
                bad.append(route)
            else:
                good.append(route)
        return (*good, *bad)

    def failed(self, route: Route) -> None:
        if route.kind != "DIRECT" and self.ttl > 0:
            now = time.monotonic()
            until = self._until
            if len(until) >= MAX_REMEMBERED:
                for key in [k for k, t in until.items() if t <= now]:
                    del until[key]  # expired: they no longer reorder anything
                if len(until) >= MAX_REMEMBERED // 2:  # the earlier half goes (amortised)
                    for key in list(until)[: len(until) - MAX_REMEMBERED // 2]:
                        del until[key]
            until[(route.kind, route.host, route.port)] = now + self.ttl

    def worked(self, route: Route) -> None:
        if self._until:
            self._until.pop((route.kind, route.host, route.port), None)

    def listing(self) -> list[dict[str, object]]:
        """The proxies tried last now, in PAC spelling (no credentials), with seconds left."""
        now = time.monotonic()
        return [
            {"route": f"{kind} {format_hostport(host, port)}", "seconds_left": round(t - now, 1)}
            for (kind, host, port), t in self._until.items()
            if t > now
        ]
