"""PAC decisions in the proxy: the cache never crosses destinations, clients or time;
overload rejects; an unavailable PAC rejects (real engine processes, no network)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from pac.sandbox import Limits
from proxy.pac_decider import PacDecider
from proxy.pac_source import PacSnapshot, sha256_text
from proxy.resolver import NameResolver
from rules.config import parse_config_text
from rules.model import Destination
from rules.policy import Policy
from tests.unit.waiting import until


class TableResolver(NameResolver):
    """A NameResolver answering from a fixed table (what the cache validates against)."""

    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.table = table
        self.lookups = 0

    async def _lookup(self, loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...]:
        self.lookups += 1
        return self.table.get(name, ())


async def _decider(script: str, resolver: NameResolver | None = None, **kw) -> PacDecider:
    decider = PacDecider(
        resolver or TableResolver({}), Limits(time=1.0), "pacparser", evaluators=2, **kw
    )
    await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
    return decider


DEST_SCRIPT = """function FindProxyForURL(url, host) {
  if (isInNet(dnsResolve(host), "203.0.113.0", "255.255.255.0")) return "DIRECT";
  return "PROXY corp.example:3128";
}"""


async def test_decide_now_answers_what_needs_no_evaluation() -> None:
    """No script in force: a REJECT at once. A new destination: None (await `decide`). An
    answer in the cache: at once, the same object `decide` returned."""
    idle = PacDecider(TableResolver({}), Limits(time=1.0), "pacparser", evaluators=1)
    dest = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
    try:
        early = idle.decide_now(dest)
        assert early is not None and early.action == "REJECT"
        assert "PAC not loaded yet" in early.reason or "no script" in early.reason
    finally:
        await idle.aclose()
    decider = await _decider(DEST_SCRIPT)
    try:
        assert decider.decide_now(dest) is None, "an evaluation is needed"
        first = await decider.decide(dest)
        assert decider.decide_now(dest) is first
    finally:
        await decider.aclose()


async def test_a_policy_awaits_its_pac_decider_with_the_folded_address() -> None:
    """`Policy.decide` hands a PAC-decided destination to the decider's `decide` when
    `decide_now` has no answer, with an IPv4-mapped address folded first."""
    text = json.dumps({"configurationFileVersion": 2, "containersProxy": {"pac": "http://p/p"}})
    decider = await _decider(DEST_SCRIPT)
    try:
        policy = Policy.from_config(parse_config_text(text, "t.json"), {}).with_pac_decider(decider)
        dest = Destination("::ffff:203.0.113.5", 443, "app.example", "10.0.0.1")
        assert policy.decide_now(dest) is None
        decision = await policy.decide(dest)
        assert decision.action == "DIRECT"
        assert policy.decide_now(dest) is decision, "the decider's cache answers next time"
    finally:
        await decider.aclose()


async def test_cache_never_gives_one_destination_the_answer_of_another() -> None:
    decider = await _decider(DEST_SCRIPT)
    try:
        inside = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
        outside = Destination("198.51.100.5", 443, "app.example", "10.0.0.1")
        first = await decider.decide(inside)
        assert first.action == "DIRECT"
        assert await decider.decide(inside) is first, "identical inputs hit the cache"
        assert (await decider.decide(outside)).routes[0].pac_spelling() == (
            "PROXY corp.example:3128"
        )
    finally:
        await decider.aclose()


async def test_cache_respects_other_names_answers() -> None:
    script = """function FindProxyForURL(url, host) {
      return dnsResolve("switch.example") == "203.0.113.1" ? "DIRECT" : "PROXY p.example:1";
    }"""
    resolver = TableResolver({"switch.example": ("203.0.113.1",)})
    decider = await _decider(script, resolver)
    try:
        dest = Destination("203.0.113.9", 443, "app.example", "10.0.0.1")
        assert (await decider.decide(dest)).action == "DIRECT"
        resolver.table["switch.example"] = ("198.51.100.1",)
        resolver._cache.clear()  # the old answer expired
        assert (await decider.decide(dest)).action == "PROXY"
    finally:
        await decider.aclose()


async def test_cache_never_gives_one_client_the_answer_of_another() -> None:
    script = """function FindProxyForURL(url, host) {
      return myIpAddress() == "10.0.0.1" ? "DIRECT" : "PROXY p.example:1";
    }"""
    decider = await _decider(script)
    try:
        a = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
        b = Destination("203.0.113.5", 443, "app.example", "10.0.0.2")
        assert (await decider.decide(a)).action == "DIRECT"
        assert (await decider.decide(b)).action == "PROXY"
        assert (await decider.decide(a)).action == "DIRECT"
    finally:
        await decider.aclose()


async def test_time_dependent_results_are_never_cached() -> None:
    script = """function FindProxyForURL(url, host) {
      return "PROXY t" + new Date().getTime() + ".example:1";
    }"""
    decider = await _decider(script)
    try:
        dest = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
        first = await decider.decide(dest)
        await asyncio.sleep(0.01)  # the clock the script reads moves on: that is the test
        second = await decider.decide(dest)
        assert first.routes != second.routes
        assert len(decider.cache) == 0
    finally:
        await decider.aclose()


async def test_a_new_script_clears_the_cache() -> None:
    decider = await _decider('function FindProxyForURL(u, h) { return "DIRECT"; }')
    try:
        dest = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
        assert (await decider.decide(dest)).action == "DIRECT"
        script = 'function FindProxyForURL(u, h) { return "PROXY reject.docker.internal:1"; }'
        await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
        assert (await decider.decide(dest)).action == "REJECT"
    finally:
        await decider.aclose()


async def test_unavailable_pac_rejects_with_the_reason() -> None:
    decider = await _decider('function FindProxyForURL(u, h) { return "DIRECT"; }')
    try:
        await decider.set_snapshot(PacSnapshot(None, error="http://pac: HTTP 503"))
        decision = await decider.decide(Destination("203.0.113.5", 443, "a.example", "10.0.0.1"))
        assert decision.action == "REJECT"
        assert decision.reason == "PAC unavailable: http://pac: HTTP 503"
    finally:
        await decider.aclose()


async def test_a_full_queue_rejects_new_connections() -> None:
    script = "function FindProxyForURL(u, h) { while (true) {} }"
    decider = await _decider(script, max_queue=2)
    try:
        dests = [Destination(f"203.0.113.{i}", 8080, None, f"10.0.0.{i}") for i in range(1, 6)]
        decisions = await asyncio.gather(*(decider.decide(d) for d in dests))
        reasons = [d.reason for d in decisions]
        assert all(d.action == "REJECT" for d in decisions)
        assert sum("PAC overloaded" in r for r in reasons) == 3
        assert sum("timeout" in r for r in reasons) == 2
    finally:
        await decider.aclose()


async def test_sentinel_after_routes_rejects_once_they_fail() -> None:
    script = (
        "function FindProxyForURL(u, h) {"
        ' return "PROXY a.example:1; PROXY reject.docker.internal:0"; }'
    )
    decider = await _decider(script)
    try:
        decision = await decider.decide(Destination("203.0.113.5", 443, "x.example", "10.0.0.1"))
        assert [r.pac_spelling() for r in decision.routes] == ["PROXY a.example:1"]
        assert decision.then_reject and decision.name_based
    finally:
        await decider.aclose()


@pytest.mark.parametrize("spelling", ["host", 'host + "."', 'host.toUpperCase() + "."'])
async def test_a_decision_on_the_own_names_answer_is_bound_to_the_dialled_ip(
    spelling: str,
) -> None:
    """The own name is answered with the dialled IP in whatever spelling the script looks
    it up; a DIRECT made on that answer must never be carried out at another address
    (a client names a real host while dialling an address the script allows)."""
    script = f"""function FindProxyForURL(url, host) {{
      if (isInNet(dnsResolve({spelling}), "203.0.113.0", "255.255.255.0")) return "DIRECT";
      return "PROXY corp.example:3128";
    }}"""
    decider = await _decider(script)
    try:
        decision = await decider.decide(Destination("203.0.113.5", 443, "github.com", "10.0.0.1"))
        assert decision.action == "DIRECT", "answered with the dialled address"
        assert decision.ip_bound, "so the DIRECT holds for that address only"
    finally:
        await decider.aclose()


SPIN = """function FindProxyForURL(url, host) {
  if (host.indexOf("spin") == 0) { while (true) {} }
  return "DIRECT";
}"""


async def test_one_clients_endless_names_do_not_delay_another_clients_fresh_name() -> None:
    """Client 10.0.0.66 opens many connections whose names never finish evaluating; a
    fresh name from 10.0.0.2 is decided at once on the other engine, not after them."""
    decider = await _decider(SPIN)
    try:
        for i in range(3):  # both engines started
            await decider.decide(Destination("203.0.113.5", 443, f"w{i}.example", "10.0.0.2"))
        hostile = [
            asyncio.ensure_future(
                decider.decide(Destination("203.0.113.5", 443, f"spin{i}.example", "10.0.0.66"))
            )
            for i in range(12)
        ]
        await until(lambda: decider._waiting == 12, "the hostile evaluations under way")
        started = time.monotonic()
        fresh = await decider.decide(Destination("203.0.113.5", 443, "fresh.example", "10.0.0.2"))
        assert fresh.action == "DIRECT"
        assert time.monotonic() - started < 0.5, "the fresh name waited for the hostile ones"
        for task in hostile:
            task.cancel()
        await asyncio.gather(*hostile, return_exceptions=True)
    finally:
        await decider.aclose()


async def test_one_client_past_its_queue_is_rejected_alone() -> None:
    """Past a quarter of --pac-queue waiting, that client's new connections are REJECTed
    (PAC overloaded); another client's still queue and are decided."""
    decider = await _decider(SPIN, max_queue=8)  # 2 per client
    try:
        hostile = [
            asyncio.ensure_future(
                decider.decide(Destination("203.0.113.5", 443, f"spin{i}.example", "10.0.0.66"))
            )
            for i in range(3)
        ]
        await until(lambda: hostile[2].done(), "the third answered")
        assert decider._waiting == 2, "the third is refused, not queued"
        third = hostile[2].result()
        assert third.action == "REJECT" and "PAC overloaded" in third.reason
        assert "10.0.0.66" in third.reason
        other = await decider.decide(Destination("203.0.113.5", 443, "ok.example", "10.0.0.2"))
        assert other.action == "DIRECT"
        for task in hostile:
            task.cancel()
        await asyncio.gather(*hostile, return_exceptions=True)
    finally:
        await decider.aclose()


async def test_an_input_that_timed_out_is_rejected_from_the_failure_cache() -> None:
    """Repeating a name whose evaluation hit the time bound costs no engine: REJECT at once,
    for any client and any dialled IP, until the entry expires or the script changes."""
    decider = await _decider(SPIN)
    try:
        first = await decider.decide(Destination("203.0.113.5", 443, "spin.example", "10.0.0.66"))
        assert first.action == "REJECT" and "timeout" in first.reason
        sandbox = decider._sandbox
        assert sandbox is not None
        respawns = sandbox.respawns
        started = time.monotonic()
        for client, ip in (("10.0.0.66", "203.0.113.5"), ("10.0.0.7", "203.0.113.9")):
            again = await decider.decide(Destination(ip, 443, "spin.example", client))
            assert again.action == "REJECT" and "failure cache" in again.reason
            assert "timeout" in again.reason
        assert time.monotonic() - started < 0.2
        # Nothing ran: no engine was killed and restarted for the repeats.
        ok = await decider.decide(Destination("203.0.113.5", 443, "ok.example", "10.0.0.66"))
        assert ok.action == "DIRECT" and sandbox.respawns <= respawns + 1
        assert len(decider.failures) == 1
        # An expired entry is evaluated again.
        decider.failures.ttl = 0.0
        decider.failures.clear()
        decider.failures.put(
            Destination("203.0.113.5", 443, "spin.example", "x"), first, time.monotonic()
        )
        assert (
            decider.failures.get(
                Destination("203.0.113.5", 443, "spin.example", "x"), time.monotonic()
            )
            is None
        )
        # A new script forgets the failures.
        decider.failures.ttl = 30.0
        decider.failures.put(
            Destination("203.0.113.5", 443, "spin.example", "x"), first, time.monotonic()
        )
        script = 'function FindProxyForURL(u, h) { return "DIRECT"; }'
        await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
        fixed = await decider.decide(Destination("203.0.113.5", 443, "spin.example", "10.0.0.66"))
        assert fixed.action == "DIRECT"
    finally:
        await decider.aclose()


async def test_ordinary_failures_are_not_cached() -> None:
    """A script that throws is cheap: it is evaluated each time (not in the failure cache)."""
    script = 'function FindProxyForURL(u, h) { throw new Error("nope"); }'
    decider = await _decider(script)
    try:
        for _ in range(2):
            decision = await decider.decide(Destination("203.0.113.5", 443, "x.example", "c"))
            assert decision.action == "REJECT" and "failure cache" not in decision.reason
        assert len(decider.failures) == 0
    finally:
        await decider.aclose()


async def test_a_decision_cancelled_while_queued_never_runs_and_frees_its_place() -> None:
    """The proxy cancels the decision of a connection that reset or was lost: one waiting
    for an engine leaves the queue (and its client's count) without being evaluated."""
    script = """var calls = 0;
    function FindProxyForURL(url, host) {
      calls++;
      if (host == "slow.example") { var t = Date.now(); while (Date.now() - t < 300) {} }
      return "PROXY n" + calls + ".example:1";
    }"""
    decider = PacDecider(TableResolver({}), Limits(time=1.0), "pacparser", evaluators=1)
    await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
    try:
        busy = asyncio.ensure_future(
            decider.decide(Destination("203.0.113.5", 80, "slow.example", "10.0.0.1"))
        )
        await until(lambda: decider._waiting == 1, "the slow evaluation under way")
        gone = [
            asyncio.ensure_future(
                decider.decide(Destination("203.0.113.5", 80, f"g{i}.example", "10.0.0.9"))
            )
            for i in range(3)
        ]
        await until(lambda: decider._waiting == 4, "the three queued behind it")
        for task in gone:
            task.cancel()
        await asyncio.gather(*gone, return_exceptions=True)
        assert decider._waiting == 1 and "10.0.0.9" not in decider._waiting_by_client
        await busy
        after = await decider.decide(Destination("203.0.113.5", 80, "next.example", "10.0.0.9"))
        assert after.routes[0].pac_spelling() == "PROXY n2.example:1"
    finally:
        await decider.aclose()
