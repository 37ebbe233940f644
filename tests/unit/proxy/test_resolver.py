"""proxy.resolver: one lookup per name shared by its callers, whoever of them leaves."""

from __future__ import annotations

import asyncio
import socket

from proxy.resolver import NameResolver

ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.7", 0))]


def _fake_getaddrinfo(
    loop: asyncio.AbstractEventLoop, calls: list[str], answer: asyncio.Event | None = None
) -> asyncio.Event:
    """Replace the loop's lookups by one that answers once `answer` is set (at once when
    None). Returns an event set when a lookup has started."""
    started = asyncio.Event()

    async def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple]:  # type: ignore[type-arg]
        calls.append(host)
        started.set()
        if answer is not None:
            await answer.wait()
        return ANSWER

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
    return started


def test_a_caller_that_leaves_does_not_spoil_the_answer_for_the_others() -> None:
    """A client that closes while its lookup is in flight cancels its own wait only: a
    second client waiting for the same name still gets the addresses (an empty answer
    would REJECT it as 'does not resolve')."""

    async def scenario() -> tuple[tuple[str, ...], tuple[str, ...] | None, list[str]]:
        calls: list[str] = []
        release = asyncio.Event()
        started = _fake_getaddrinfo(asyncio.get_running_loop(), calls, release)
        resolver = NameResolver()
        first = asyncio.ensure_future(resolver.resolve("a.example"))
        await asyncio.wait_for(started.wait(), 5)  # the lookup is under way
        second = asyncio.ensure_future(resolver.resolve("a.example"))
        # A zero sleep is one turn of the loop, not a timed wait: `second` runs up to its
        # wait for the shared lookup (it has nothing else to wait for) before we go on.
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        release.set()
        answer = await asyncio.wait_for(second, 5)
        return answer, resolver.peek("a.example"), calls

    answer, cached, calls = asyncio.run(scenario())
    assert answer == ("203.0.113.7",)
    assert cached == ("203.0.113.7",), "and it is cached for the next ones"
    assert calls == ["a.example"], "one lookup for both"


def test_a_lookup_that_times_out_is_not_cached_as_a_name_that_does_not_resolve() -> None:
    """A timeout may be a queue of other names' lookups ahead of this one (a client can
    make one): it must not make the name fail for everyone for the negative TTL."""

    async def scenario() -> tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]:
        loop = asyncio.get_running_loop()
        calls: list[str] = []
        _fake_getaddrinfo(loop, calls, asyncio.Event())  # never answers: only the timeout ends it
        resolver = NameResolver(timeout=0.1)
        timed_out = await resolver.resolve("a.example")
        cached = resolver.peek("a.example")
        _fake_getaddrinfo(loop, calls)
        return timed_out, cached, await resolver.resolve("a.example")

    timed_out, cached, later = asyncio.run(scenario())
    assert timed_out == ()
    assert cached is None, "nothing cached for the name"
    assert later == ("203.0.113.7",), "the next caller looks it up again"


def test_a_lookup_every_caller_left_is_stopped_and_a_new_caller_starts_afresh() -> None:
    """Lookups stay bounded by the connections that want them: a client that closes at once,
    again and again with new names, must not leave lookups running behind it."""

    async def scenario() -> tuple[bool, int, tuple[str, ...]]:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        stopped = loop.create_future()

        async def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple]:  # type: ignore[type-arg]
            started.set()
            try:
                await loop.create_future()  # a lookup that never answers
            except asyncio.CancelledError:
                stopped.set_result(True)
                raise
            return ANSWER

        loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
        resolver = NameResolver()
        callers = [asyncio.ensure_future(resolver.resolve("a.example")) for _ in range(3)]
        # The lookup task starts after all three callers joined it (they were scheduled first).
        await asyncio.wait_for(started.wait(), 5)
        for caller in callers:
            caller.cancel()
        was_stopped = await asyncio.wait_for(stopped, 5)
        pending = len(resolver._pending)
        _fake_getaddrinfo(loop, [])
        return was_stopped, pending, await asyncio.wait_for(resolver.resolve("a.example"), 2)

    was_stopped, pending, answer = asyncio.run(scenario())
    assert was_stopped and pending == 0
    assert answer == ("203.0.113.7",)
