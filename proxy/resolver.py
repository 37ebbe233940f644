"""Name resolution for DIRECT routes that rest on a sniffed name.

The proxy resolves the name itself to check that the client's destination IP really is one
of the name's addresses (SNI/Host spoofing). `getaddrinfo` tells no TTL, so answers
are cached for a fixed, short time; failures are cached more briefly. Lookups run in the
loop's executor, never blocking the event loop, and are bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time

from pac.addr import socket_ip
from proxy.metrics import METRICS, ProcessMetrics


class NameResolver:
    """Caching, time-bounded forward lookups (A and AAAA, resolver order kept)."""

    def __init__(
        self,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        timeout: float = 5.0,
        max_entries: int = 4096,
        metrics: ProcessMetrics = METRICS,
    ) -> None:
        self.metrics = metrics
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[str, _Lookup] = {}

    def peek(self, name: str) -> tuple[str, ...] | None:
        """The cached, unexpired answer for `name`, without looking it up."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The name's addresses; an empty tuple when it does not resolve (or times out).

        One lookup per name at a time, in its own task: callers that join it share its
        answer, and a caller that leaves (its client closed) ends only its own wait, never
        the lookup the others are waiting for. When the last one leaves, the lookup is
        stopped: no lookup outlives every connection that wanted it.
        """
        hit = self._cache.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lookup = self._pending.get(name)
        if lookup is None:
            lookup = _Lookup(asyncio.ensure_future(self._resolve(name)))
            self._pending[name] = lookup
        lookup.callers += 1
        try:
            return await asyncio.shield(lookup.task)
        finally:
            lookup.callers -= 1
            if not lookup.callers and not lookup.task.done():
                lookup.task.cancel()
                if self._pending.get(name) is lookup:
                    del self._pending[name]  # a caller that comes now starts afresh

    async def _resolve(self, name: str) -> tuple[str, ...]:
        task = asyncio.current_task()
        try:
            now = time.monotonic()
            addrs = await self._lookup(asyncio.get_running_loop(), name)
            self.metrics.dns_lookup("timeout" if addrs is None else "ok" if addrs else "not_found")
            if addrs is None:  # timed out: say nothing about the name to later callers
                return ()
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            expiry = now + (self.ttl if addrs else self.negative_ttl)
            self._cache[name] = (expiry, addrs)
            return addrs
        finally:
            lookup = self._pending.get(name)
            if lookup is not None and lookup.task is task:
                del self._pending[name]

    async def _lookup(self, loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...] | None:
        """The addresses (empty when the name does not resolve), or None on a timeout: that
        may be a queue of other lookups ahead of this one, not an answer about the name."""
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), self.timeout
            )
        except TimeoutError:
            return None
        except (OSError, UnicodeError):
            return ()
        seen: dict[str, None] = {}
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                seen.setdefault(socket_ip(str(sockaddr[0])), None)
        return tuple(seen)


class _Lookup:
    """One lookup under way, and how many callers wait for it."""

    __slots__ = ("callers", "task")

    def __init__(self, task: asyncio.Task[tuple[str, ...]]) -> None:
        self.task = task
        self.callers = 0
