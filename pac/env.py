"""The world a PAC script sees: DNS, its own address and the clock, all injected.

Nothing here does I/O on its own: DNS answers come from the caller's table or the caller's
resolver, so an evaluation is hermetic unless the caller decides otherwise, and no helper
ever blocks on real DNS behind the caller's back.

DNS works in rounds (see jslib): the script runs with the answers known so far; the names
it looked up but had no answer for come back as misses; the caller's resolver answers them
and the script runs again. `DnsRounds` holds that state, independent of engines and of
sync/async, so the in-process engines, the sandbox and the async proxy path share it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import idna

from pac.addr import unmap
from pac.jslib import MAX_NAMES
from pac.result import EvalResult, Reads

#: A resolver: name (lower-case, A-labels, no trailing dot) -> addresses in resolver order;
#: empty when the name does not resolve. It may raise; that counts as "does not resolve".
Resolver = Callable[[str], Sequence[str]]
DnsTable = Mapping[str, "str | Sequence[str]"]

#: How many times one evaluation may be restarted to feed it DNS answers.
MAX_ROUNDS = 6


def normalize_name(name: str) -> str | None:
    """Canonical DNS name: ASCII lower case, no trailing dot, IDNA A-labels; None if invalid.

    Browsers convert a non-ASCII name to punycode before resolving; so do we.
    """
    name = name.rstrip(".") if name not in (".", "") else ""
    if not name or len(name) > 253:
        return None
    if name.isascii():
        lowered = name.lower()
        labels = lowered.split(".")
        if all(0 < len(label) <= 63 for label in labels) and all(
            c.isalnum() or c in "-_" for label in labels for c in label
        ):
            return lowered
        return None
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def canonical_addresses(values: str | Sequence[str]) -> tuple[str, ...]:
    """Valid IP literals only, canonical text, IPv4-mapped IPv6 folded to IPv4."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        try:
            addr = ipaddress.ip_address(str(value).strip())
        except ValueError:
            continue
        text = str(unmap(addr))
        if text not in out:
            out.append(text)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PacEnv:
    """Inputs of one evaluation besides `url` and `host`.

    `dns` holds answers known in advance (a table). With no `resolver`, DNS is hermetic:
    names outside the table do not resolve. With a resolver, it is asked for the rest (the
    proxy pre-answers the connection's own host and resolves others boundedly).
    `my_ip` is what myIpAddressEx() reports, in order; myIpAddress() is its first IPv4
    address, else its first address (an IPv6 client's own), `127.0.0.1` only when empty, as
    in Chromium. `now` is the clock (None: the real clock at evaluation time).
    """

    dns: DnsTable = field(default_factory=dict)
    resolver: Resolver | None = None
    my_ip: Sequence[str] = ()
    now: datetime | None = None

    def static_table(self) -> dict[str, tuple[str, ...]]:
        """The `dns` table with canonical names and addresses."""
        table: dict[str, tuple[str, ...]] = {}
        for name, values in self.dns.items():
            key = normalize_name(name)
            if key is not None:
                table[key] = canonical_addresses(values)
        return table

    def payload(
        self, answers: Mapping[str, Sequence[str]], hermetic: bool = False
    ) -> dict[str, Any]:
        """The JSON the harness's setEnv() takes. `hermetic`: `answers` is all there is (no
        resolver behind it), so the harness settles a canonical name it lacks as "does not
        resolve" in the same run instead of reporting it as a miss for the next round."""
        now_ms: int | None = None
        if self.now is not None:
            now = self.now if self.now.tzinfo else self.now.replace(tzinfo=UTC)
            now_ms = round(now.timestamp() * 1000)
        out: dict[str, Any] = {
            "dns": {k: list(v) for k, v in answers.items()},
            "my": list(canonical_addresses(list(self.my_ip))),
            "now": now_ms,
        }
        if hermetic:
            out["h"] = True
        return out


def safe_resolve(resolver: Resolver, name: str) -> tuple[str, ...]:
    """Call the caller's resolver; an exception or garbage means "does not resolve"."""
    try:
        return canonical_addresses(list(resolver(name)))
    except Exception:  # any resolver failure is a failed lookup: fail closed
        return ()


class DnsRounds:
    """State of one evaluation's DNS rounds (engine- and sync/async-independent).

    Usage: send `payload()`, decode the envelope, call `unanswered(envelope.misses)` to get
    the names the resolver must answer, `add()` those answers, then `rerun()` says whether
    to run again; `finish()` gives the result with every name it read.
    """

    def __init__(
        self,
        env: PacEnv,
        static: Mapping[str, tuple[str, ...]] | None = None,
        has_resolver: bool | None = None,
    ):
        self.env = env
        self.has_resolver = env.resolver is not None if has_resolver is None else has_resolver
        self.static = env.static_table() if static is None else static
        # Keyed by the name exactly as the harness spelled it (ASCII-lower-cased raw name).
        self.answers: dict[str, tuple[str, ...]] = dict(self.static)
        self.rounds = 0
        self.asked = 0  # names given to the resolver, over all rounds (at most MAX_NAMES)
        self._new_answer = False
        self._last_misses: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        self.rounds += 1
        self._new_answer = False
        return self.env.payload(self.answers, hermetic=not self.has_resolver)

    def unanswered(self, misses: Sequence[str]) -> list[str]:
        """Answer misses from the table; return the canonical names left for the resolver."""
        self._last_misses = tuple(misses)
        need: list[str] = []
        for raw in misses:
            canon = normalize_name(raw)
            if canon is None:
                self.answers[raw] = ()
            elif canon in self.static:
                self.answers[raw] = self.static[canon]
                self._new_answer = self._new_answer or bool(self.static[canon])
            elif not self.has_resolver:
                self.answers[raw] = ()
            elif canon in self.answers and canon != raw:
                self.answers[raw] = self.answers[canon]
                self._new_answer = self._new_answer or bool(self.answers[canon])
            elif canon in need:
                continue
            elif self.asked >= MAX_NAMES:  # the whole evaluation's budget is spent
                self.answers[raw] = ()
            else:
                need.append(canon)
                self.asked += 1
        return need

    def add(self, resolved: Mapping[str, Sequence[str]]) -> None:
        """Answers from the resolver, keyed by canonical name."""
        for raw in self._last_misses:
            canon = normalize_name(raw)
            if canon is not None and canon in resolved:
                addrs = canonical_addresses(list(resolved[canon]))
                self.answers[raw] = addrs
                self.answers.setdefault(canon, addrs)
                self._new_answer = self._new_answer or bool(addrs)

    def rerun(self) -> bool:
        """Run again only if some miss now has an address (a failed name already failed)."""
        return self._new_answer and self.rounds < MAX_ROUNDS

    def finish(self, outcome: EvalResult, misses: Sequence[str]) -> EvalResult:
        """The outcome, with names that failed as misses recorded as read (answer: none)."""
        if not misses:
            return outcome
        seen = {name for name, _ in outcome.reads.dns}
        extra = tuple((m, ()) for m in misses if m not in seen)
        reads = Reads(
            outcome.reads.dns + extra,
            outcome.reads.clock,
            outcome.reads.my_ip,
            outcome.reads.random,
        )
        return EvalResult(outcome.result, outcome.error, reads, outcome.alerts)


def now_utc() -> datetime:
    """The real clock, for callers that want to pin one instant for a batch."""
    return datetime.now(UTC)
