"""PAC decisions inside the proxy: off the event loop, bounded, cached only where safe.

Evaluation runs in the supervised PAC worker processes (`pac.sandbox.AsyncPacSandbox`), so
the event loop only waits on pipes, and a hostile script costs at most the evaluation bound
for that one decision. Evaluations waiting for an engine form a bounded queue: when it is
full, a new connection is REJECTed ("PAC overloaded") instead of piling up.

DNS inside the PAC at run time: for the connection's own hostname, `dnsResolve(host)` and
friends answer the address the container itself connected to (no lookup) when that is IPv4;
other names, and the own name of an IPv6 connection, go through the proxy's resolver with a
timeout and a small cache. `myIpAddress()` is the container's source address; the clock is
the real clock.

The decision cache is keyed on everything an evaluation read: url and host, the DNS answers
it used (for the own name, the destination IP), the client address if it called
myIpAddress, and nothing at all if it read the clock (time-dependent results are never
cached). It is emptied whenever the script changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pac.env import PacEnv, canonical_addresses, normalize_name
from pac.result import EvalResult, Reads
from pac.sandbox import AsyncPacSandbox, Limits
from proxy.pac_source import PacSnapshot
from proxy.resolver import NameResolver
from rules.model import Decision, Destination

log = logging.getLogger("airgap.pac")

UNAVAILABLE = "PAC unavailable"
OVERLOADED = "PAC overloaded"


@dataclass(frozen=True, slots=True)
class _Cached:
    reads: Reads
    client_ip: str | None  # set when the evaluation read myIpAddress
    own_answer: tuple[str, ...] | None  # the own-name answer it was given, if it read it
    decision: Decision


class DecisionCache:
    """Cached PAC decisions, valid only while everything the evaluation read is unchanged."""

    __slots__ = ("_entries", "max_keys")

    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self._entries: dict[tuple[str, str], list[_Cached]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self,
        dest: Destination,
        own_answer: tuple[str, ...] | None,
        peek: Callable[[str], tuple[str, ...] | None],
    ) -> Decision | None:
        entries = self._entries.get((dest.url, dest.host))
        if not entries:
            return None
        for entry in entries:
            if entry.reads.my_ip and entry.client_ip != dest.client_ip:
                continue
            if entry.reads.dns and not _same_dns(entry, dest, own_answer, peek):
                continue
            return entry.decision
        return None

    def put(
        self,
        dest: Destination,
        own_answer: tuple[str, ...] | None,
        result: EvalResult,
        decision: Decision,
    ) -> None:
        reads = result.reads
        if not result.ok or not reads.cacheable:
            return
        if len(self._entries) >= self.max_keys:
            self._entries.clear()
        entry = _Cached(reads, dest.client_ip if reads.my_ip else None, own_answer, decision)
        bucket = self._entries.setdefault((dest.url, dest.host), [])
        if len(bucket) >= 8:
            bucket.pop(0)
        bucket.append(entry)


def _same_dns(
    entry: _Cached,
    dest: Destination,
    own_answer: tuple[str, ...] | None,
    peek: Callable[[str], tuple[str, ...] | None],
) -> bool:
    for name, addrs in entry.reads.dns:
        if name == dest.hostname and own_answer is not None:
            current: tuple[str, ...] | None = own_answer
        else:
            answer = peek(name)
            current = canonical_addresses(list(answer)) if answer is not None else None
        if current != addrs:
            return False
    return True


class PacDecider:
    """`decide(dest)` for PAC-decided connections of one worker process."""

    def __init__(
        self,
        resolver: NameResolver,
        limits: Limits,
        engine: str,
        evaluators: int = 2,
        max_queue: int = 256,
    ) -> None:
        self.resolver = resolver
        self.limits = limits
        self.engine = engine
        self.evaluators = evaluators
        self.max_queue = max_queue
        self.snapshot = PacSnapshot(None, error="PAC not loaded yet")
        self.cache = DecisionCache()
        self._sandbox: AsyncPacSandbox | None = None
        self._waiting = 0
        self._swap_lock = asyncio.Lock()

    async def set_snapshot(self, snap: PacSnapshot) -> None:
        """Swap in a new script (loaded before it is used) or mark the PAC unavailable."""
        async with self._swap_lock:
            if snap.script is None:
                self.snapshot = snap
                self.cache.clear()
                old, self._sandbox = self._sandbox, None
            elif self._sandbox is not None and snap.sha256 == self.snapshot.sha256:
                self.snapshot = snap  # same script (e.g. recovered, or stale flag changed)
                return
            else:
                sandbox = AsyncPacSandbox(
                    snap.script, engine=self.engine, limits=self.limits, workers=self.evaluators
                )
                try:
                    await sandbox.start()
                except Exception as exc:
                    await sandbox.aclose()
                    log.error("PAC script does not load in this worker: %s", exc)
                    snap = PacSnapshot(None, error=f"script does not load: {exc}")
                    old, self._sandbox = self._sandbox, None
                else:
                    old, self._sandbox = self._sandbox, sandbox
                    log.info("PAC script in use: sha256=%s", (snap.sha256 or "-")[:16])
                self.snapshot = snap
                self.cache.clear()
        if old is not None:
            # In-flight evaluations on the old script finish first (bounded by the limit).
            asyncio.get_running_loop().call_later(
                self.limits.time + 2, lambda: asyncio.ensure_future(old.aclose())
            )

    async def aclose(self) -> None:
        if self._sandbox is not None:
            await self._sandbox.aclose()
            self._sandbox = None

    def _reject(self, dest: Destination, reason: str) -> Decision:
        return Decision("REJECT", (), reason, dest.url, dest.host, bool(dest.hostname))

    async def decide(self, dest: Destination) -> Decision:
        sandbox = self._sandbox
        snap = self.snapshot
        if sandbox is None or snap.script is None:
            return self._reject(dest, f"{UNAVAILABLE}: {snap.error or 'no script'}")
        own_answer = (dest.ip,) if dest.hostname and dest.ip and ":" not in dest.ip else None
        cached = self.cache.get(dest, own_answer, self.resolver.peek)
        if cached is not None:
            return cached
        if self._waiting >= self.max_queue:
            return self._reject(dest, f"{OVERLOADED}: {self._waiting} evaluations waiting")
        env = PacEnv(
            dns={dest.hostname: own_answer} if own_answer and dest.hostname else {},
            my_ip=(dest.client_ip,) if dest.client_ip else (),
        )
        self._waiting += 1
        try:
            result = await sandbox.evaluate(dest.url, dest.host, env, self._resolve)
        finally:
            self._waiting -= 1
        if sandbox is not self._sandbox:
            # The script changed while this evaluated: decide again with the new one.
            return await self.decide(dest)
        decision = self._decision(dest, result, snap)
        self.cache.put(dest, own_answer, result, decision)
        return decision

    async def _resolve(self, name: str) -> tuple[str, ...]:
        return await self.resolver.resolve(name)

    @staticmethod
    def _decision(dest: Destination, result: EvalResult, snap: PacSnapshot) -> Decision:
        verdict = result.verdict()
        stale = " (stale script under --pac-stale-grace)" if snap.stale else ""
        if result.ok:
            reason = f"PAC returned {result.result!r}: {verdict.reason}{stale}"
        else:
            reason = f"{verdict.reason}{stale}"
        if not verdict.routes:
            return Decision("REJECT", (), reason, dest.url, dest.host, bool(dest.hostname))
        first = verdict.routes[0]
        action = "DIRECT" if first.kind == "DIRECT" else "PROXY"
        # Did the script look up the connection's own name, in any spelling (`host + "."`
        # is answered from the same entry)? It was answered with the destination IP, so the
        # decision holds for that address only.
        own = dest.hostname
        ip_bound = own is not None and any(
            normalize_name(name) == own for name, _ in result.reads.dns
        )
        return Decision(
            action,
            verdict.routes,
            reason,
            dest.url,
            dest.host,
            name_based=bool(dest.hostname),
            then_reject=verdict.rejected,
            ip_bound=ip_bound,
        )
