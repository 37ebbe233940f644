"""One timer for many same-length deadlines: each fires once, in order, not before its time;
discarded ones never fire; the timer stops when nothing is pending."""

from __future__ import annotations

import asyncio

import uvloop

from proxy.deadlines import Deadlines


def test_deadlines_fire_once_in_order_and_not_early() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        started = loop.time()
        deadlines: Deadlines[str] = Deadlines(0.2, lambda item: fired.append((item, loop.time())))
        deadlines.add("a")
        await asyncio.sleep(0.05)
        deadlines.add("b")
        deadlines.add("c")
        deadlines.discard("c")
        await asyncio.sleep(0.4)
        assert len(deadlines) == 0
        assert deadlines._handle is None, "no timer runs while nothing is pending"
        return [(item, when - started) for item, when in fired]

    fired = uvloop.run(scenario())
    assert [item for item, _ in fired] == ["a", "b"]
    assert fired[0][1] >= 0.2 - 0.005
    assert fired[1][1] >= 0.25 - 0.005
    assert all(when < 0.45 for _, when in fired)


def test_adding_again_restarts_the_deadline() -> None:
    async def scenario() -> list[str]:
        fired: list[str] = []
        deadlines: Deadlines[str] = Deadlines(0.15, fired.append)
        deadlines.add("a")
        deadlines.add("b")
        await asyncio.sleep(0.1)
        deadlines.add("a")  # moves behind "b"
        await asyncio.sleep(0.1)
        early = list(fired)
        await asyncio.sleep(0.15)
        return [*early, "|", *fired]

    assert uvloop.run(scenario()) == ["b", "|", "b", "a"]


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
        await asyncio.sleep(0.2)
        deadlines.add("w")
        deadlines.close()
        await asyncio.sleep(0.1)
        return fired, len(deadlines)

    fired, left = uvloop.run(scenario())
    assert fired == ["x", "z"], "a deadline discarded by an expiry never fires"
    assert left == 0
