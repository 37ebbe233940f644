"""The control pipe: every message kind round-trips, and the worker's end applies them in
order, keeping nothing of the ones it is done with."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy import control
from proxy.control import _ControlReader
from proxy.pac_source import PacSnapshot
from tests.unit.waiting import until


def test_finished_snapshot_swaps_are_not_kept() -> None:
    """A long PAC outage publishes a snapshot at every retry: the worker must not keep one
    pending message per retry for its whole life."""
    seen: list[control.Message] = []

    async def handle(message: control.Message) -> None:
        seen.append(message)

    async def scenario() -> int:
        reader = _ControlReader(handle, asyncio.Event())
        line = json.dumps({"pac": PacSnapshot(None, error="down").to_json()}).encode() + b"\n"
        for _ in range(200):
            reader.data_received(line)
        await until(lambda: len(seen) == 200, "every snapshot applied")
        reader.close()
        return reader.queue.qsize()

    left = asyncio.run(scenario())
    assert len(seen) == 200
    assert left == 0


def test_messages_are_handled_in_the_order_sent_even_when_one_takes_time() -> None:
    """A config and the PAC snapshot after it must not swap places (a slow swap first)."""
    order: list[str] = []

    async def handle(message: control.Message) -> None:
        if isinstance(message, control.ConfigUpdate):
            await asyncio.sleep(0.05)  # a slow apply, not a synchronisation
            order.append("config")
        elif isinstance(message, control.PacUpdate):
            order.append("pac")

    async def scenario() -> None:
        reader = _ControlReader(handle, asyncio.Event())
        reader.data_received(
            control.config_message("main", "{}", "f.json", "ab")
            + control.snapshot_message(PacSnapshot(None, error="x"))
        )
        await until(lambda: len(order) == 2, "both applied")
        reader.close()

    asyncio.run(scenario())
    assert order == ["config", "pac"]


def test_every_kind_round_trips() -> None:
    snap = PacSnapshot("function FindProxyForURL(u, h) { return 'DIRECT'; }", "ab")
    assert control.decode(control.snapshot_message(snap)) == control.PacUpdate("main", snap)
    assert control.decode(control.snapshot_message(snap, "shadow")) == control.PacUpdate(
        "shadow", snap
    )
    assert control.decode(control.config_message("shadow", "{}", "s.json", "cd")) == (
        control.ConfigUpdate("shadow", "{}", "s.json", "cd")
    )
    assert control.decode(control.bad_proxy_message("PROXY", "p.example", 3128, 300)) == (
        control.BadProxyNote("PROXY", "p.example", 3128, 300.0)
    )
    assert control.decode(control.REOPEN_AUDIT_MESSAGE[:-1]) == control.ReopenAudit()
    assert control.decode(control.STOP_MESSAGE[:-1]) == control.Stop()
    assert control.decode(b'{"something": "new"}') is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"config": {"slot": "main", "text": 1, "source": "s", "sha256": "x"}}',
        b'{"config": {"slot": "other", "text": "{}", "source": "s", "sha256": "x"}}',
        b'{"pac": {}, "slot": "elsewhere"}',
        b'{"bad_proxy": {"kind": "PROXY", "host": "h", "port": 0, "ttl": 1}}',
        b'{"bad_proxy": {"kind": "PROXY", "host": "h", "port": 80, "ttl": -1}}',
        b'{"bad_proxy": {"kind": "PROXY", "host": "h", "port": true, "ttl": 1}}',
        b"[]",
    ],
)
def test_a_malformed_message_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        control.decode(line)
