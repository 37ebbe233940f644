"""One timer for many same-length deadlines: each fires once, in order, never early;
discarded ones never fire; the timer stops when nothing is pending.

Only lower bounds on time are asserted (a loaded machine may run a timer late, never early).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvloop

from proxy.deadlines import Deadlines


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_deadlines_fire_once_in_order_and_never_early() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], bool]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        deadlines: Deadlines[str] = Deadlines(0.2, lambda item: fired.append((item, loop.time())))
        added = {"a": loop.time()}
        deadlines.add("a")
        await asyncio.sleep(0.05)
        added["b"] = loop.time()
        deadlines.add("b")
        deadlines.add("c")
        deadlines.discard("c")
        await _until(lambda: len(fired) >= 2)
        await asyncio.sleep(0.3)  # time for a wrong third firing
        idle = deadlines._handle is None and len(deadlines) == 0
        return [(item, when - added[item]) for item, when in fired], idle

    fired, idle = uvloop.run(scenario())
    assert [item for item, _ in fired] == ["a", "b"], "once each, in order; 'c' was discarded"
    assert all(waited >= 0.2 - 0.002 for _, waited in fired), fired
    assert idle, "no timer runs while nothing is pending"


def test_adding_again_restarts_the_deadline() -> None:
    async def scenario() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        deadlines: Deadlines[str] = Deadlines(0.15, fired.append)
        deadlines.add("a")
        deadlines.add("b")
        await asyncio.sleep(0.1)
        readded = loop.time()
        deadlines.add("a")  # moves behind "b", with a new deadline
        await _until(lambda: "a" in fired)
        return fired, loop.time() - readded

    fired, waited = uvloop.run(scenario())
    assert fired == ["b", "a"]
    assert waited >= 0.15 - 0.002


def test_expiry_may_add_and_discard_and_close_stops_everything() -> None:
    async def scenario() -> tuple[list[str], int]:
        fired: list[str] = []
        deadlines: Deadlines[str] = Deadlines(0.05, lambda item: None)

        def expire(item: str) -> None:
            fired.append(item)
            deadlines.discard("y")
            if item == "x":
                deadlines.add("z")

        deadlines.expire = expire
        deadlines.add("x")
        deadlines.add("y")
        await _until(lambda: "z" in fired)
        deadlines.add("w")
        deadlines.close()
        await asyncio.sleep(0.2)
        return fired, len(deadlines)

    fired, left = uvloop.run(scenario())
    assert fired == ["x", "z"], "a deadline discarded by an expiry never fires"
    assert left == 0
