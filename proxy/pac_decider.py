"""PAC decisions inside the proxy: off the event loop, bounded, cached only where safe.

Evaluation runs in the supervised PAC worker processes (`pac.sandbox.AsyncPacSandbox`), so
the event loop only waits on pipes, and a hostile script costs at most the evaluation bound
for that one decision. Evaluations waiting for an engine form a bounded queue: when it is
full, a new connection is REJECTed ("PAC overloaded") instead of piling up.

No client can take the engines from the others: one client (the container's source
address) has at most a fair share of them evaluating at once (`share_of`), the rest of its
evaluations wait in its own queue, served in turn with other clients', and past
`client_queue_of` waiting evaluations its new connections are REJECTed, not anyone else's.
An input whose evaluation exhausted a bound (time, memory, a worker that died) is answered
REJECT from a short negative cache for `FAILURE_TTL` seconds, so repeating it costs no
engine. A connection that goes away while its evaluation waits is dropped from the queue
(the proxy cancels its decision), so it is never evaluated.

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
import time
from collections.abc import Callable
from dataclasses import dataclass

from pac.env import PacEnv, canonical_addresses, normalize_name
from pac.result import EvalResult, Reads
from pac.sandbox import AsyncPacSandbox, Limits, exhausted_bounds
from proxy.config import DEFAULTS
from proxy.metrics import METRICS, ProcessMetrics
from proxy.pac_source import PacSnapshot
from proxy.resolver import NameResolver
from rules.model import Action, Decision, Destination

log = logging.getLogger("airgap.pac")

UNAVAILABLE = "PAC unavailable"
OVERLOADED = "PAC overloaded"
#: How long an input whose evaluation exhausted a bound is answered REJECT without running.
FAILURE_TTL = 30.0


def share_of(evaluators: int) -> int:
    """Engines one client may hold at once: half of them (at least one), so another client
    always finds one free when there are two or more."""
    return max(1, evaluators // 2)


def client_queue_of(max_queue: int) -> int:
    """Evaluations one client may have waiting: a quarter of `--pac-queue` (at least one),
    so one client cannot fill the queue and have everyone's connections refused."""
    return max(1, max_queue // 4)


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


class FailureCache:
    """Inputs whose evaluation exhausted a bound, with the REJECT they got, for `ttl`
    seconds. Keyed on (url, host) alone, whoever asked and whatever IP was dialled: the
    client chooses those freely, and a REJECT is never a bypass."""

    __slots__ = ("_entries", "max_keys", "ttl")

    def __init__(self, ttl: float = FAILURE_TTL, max_keys: int = 4096) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._entries: dict[tuple[str, str], tuple[float, Decision]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, dest: Destination, now: float) -> Decision | None:
        key = (dest.url, dest.host)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, dest: Destination, decision: Decision, now: float) -> None:
        if len(self._entries) >= self.max_keys:
            del self._entries[next(iter(self._entries))]  # the oldest
        cached = Decision(
            "REJECT",
            (),
            f"{decision.reason} (answered from the failure cache for {self.ttl:g} s)",
            decision.url,
            decision.host,
            decision.name_based,
        )
        self._entries[(dest.url, dest.host)] = (now + self.ttl, cached)


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


def _own_answer(dest: Destination) -> tuple[str, ...] | None:
    """The container's own answer for the sniffed name: the IPv4 address it dialled (what
    `dnsResolve(host)` answers first, without a lookup)."""
    return (dest.ip,) if dest.hostname and dest.ip and ":" not in dest.ip else None


class PacDecider:
    """The `rules.model.Decider` of PAC-decided connections in one worker process:
    `decide_now` answers from the cache, `decide` evaluates in the sandbox."""

    def __init__(
        self,
        resolver: NameResolver,
        limits: Limits,
        engine: str,
        evaluators: int = DEFAULTS.pac.evaluators,
        max_queue: int = DEFAULTS.pac.queue,
        metrics: ProcessMetrics = METRICS,
    ) -> None:
        self.resolver = resolver
        self.metrics = metrics
        self.limits = limits
        self.engine = engine
        self.evaluators = evaluators
        self.max_queue = max_queue
        self.snapshot = PacSnapshot(None, error="PAC not loaded yet")
        self.cache = DecisionCache()
        self.failures = FailureCache()
        self.share = share_of(evaluators)
        self.client_queue = client_queue_of(max_queue)
        self._sandbox: AsyncPacSandbox | None = None
        self._waiting = 0
        self._waiting_by_client: dict[str | None, int] = {}
        self._swap_lock = asyncio.Lock()

    async def set_snapshot(self, snap: PacSnapshot) -> None:
        """Swap in a new script (loaded before it is used) or mark the PAC unavailable."""
        async with self._swap_lock:
            if snap.script is None:
                self.snapshot = snap
                self.cache.clear()
                self.failures.clear()
                old, self._sandbox = self._sandbox, None
            elif self._sandbox is not None and snap.sha256 == self.snapshot.sha256:
                self.snapshot = snap  # same script (e.g. recovered, or stale flag changed)
                return
            else:
                sandbox = AsyncPacSandbox(
                    snap.script,
                    engine=self.engine,
                    limits=self.limits,
                    workers=self.evaluators,
                    share=self.share,
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
                self.failures.clear()
        if old is not None:
            # In-flight evaluations on the old script finish first (bounded by the limit).
            asyncio.get_running_loop().call_later(
                self.limits.time + 2, lambda: asyncio.ensure_future(old.aclose())
            )

    @property
    def in_force(self) -> bool:
        """Whether a script is loaded here and deciding (else every decision is REJECT)."""
        return self._sandbox is not None and self.snapshot.script is not None

    async def aclose(self) -> None:
        if self._sandbox is not None:
            await self._sandbox.aclose()
            self._sandbox = None

    def _reject(self, dest: Destination, reason: str) -> Decision:
        return Decision("REJECT", (), reason, dest.url, dest.host, bool(dest.hostname))

    def decide_now(self, dest: Destination) -> Decision | None:
        """What is known without evaluating: no script in force (fail closed), a cached
        answer, or a recent evaluation that exhausted its bounds; None: await `decide`."""
        snap = self.snapshot
        if self._sandbox is None or snap.script is None:
            self.metrics.pac_evaluated("unavailable")
            return self._reject(dest, f"{UNAVAILABLE}: {snap.error or 'no script'}")
        cached = self.cache.get(dest, _own_answer(dest), self.resolver.peek)
        if cached is None:
            cached = self.failures.get(dest, time.monotonic())
        if cached is not None:
            self.metrics.pac_evaluated("cached")
        return cached

    async def decide(self, dest: Destination) -> Decision:
        known = self.decide_now(dest)
        if known is not None:
            return known
        sandbox = self._sandbox
        snap = self.snapshot
        if sandbox is None:  # decide_now answers this itself; kept for the type
            return self._reject(dest, f"{UNAVAILABLE}: no script")
        own_answer = _own_answer(dest)
        if self._waiting >= self.max_queue:
            self.metrics.pac_evaluated("overloaded")
            return self._reject(dest, f"{OVERLOADED}: {self._waiting} evaluations waiting")
        client = dest.client_ip
        mine = self._waiting_by_client.get(client, 0)
        if mine >= self.client_queue:
            self.metrics.pac_evaluated("overloaded")
            return self._reject(
                dest, f"{OVERLOADED}: {mine} evaluations of client {client} waiting"
            )
        env = PacEnv(
            dns={dest.hostname: own_answer} if own_answer and dest.hostname else {},
            my_ip=(dest.client_ip,) if dest.client_ip else (),
        )
        self._waiting += 1
        self._waiting_by_client[client] = mine + 1
        began = time.monotonic()
        try:
            result = await sandbox.evaluate(dest.url, dest.host, env, self._resolve, client)
        finally:
            self._waiting -= 1
            left = self._waiting_by_client[client] - 1
            if left:
                self._waiting_by_client[client] = left
            else:
                del self._waiting_by_client[client]
        error = result.error
        outcome = "ok" if error is None else "timeout" if error.kind == "timeout" else "error"
        self.metrics.pac_evaluated(outcome, time.monotonic() - began)
        if sandbox is not self._sandbox:
            # The script changed while this evaluated: decide again with the new one.
            return await self.decide(dest)
        decision = self._decision(dest, result, snap)
        self.cache.put(dest, own_answer, result, decision)
        if exhausted_bounds(result):
            self.failures.put(dest, decision, time.monotonic())
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
        action: Action = "DIRECT" if first.kind == "DIRECT" else "PROXY"
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
