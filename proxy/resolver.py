"""Name resolution for DIRECT routes that rest on a sniffed name.

The proxy resolves the name itself to check that the client's destination IP really is one
of the name's addresses (SNI/Host spoofing, design.md). `getaddrinfo` tells no TTL, so answers
are cached for a fixed, short time; failures are cached more briefly. Lookups run in the
loop's executor, never blocking the event loop, and are bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time

from proxy.origdst import canonical_ip


class NameResolver:
    """Caching, time-bounded forward lookups (A and AAAA, resolver order kept)."""

    def __init__(
        self,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        timeout: float = 5.0,
        max_entries: int = 4096,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[str, asyncio.Future[tuple[str, ...]]] = {}

    def peek(self, name: str) -> tuple[str, ...] | None:
        """The cached, unexpired answer for `name`, without looking it up."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The name's addresses; an empty tuple when it does not resolve (or times out)."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._pending.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, ...]] = loop.create_future()
        self._pending[name] = fut
        try:
            addrs = await self._lookup(loop, name)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            expiry = now + (self.ttl if addrs else self.negative_ttl)
            self._cache[name] = (expiry, addrs)
            fut.set_result(addrs)
            return addrs
        finally:
            del self._pending[name]
            if not fut.done():
                fut.set_result(())

    async def _lookup(self, loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...]:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), self.timeout
            )
        except (OSError, TimeoutError, UnicodeError):
            return ()
        seen: dict[str, None] = {}
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                seen.setdefault(canonical_ip(str(sockaddr[0])), None)
        return tuple(seen)
