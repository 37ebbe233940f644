"""Test doubles shared by the unit tests (uvicorn's `MockTransport` shape).

One fake transport for every test that drives a protocol object by hand: it records what
the protocol did to it (bytes written, reading paused or resumed, EOF written, closed or
aborted) and answers the questions a protocol asks (`is_closing`, `get_extra_info`,
`get_write_buffer_size`), so a test asserts on that record instead of on private state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rules.model import Decision, Destination


class FakeTransport(asyncio.Transport):
    """An in-memory `asyncio.Transport`: nothing is sent anywhere, everything is recorded."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__(extra)
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.protocol: asyncio.BaseProtocol | None = None
        self.high_water = 64 * 1024
        self.low_water = 16 * 1024

    # -- what a protocol does to its transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise RuntimeError("write on a closed FakeTransport")
        self.written += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None, "no protocol set on this FakeTransport"
        return self.protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = self.high_water if high is None else high
        self.low_water = self.low_water if low is None else low

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is "sent" at once

    # -- what the test reads

    @property
    def paused(self) -> bool:
        """Reading is paused (the protocol asked for backpressure)."""
        return not self.reading


class SyncDecider:
    """A `rules.model.Decider` that always answers at once, from a plain function."""

    def __init__(self, decide: Callable[[Destination], Decision]) -> None:
        self._decide = decide

    def decide_now(self, dest: Destination) -> Decision | None:
        return self._decide(dest)

    async def decide(self, dest: Destination) -> Decision:
        return self._decide(dest)


class AsyncDecider:
    """A `rules.model.Decider` that never answers at once: every decision is awaited, as a
    PAC evaluation is."""

    def __init__(self, decide: Callable[[Destination], Awaitable[Decision]]) -> None:
        self._decide = decide

    def decide_now(self, dest: Destination) -> Decision | None:
        return None

    async def decide(self, dest: Destination) -> Decision:
        return await self._decide(dest)
