"""Real DNS for a `pac-eval` batch: each name looked up once, in parallel, ahead of need.

A script that resolves its host (`dnsResolve(host)`, `isInNet(host, ...)`,
`isResolvable(host)`) misses that name on its first run; the sandbox then asks the resolver
and runs the script again. Done one target at a time with a lookup each, that doubles the
cost of a batch. The proxy avoids it by answering the connection's own host up front; a
batch does the same: the hosts of the next chunk of targets are looked up by a few threads
while the current chunk is evaluated, and the answers go into the chunk's DNS table, so most
evaluations need one run and no lookup of their own. The answers are the same ones the
rounds would have fetched (one lookup per name and run, as a DNS cache would give).

Looking ahead is only worth it when the script does resolve its host: `HostPrefetch` starts
when the script's text names a DNS helper, and keeps going only while the evaluations show
that most scripts runs read their own host.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from pac.env import canonical_addresses, normalize_name

#: The PAC helpers that resolve a name given to them.
_DNS_HELPERS = re.compile(r"\b(?:dnsResolve|isInNet|isResolvable)(?:Ex)?\b")
#: Lookups running at once: enough to hide a slow resolver behind evaluation, few enough
#: not to flood it.
THREADS = 8


def mentions_dns(script: str) -> bool:
    """True when the script's text names a helper that resolves names."""
    return _DNS_HELPERS.search(script) is not None


def looks_like_ip(host: str) -> bool:
    """An IP literal as FindProxyForURL's host argument (helpers answer those themselves,
    and the proxy knows no name for them). Cheap: a batch asks this for every target."""
    return ":" in host or _DOTTED.fullmatch(host) is not None


_DOTTED = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


class Lookups:
    """Names -> addresses through `lookup` (blocking, may raise), each name at most once.

    `prefetch()` queues names behind earlier prefetches; `resolve()` (the sandbox's
    resolver) jumps the queue and waits at most `timeout` seconds: a name whose lookup takes
    longer does not resolve, and the thread it holds is a daemon, so a hung lookup never
    holds up the run or its exit.
    """

    def __init__(
        self,
        lookup: Callable[[str], Sequence[str]],
        timeout: float,
        threads: int = THREADS,
    ) -> None:
        self._lookup = lookup
        self.timeout = timeout
        self._threads = threads
        self._started = 0
        self._answers: dict[str, tuple[str, ...]] = {}
        self._queued: set[str] = set()
        self._done = threading.Condition()
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._order = itertools.count()

    def _submit(self, name: str, urgent: bool) -> None:
        """Queue `name` unless answered; an urgent request queues it again ahead of the
        prefetches (the thread that comes second finds it answered and skips it)."""
        if name in self._answers or (name in self._queued and not urgent):
            return
        self._queued.add(name)
        self._queue.put((0 if urgent else 1, next(self._order), name))
        if self._started < self._threads:
            self._started += 1
            threading.Thread(target=self._work, name="pac-eval-dns", daemon=True).start()

    def _work(self) -> None:
        while True:
            _, _, name = self._queue.get()
            if name in self._answers:
                continue
            try:
                answer = canonical_addresses(list(self._lookup(name)))
            except Exception:  # a failed lookup does not resolve
                answer = ()
            with self._done:
                self._answers.setdefault(name, answer)
                self._done.notify_all()

    def prefetch(self, names: Iterable[str]) -> None:
        """Start looking up `names` (canonical) in the background."""
        for name in names:
            self._submit(name, urgent=False)

    def _wait(self, names: Sequence[str], deadline: float) -> None:
        with self._done:
            pending = [n for n in names if n not in self._answers]
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._done.wait(left)
                pending = [n for n in pending if n not in self._answers]

    def known(self, names: Sequence[str], deadline: float) -> dict[str, tuple[str, ...]]:
        """The answers for `names` that are in by `deadline` (time.monotonic())."""
        self._wait(names, deadline)
        answers = self._answers
        return {n: answers[n] for n in names if n in answers}

    def resolve(self, name: str) -> list[str]:
        """One name, now (the sandbox's resolver for names nobody looked up ahead)."""
        key = normalize_name(name) or name
        self._submit(key, urgent=True)
        self._wait([key], time.monotonic() + self.timeout)
        return list(self._answers.get(key, ()))


def host_names(hosts: Iterable[str]) -> list[str]:
    """The distinct canonical names among FindProxyForURL host arguments (IP literals
    need no lookup: the helpers answer them themselves)."""
    out: dict[str, None] = {}
    for host in hosts:
        if looks_like_ip(host) or host in out:
            continue
        name = normalize_name(host)
        if name is not None:
            out[name] = None
    return list(out)


class HostPrefetch:
    """Whether to look up the next chunk's hosts ahead: on while the script reads them.

    Starts on when the script names a DNS helper; after each chunk, stays (or turns) on when
    at least a quarter of the targets named by a host name read that name.
    """

    THRESHOLD = 0.25

    def __init__(self, script: str) -> None:
        self.on = mentions_dns(script)
        self._possible = self.on

    def observe(self, hosts: Sequence[str], reads: Sequence[Iterable[str]]) -> None:
        if not self._possible:
            return
        named = read = 0
        for host, names in zip(hosts, reads, strict=True):
            if looks_like_ip(host):
                continue
            named += 1
            key = host.lower()
            if any(n == key for n in names):
                read += 1
        if named:
            self.on = read >= self.THRESHOLD * named
