"""Waiting for a state, bounded: the tests' only way to wait for something to happen.

A test never sleeps hoping that something happened meanwhile (a loaded machine makes that
hope wrong in either direction). It waits for the state it needs: an event, a future, or,
when the state is only observable by looking, a poll at a short interval with a deadline
that fails with a message saying what did not happen.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

#: Long enough for a loaded 2-core machine, short enough that a real hang fails quickly.
DEFAULT_TIMEOUT = 10.0
_INTERVAL = 0.005


async def until(
    condition: Callable[[], object], what: str, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Return once `condition()` is true (checked every few ms on the running loop); raise
    AssertionError naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(_INTERVAL)


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """`until` for a thread that has no event loop of its own (blocking tests)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_INTERVAL)


async def loop_has_polled() -> None:
    """Return once the running loop has polled for I/O after this call: whatever was ready
    to read before (bytes a test sent to a protocol) has been delivered by then. A test
    asserting that something did *not* happen (a read that must stay paused) waits for this
    instead of sleeping: one byte through a socket pair, read by the loop."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.setblocking(False)
        right.send(b".")
        await asyncio.wait_for(loop.sock_recv(left, 1), DEFAULT_TIMEOUT)
