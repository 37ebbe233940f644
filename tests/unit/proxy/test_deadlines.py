"""One timer for many same-length deadlines: each fires once, in order, never early;
discarded ones never fire; the timer stops when nothing is pending.

Only lower bounds on time are asserted (a loaded machine may run a timer late, never early).
"""

from __future__ import annotations

import asyncio
import time

import uvloop

from proxy.deadlines import Deadlines
from tests.unit.waiting import until


def test_deadlines_fire_once_in_order_and_never_early() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], bool]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        deadlines: Deadlines[str] = Deadlines(0.2, lambda item: fired.append((item, loop.time())))
        added = {"a": loop.time()}
        deadlines.add("a")
        # Time passing is the scenario: b's deadline comes later than a's. A late wake-up
        # changes nothing (only lower bounds are asserted).
        await asyncio.sleep(0.05)
        added["b"] = loop.time()
        deadlines.add("b")
        deadlines.add("c")
        deadlines.discard("c")
        await until(lambda: len(fired) >= 2, "two deadlines fired")
        # Nothing pending and no timer armed: no third firing can come.
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
        # Time passes before "a" is added again, with the loop held (a blocking sleep):
        # no timer can run meanwhile, so "a" is re-added before it fired, however late the
        # machine is. The wait is the scenario, not a synchronisation.
        time.sleep(0.1)
        readded = loop.time()
        deadlines.add("a")  # moves behind "b", with a new deadline
        await until(lambda: "a" in fired, "the re-added deadline fired")
        return fired, loop.time() - readded

    fired, waited = uvloop.run(scenario())
    assert fired == ["b", "a"]
    assert waited >= 0.15 - 0.002


def test_expiry_may_add_and_discard_and_close_stops_everything() -> None:
    async def scenario() -> tuple[list[str], int, bool]:
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
        await until(lambda: "z" in fired, "the deadline added by an expiry fired")
        deadlines.add("w")
        deadlines.close()
        # Nothing pending and no timer armed: nothing can fire after the close.
        return fired, len(deadlines), deadlines._handle is None

    fired, left, disarmed = uvloop.run(scenario())
    assert fired == ["x", "z"], "a deadline discarded by an expiry never fires"
    assert left == 0 and disarmed
