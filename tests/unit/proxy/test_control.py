"""The worker's end of the control pipe keeps no record of snapshot swaps that are done."""

from __future__ import annotations

import asyncio
import json

from proxy.control import _ControlReader
from proxy.pac_source import PacSnapshot
from tests.unit.waiting import until


def test_finished_snapshot_swaps_are_not_kept() -> None:
    """A long PAC outage publishes a snapshot at every retry: the worker must not keep one
    task per message for its whole life."""
    seen: list[PacSnapshot] = []

    async def on_snapshot(snap: PacSnapshot) -> None:
        seen.append(snap)

    async def scenario() -> int:
        reader = _ControlReader(on_snapshot, asyncio.Event())
        line = json.dumps({"pac": PacSnapshot(None, error="down").to_json()}).encode() + b"\n"
        for _ in range(200):
            reader.data_received(line)
        await until(lambda: len(seen) == 200, "every snapshot applied")
        await until(lambda: not reader.tasks, "finished swaps forgotten")
        return len(reader.tasks)

    left = asyncio.run(scenario())
    assert len(seen) == 200
    assert left == 0


def test_ready_is_set_only_once_the_first_snapshot_is_in_force() -> None:
    """A supervised PAC worker listens on `ready`: not when the line arrives, but when the
    swap it asks for is done (loading a script takes time); later lines do not matter."""
    release = asyncio.Event()

    async def on_snapshot(snap: PacSnapshot) -> None:
        await release.wait()

    async def scenario() -> tuple[bool, bool]:
        ready = asyncio.Event()
        reader = _ControlReader(on_snapshot, asyncio.Event(), ready)
        line = json.dumps({"pac": PacSnapshot(None, error="x").to_json()}).encode() + b"\n"
        reader.data_received(line + line)
        await until(lambda: len(reader.tasks) == 2, "both swaps under way")
        before = ready.is_set()
        release.set()
        await until(ready.is_set, "ready after the first swap")
        await until(lambda: not reader.tasks, "the swaps to end")
        return before, ready.is_set()

    assert asyncio.run(scenario()) == (False, True)
