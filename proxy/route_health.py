"""Proxies that just failed are tried last for a while (`--bad-proxy-ttl`), as browsers do.

Only a proxy that could not be used counts as failed (`rules.routing.after_failure`): one
that answered with a refusal is working, so a client asking for a refused destination never
moves every other client's connections to the next entry of the list (often DIRECT).

Without this, a dead first proxy in a PAC list would cost every new connection the full
connect timeout before the next entry is tried. A bad proxy is never dropped: when nothing
else is left it is still tried, so this only reorders, it never widens a decision.

With several workers the list is shared: a worker tells its supervisor when a proxy turns
bad or works again (`on_change`), and the supervisor tells every worker (`note`), so a dead
first proxy costs one connection its connect timeout, not one per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pac.addr import format_hostport
from pac.routes import Route
from proxy.config import DEFAULTS

#: Failed proxies remembered at most (a PAC may name a proxy per destination, e.g. built
#: from the host, so a client choosing names could otherwise grow the table for ever).
MAX_REMEMBERED = 4096


class BadProxies:
    """Routes that failed recently, with the time they count as bad until."""

    __slots__ = ("_until", "on_change", "ttl")

    def __init__(self, ttl: float = DEFAULTS.bad_proxy_ttl) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, str, int], float] = {}
        #: Called with (kind, host, port, seconds bad for; 0: works again) when a proxy
        #: turns bad or good here (not for notes from elsewhere).
        self.on_change: Callable[[str, str, int, float], None] | None = None

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
            key = (route.kind, route.host, route.port)
            now = time.monotonic()
            was = self._until.get(key)
            self._set(key, now + self.ttl, now)
            if self.on_change is not None and (was is None or was <= now):
                self.on_change(*key, self.ttl)

    def worked(self, route: Route) -> None:
        if self._until:
            key = (route.kind, route.host, route.port)
            if self._until.pop(key, None) is not None and self.on_change is not None:
                self.on_change(*key, 0.0)

    def note(self, kind: str, host: str, port: int, ttl: float) -> None:
        """What another worker found: bad for `ttl` more seconds, or (0) working again."""
        key = (kind, host, port)
        if ttl <= 0:
            self._until.pop(key, None)
        elif kind != "DIRECT":
            now = time.monotonic()
            self._set(key, now + min(ttl, self.ttl or ttl), now)

    def entries(self) -> list[tuple[str, str, int, float]]:
        """The proxies bad now, with the seconds each stays so (for a worker started later
        and for status pages)."""
        now = time.monotonic()
        return [(*key, until - now) for key, until in self._until.items() if until > now]

    def _set(self, key: tuple[str, str, int], until_time: float, now: float) -> None:
        until = self._until
        if key not in until and len(until) >= MAX_REMEMBERED:
            for old in [k for k, t in until.items() if t <= now]:
                del until[old]  # expired: they no longer reorder anything
            if len(until) >= MAX_REMEMBERED // 2:  # the earlier half goes (amortised)
                for old in list(until)[: len(until) - MAX_REMEMBERED // 2]:
                    del until[old]
        until[key] = until_time

    def listing(self) -> list[dict[str, object]]:
        """The proxies tried last now, in PAC spelling (no credentials), with seconds left."""
        now = time.monotonic()
        return [
            {"route": f"{kind} {format_hostport(host, port)}", "seconds_left": round(t - now, 1)}
            for (kind, host, port), t in self._until.items()
            if t > now
        ]
