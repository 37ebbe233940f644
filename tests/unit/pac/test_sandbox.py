"""Hostile scripts: each gives its documented error within the bound plus 1 s, and the
sandbox stays usable; the asyncio front end never blocks the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pac.engine import ENGINES, PacLoadError
from pac.env import PacEnv
from pac.result import ProtocolError, decode_envelope
from pac.sandbox import AsyncPacSandbox, Limits, PacSandbox
from tests.unit.waiting import until

BOUND = 0.5
LIMITS = Limits(time=BOUND, memory=96 << 20)
#: For tests of something other than the time bound. The bound is wall time: on a loaded
#: machine a worker may wait longer than BOUND for a core just to load a script, and a
#: test of, say, a syntax error must not read that as a hanging script.
WIDE = Limits(time=30.0, memory=96 << 20)


@dataclass
class Spawned:
    """The engine processes an `AsyncPacSandbox` started, seen through the one public call
    it makes to start them (`asyncio.create_subprocess_exec`): a test waits for "a process
    was started" or "a request was written to it" instead of sleeping and hoping."""

    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    written: asyncio.Event = field(default_factory=asyncio.Event)

    def watch_writes(self, proc: asyncio.subprocess.Process) -> None:
        """Set `written` after each write to `proc`'s stdin (the worker's request pipe)."""
        assert proc.stdin is not None
        stdin = proc.stdin
        real_write = stdin.write

        def write(data: bytes) -> None:
            real_write(data)
            self.written.set()

        stdin.write = write  # type: ignore[method-assign]


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spawned]:
    record = Spawned()
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real_exec(*args, **kwargs)
        record.procs.append(proc)
        record.started.set()
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_exec)
    yield record


async def _cancel_once_sent(spawned: Spawned, evaluation: asyncio.Future[Any]) -> None:
    """Cancel `evaluation` right after its request was written to the worker: the reply is
    then on its way (the case a client that leaves mid-decision makes)."""
    spawned.written.clear()
    await asyncio.wait_for(spawned.written.wait(), 10)
    # The evaluation's task is now suspended reading the reply: the write returned, and
    # nothing else ran between it and this task (the event woke only us).
    evaluation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await evaluation


def script(body: str) -> str:
    """A PAC that answers DIRECT for host "ok" and runs `body` for anything else."""
    head = 'function FindProxyForURL(url, host) {\n  if (host == "ok") return "DIRECT";\n'
    return f"{head}  {body}\n}}"


HOSTILE = {
    "infinite loop": ("while (true) {}", "timeout"),
    "deep recursion": ("function f(n) { return f(n + 1) + 1; } return String(f(0));", "exception"),
    # Whichever bound is hit first: both are the documented, fail-closed outcome.
    "huge allocation": (
        "var a = []; while (true) a.push(new Array(1 << 16).fill(host));",
        ("memory", "timeout"),
    ),
    "string doubling": ('var s = "x"; while (true) s = s + s;', "memory"),
    "throws": ('throw new Error("boom");', "exception"),
    "non-string": ("return 42;", "non_string"),
    "string object": ('return new String("DIRECT");', "non_string"),
    "undefined": ("return;", "non_string"),
    "non-ascii": ('return "PROXY \\u00e9.example:1";', "non_ascii"),
    "huge result": ('return new Array(100000).join("DIRECT;");', "memory"),
    "regex backtracking": (
        'return /^(a+)+$/.test(new Array(40).join("a") + "b") ? "x" : "y";',
        "timeout",
    ),
}


def test_defaults() -> None:
    limits = Limits()
    assert limits.time == 1.0
    assert limits.script_bytes == 1 << 20
    assert limits.memory > 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_evaluation(engine: str, case: str) -> None:
    body, kind = HOSTILE[case]
    timed = "timeout" in (kind if isinstance(kind, tuple) else (kind,))
    with PacSandbox(script(body), engine, LIMITS if timed else WIDE) as sandbox:
        started = time.monotonic()
        result = sandbox.evaluate("http://bad:80", "bad")
        elapsed = time.monotonic() - started
        assert result.result is None
        assert result.error is not None, result
        assert result.error.kind in (kind if isinstance(kind, tuple) else (kind,)), result.error
        assert result.error.message
        assert elapsed < BOUND + 1.0
        assert result.verdict().rejected  # a failed evaluation is a REJECT
        assert sandbox.evaluate("http://ok:80", "ok").result == "DIRECT"


@pytest.mark.parametrize("engine", ENGINES)
def test_hang_in_a_batch_only_fails_its_own_target(engine: str) -> None:
    items = [("http://ok:80", "ok")] * 3 + [("http://bad:80", "bad")] + [("http://ok:80", "ok")] * 3
    with PacSandbox(script("while (true) {}"), engine, LIMITS) as sandbox:
        started = time.monotonic()
        results = list(sandbox.evaluate_many(items))
        assert time.monotonic() - started < BOUND + 1.5
    kinds = [r.error.kind if r.error else r.result for r in results]
    assert kinds == ["DIRECT"] * 3 + ["timeout"] + ["DIRECT"] * 3


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("src", "kind", "needle"),
    [
        ('function FindProxyForURL(u, h) {\n  return "DIRECT"\n', "script_error", "SyntaxError"),
        ("var x = 1;\nundefinedThing();\n", "script_error", "ReferenceError"),
        ("var notAPac = 1;", "no_entrypoint", "FindProxyForURL"),
        ("", "script_error", "empty"),
        ("while (true) {}", "timeout", "loading"),
    ],
)
def test_scripts_that_do_not_load(engine: str, src: str, kind: str, needle: str) -> None:
    started = time.monotonic()
    with pytest.raises(PacLoadError) as info:
        PacSandbox(src, engine, LIMITS if kind == "timeout" else WIDE).start()
    if kind == "timeout":  # the load is cut at the bound
        assert time.monotonic() - started < BOUND + 1.0 + 1.0  # plus worker start-up
    assert info.value.error.kind == kind
    assert needle in info.value.error.message


def test_syntax_errors_carry_the_line() -> None:
    src = "// line 1\nfunction FindProxyForURL(u, h) {\n  return = 3;\n}\n"
    for engine in ENGINES:
        with pytest.raises(PacLoadError) as info:
            PacSandbox(src, engine, WIDE).start()
        assert info.value.error.line == 3


def test_over_size_script_is_refused_before_any_engine_sees_it() -> None:
    limits = Limits(time=BOUND, script_bytes=1000)
    src = script("return 'DIRECT';")
    padded = src + "\n//" + "x" * (1000 - len(src) - 3)
    assert len(padded.encode()) == 1000
    with PacSandbox(padded, "pacparser", limits) as sandbox:
        assert sandbox.evaluate("http://ok:80", "ok").result == "DIRECT"
    with pytest.raises(PacLoadError) as info:
        PacSandbox(padded + "x", "pacparser", limits)
    assert "over the limit of 1000" in info.value.error.message


@pytest.mark.parametrize("engine", ENGINES)
def test_a_killed_worker_is_reported_and_replaced(engine: str) -> None:
    with PacSandbox(script("while (true) {}"), engine, Limits(time=5.0)) as sandbox:
        assert sandbox.evaluate("http://ok:80", "ok").result == "DIRECT"
        worker = sandbox._worker
        assert worker is not None
        os.kill(worker.proc.pid, signal.SIGSEGV)
        result = sandbox.evaluate("http://ok:80", "ok")
        assert result.error is not None and result.error.kind == "crash"
        assert "SIGSEGV" in result.error.message
        assert sandbox.evaluate("http://ok:80", "ok").result == "DIRECT"
        assert sandbox.respawns == 1


def test_batch_environment_and_dns_through_the_sandbox() -> None:
    src = (
        'function FindProxyForURL(u, h) { return "PROXY " + dnsResolve(h) + ":" + myIpAddress(); }'
    )
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        return ["192.0.2.77"]

    env = PacEnv(dns={"a.example": "192.0.2.1"}, resolver=resolver, my_ip=["10.0.0.9"])
    with PacSandbox(src, "pacparser", LIMITS) as sandbox:
        results = list(
            sandbox.evaluate_many(
                [("http://a.example:80", "a.example"), ("http://b.example:80", "b.example")], env
            )
        )
    assert [r.result for r in results] == ["PROXY 192.0.2.1:10.0.0.9", "PROXY 192.0.2.77:10.0.0.9"]
    assert asked == ["b.example"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_async_sandbox_never_blocks_the_loop(engine: str) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        # The sleep is the probe itself: a 10 ms tick whose lateness measures how long the
        # loop was blocked. Nothing waits on it.
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with AsyncPacSandbox(script("while (true) {}"), engine, LIMITS, workers=2) as sandbox:
        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        bad, good = await asyncio.gather(
            sandbox.evaluate("http://bad:80", "bad"), sandbox.evaluate("http://ok:80", "ok")
        )
        elapsed = time.monotonic() - started
        stop.set()
        await tick
        assert bad.error is not None and bad.error.kind == "timeout"
        assert good.result == "DIRECT"
        assert elapsed < BOUND + 1.0 + 1.0  # second worker starts lazily
        # A loop blocked by the hanging evaluation would miss ticks for its whole bound; a
        # busy machine only delays single ticks, by far less.
        assert max(gaps) < BOUND, gaps
        again = await sandbox.evaluate("http://ok:80", "ok")
        assert again.result == "DIRECT"


async def test_async_resolver_answers_misses() -> None:
    src = 'function FindProxyForURL(u, h) { return "PROXY " + dnsResolve("other.example") + ":1"; }'
    calls: list[str] = []

    async def resolver(name: str) -> list[str]:
        calls.append(name)
        await asyncio.sleep(0.01)  # a lookup that takes a while (the sandbox must wait)
        return ["192.0.2.8"]

    async with AsyncPacSandbox(src, "pacparser", LIMITS) as sandbox:
        pre = PacEnv(dns={"conn.example": "198.51.100.1"})
        result = await sandbox.evaluate("https://conn.example:443", "conn.example", pre, resolver)
    assert result.result == "PROXY 192.0.2.8:1"
    assert calls == ["other.example"]
    assert result.reads.dns == (("other.example", ("192.0.2.8",)),)


async def test_async_load_errors_raise() -> None:
    with pytest.raises(PacLoadError) as info:
        await AsyncPacSandbox("function FindProxyForURL(", "dukpy", WIDE).start()
    assert info.value.error.kind == "script_error"


@pytest.mark.parametrize(
    "reply", ['{"k": []}', '{"k": {}}', '{"k": "exception", "m": "x", "l": true}']
)
def test_malformed_error_kind_is_a_protocol_error(reply: str) -> None:
    # an unhashable kind raised TypeError, which no caller expects
    with pytest.raises(ProtocolError):
        decode_envelope(reply)


SLOW_FOR_SLOW = (
    "function FindProxyForURL(url, host) {\n"
    '  if (host == "slow") {\n'
    "    var t = Date.now(); while (Date.now() - t < 300) {}\n"
    '    return "DIRECT";\n  }\n'
    '  return "PROXY blocked.example:1";\n}'
)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_cancelled_evaluation_never_answers_the_next_one(
    engine: str, spawned: Spawned
) -> None:
    """The proxy cancels a decision when its client goes away; the reply still in the
    worker's pipe must not be read as the answer for the next connection."""
    async with AsyncPacSandbox(SLOW_FOR_SLOW, engine, WIDE, workers=1) as sandbox:
        (proc,) = spawned.procs
        spawned.watch_writes(proc)
        pending = asyncio.ensure_future(sandbox.evaluate("http://slow:80", "slow"))
        await _cancel_once_sent(spawned, pending)
        for host in ("evil", "evil2"):
            result = await sandbox.evaluate(f"http://{host}:80", host)
            assert result.result == "PROXY blocked.example:1", (host, result)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_cancelled_evaluation_costs_no_process_start(engine: str, spawned: Spawned) -> None:
    """A client that connects and leaves at once must not cost a worker restart: the
    cancelled exchange finishes, and the same process answers the next request."""
    async with AsyncPacSandbox(SLOW_FOR_SLOW, engine, WIDE, workers=1) as sandbox:
        assert await sandbox.evaluate("http://ok:80", "ok") is not None
        (proc,) = spawned.procs
        spawned.watch_writes(proc)
        for _ in range(3):
            pending = asyncio.ensure_future(sandbox.evaluate("http://slow:80", "slow"))
            await _cancel_once_sent(spawned, pending)
        result = await asyncio.wait_for(sandbox.evaluate("http://evil:80", "evil"), 10)
        assert result.result == "PROXY blocked.example:1", result
        assert spawned.procs == [proc] and proc.returncode is None, "no process was started"
        assert sandbox.respawns == 0


async def test_closing_while_a_reply_is_being_dropped_leaves_nothing_behind(
    spawned: Spawned,
) -> None:
    sandbox = AsyncPacSandbox(SLOW_FOR_SLOW, "pacparser", WIDE, workers=1)
    await sandbox.start()
    (proc,) = spawned.procs
    spawned.watch_writes(proc)
    before = asyncio.all_tasks()
    pending = asyncio.ensure_future(sandbox.evaluate("http://slow:80", "slow"))
    await _cancel_once_sent(spawned, pending)
    dropping = asyncio.all_tasks() - before
    assert dropping, "the unread reply is being read and dropped in the background"
    await sandbox.aclose()
    assert all(task.done() for task in dropping), "aclose ended it"
    assert asyncio.all_tasks() == before
    assert proc.returncode is not None


async def test_a_cancelled_spawn_keeps_the_pool_slot(spawned: Spawned) -> None:
    """Cancelled while a worker starts: the pool does not shrink (else it empties and every
    later evaluation waits for ever)."""
    async with AsyncPacSandbox(SLOW_FOR_SLOW, "pacparser", WIDE, workers=1) as sandbox:
        (first,) = spawned.procs
        first.kill()  # the next evaluation must spawn a fresh worker
        await first.wait()
        spawned.started.clear()
        spawning = asyncio.ensure_future(sandbox.evaluate("http://ok:80", "ok"))
        await asyncio.wait_for(spawned.started.wait(), 10)
        # The replacement process exists and the spawn waits for it to load the script:
        # cancelled now, inside the spawn, as when the client leaves then.
        assert not spawning.done()
        spawning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spawning
        result = await asyncio.wait_for(sandbox.evaluate("http://ok:80", "ok"), 10)
        assert result.result == "PROXY blocked.example:1"
        assert len(spawned.procs) == 3, "the cancelled start was replaced by a new one"


async def test_one_evaluation_asks_the_resolver_for_at_most_32_names() -> None:
    """The bound is per evaluation (README: at most 6 rounds, 32 names), not 32 per round:
    a script looking up many names must not cost 6 x 32 lookups per connection."""
    src = (
        "function FindProxyForURL(u, h) { var n = 0;\n"
        '  for (var i = 0; i < 1000; i++) if (dnsResolve("n" + i + ".example")) n++;\n'
        '  return "PROXY a:" + n; }'
    )
    asked: list[str] = []

    async def resolver(name: str) -> list[str]:
        asked.append(name)
        return ["192.0.2.1"]

    async with AsyncPacSandbox(src, "pacparser", LIMITS) as sandbox:
        result = await sandbox.evaluate("http://x:80", "x", PacEnv(), resolver)
    assert len(asked) == 32, len(asked)
    assert result.result == "PROXY a:32"


async def test_a_slow_dns_lookup_does_not_hold_an_engine() -> None:
    """DNS rounds wait for the resolver with the engine process free: a name that is slow
    to resolve (a client can pick it, e.g. by SNI) must not stall other evaluations."""
    src = (
        "function FindProxyForURL(u, h) {\n"
        '  if (h == "fast") return "DIRECT";\n'
        '  return dnsResolve(h) ? "PROXY a:1" : "PROXY b:1"; }'
    )

    asked = asyncio.Event()
    answer = asyncio.Event()

    async def resolver(name: str) -> list[str]:
        asked.set()
        await answer.wait()  # a lookup that does not end until the test says so
        return ["192.0.2.1"]

    async with AsyncPacSandbox(src, "pacparser", LIMITS, workers=1, dns_timeout=30) as sandbox:
        slow = asyncio.ensure_future(
            sandbox.evaluate("http://slow.example:80", "slow.example", PacEnv(), resolver)
        )
        await asyncio.wait_for(asked.wait(), 10)
        # The one engine process answers another evaluation while that lookup is pending;
        # if the lookup held it, this would wait for ever (here: fail after 10 s).
        fast = await asyncio.wait_for(
            sandbox.evaluate("http://fast:80", "fast", PacEnv(), resolver), 10
        )
        assert fast.result == "DIRECT"
        assert not slow.done(), "the slow one was still waiting for its lookup"
        answer.set()
        assert (await asyncio.wait_for(slow, 10)).result == "PROXY a:1"


# --------------------------------------------------------------------------- fair shares

SPIN_FOR_SPIN = (
    "function FindProxyForURL(url, host) {\n"
    '  if (host.indexOf("spin") == 0) { while (true) {} }\n'
    '  return "DIRECT";\n}'
)


async def test_pool_caps_an_owner_and_serves_owners_in_turn() -> None:
    """Pure scheduling (no processes): owner "a" may hold one of two slots; its other
    requests wait without delaying "b", and freed slots alternate between owners."""
    from pac.sandbox import _FairPool

    pool = _FairPool(["s1", "s2"], share=1)
    assert await pool.acquire("a") == "s1"
    a2 = asyncio.ensure_future(pool.acquire("a"))
    a3 = asyncio.ensure_future(pool.acquire("a"))
    await asyncio.sleep(0)
    assert not a2.done() and pool.waiting("a") == 2, "over its share: it waits"
    assert await asyncio.wait_for(pool.acquire("b"), 1) == "s2", "another owner does not"
    b2 = asyncio.ensure_future(pool.acquire("b"))
    await asyncio.sleep(0)
    pool.release("b", "s2")  # b's turn is not taken by a, which is at its cap
    assert await asyncio.wait_for(b2, 1) == "s2" and not a2.done()
    pool.release("a", "s1")
    assert await asyncio.wait_for(a2, 1) == "s1"
    assert pool.held("a") == 1 and pool.held("b") == 1 and pool.waiting("a") == 1
    a3.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a3
    assert pool.waiting("a") == 0, "a cancelled request leaves the queue"


async def test_pool_gives_back_a_slot_granted_to_a_request_cancelled_meanwhile() -> None:
    from pac.sandbox import _FairPool

    pool = _FairPool(["s1"], share=1)
    assert await pool.acquire("a") == "s1"
    late = asyncio.ensure_future(pool.acquire("b"))
    await asyncio.sleep(0)
    pool.release("a", "s1")  # granted to b...
    late.cancel()  # ...whose caller left before it ran
    with pytest.raises(asyncio.CancelledError):
        await late
    assert pool.held("b") == 0
    assert await asyncio.wait_for(pool.acquire("c"), 1) == "s1"


async def test_an_owner_with_endless_evaluations_leaves_the_other_engine_free() -> None:
    """Client "a" sends names that never finish; client "b"'s evaluation does not wait for
    any of them (two engines, one each at most)."""
    async with AsyncPacSandbox(SPIN_FOR_SPIN, "pacparser", LIMITS, workers=2, share=1) as sb:
        await sb.evaluate("http://warm:80", "warm", owner="b")
        await asyncio.gather(*(sb.evaluate("http://w:80", "w", owner="b") for _ in range(2)))
        spins = [
            asyncio.ensure_future(sb.evaluate(f"http://spin{i}:80", f"spin{i}", owner="a"))
            for i in range(6)
        ]
        await until(
            lambda: sb.pool.held("a") == 1 and sb.pool.waiting("a") == 5,
            "a holding its one engine, the rest of its evaluations waiting",
        )
        started = time.monotonic()
        result = await sb.evaluate("http://fresh:80", "fresh", owner="b")
        assert result.result == "DIRECT"
        assert time.monotonic() - started < BOUND / 2, "b waited for a's evaluations"
        assert sb.pool.held("a") == 1
        for spin in spins:
            spin.cancel()
        await asyncio.gather(*spins, return_exceptions=True)


async def test_a_cancelled_evaluation_keeps_its_owners_share_until_the_engine_is_free() -> None:
    """A client that leaves during its evaluation does not get its share back while the
    engine is still busy with it: its next evaluation waits, another client's does not."""
    async with AsyncPacSandbox(SPIN_FOR_SPIN, "pacparser", LIMITS, workers=2, share=1) as sb:
        await asyncio.gather(*(sb.evaluate("http://w:80", "w", owner="b") for _ in range(2)))
        gone = asyncio.ensure_future(sb.evaluate("http://spin:80", "spin", owner="a"))
        await until(lambda: sb.pool.held("a") == 1, "a's evaluation holding an engine")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert sb.pool.held("a") == 1, "the drained engine still counts for a"
        again = asyncio.ensure_future(sb.evaluate("http://ok:80", "ok", owner="a"))
        started = time.monotonic()
        assert (await sb.evaluate("http://fresh:80", "fresh", owner="b")).result == "DIRECT"
        assert time.monotonic() - started < BOUND / 2
        await asyncio.sleep(0)
        assert not again.done(), "a waits for its own engine"
        assert (await asyncio.wait_for(again, 10)).result == "DIRECT"


async def test_a_request_cancelled_while_queued_is_never_evaluated() -> None:
    """The proxy cancels the decision of a connection that went away: waiting for an
    engine, it is dropped, so the script never runs for it (a counter in the script)."""
    src = (
        "var calls = 0;\nfunction FindProxyForURL(url, host) {\n  calls++;\n"
        '  if (host == "slow") { var t = Date.now(); while (Date.now() - t < 300) {} }\n'
        '  return "PROXY n" + calls + ".example:1";\n}'
    )
    async with AsyncPacSandbox(src, "pacparser", LIMITS, workers=1) as sb:
        busy = asyncio.ensure_future(sb.evaluate("http://slow:80", "slow", owner="a"))
        await until(lambda: sb.pool.held("a") == 1, "the slow evaluation holding the engine")
        queued = [
            asyncio.ensure_future(sb.evaluate(f"http://q{i}:80", f"q{i}", owner=f"c{i}"))
            for i in range(3)
        ]
        await until(
            lambda: all(sb.pool.waiting(f"c{i}") == 1 for i in range(3)), "the three queued"
        )
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        assert (await busy).result == "PROXY n1.example:1"
        after = await sb.evaluate("http://next:80", "next", owner="d")
        assert after.result == "PROXY n2.example:1", "a dropped request ran in the engine"
