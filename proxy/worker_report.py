"""A worker's report: its state and totals, built from its context, and the job that sends
it up the report pipe (about once a second, at once when its PAC state changes, and a last
time when it stops), so the supervisor's admin endpoint never asks the worker anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from proxy import control
from proxy.connection import ProxyContext
from proxy.metrics import METRICS, ProcessMetrics
from proxy.pac_decider import PacDecider

log = logging.getLogger("airgap.proxy")

#: Seconds between reports: how stale a scrape may be.
INTERVAL = 1.0


def pac_state(decider: PacDecider | None) -> dict[str, Any] | None:
    """The script this worker decides with (no text: only its digest and state)."""
    if decider is None:
        return None
    snap = decider.snapshot
    return {
        "in_force": decider.in_force,
        "sha256": snap.sha256 if decider.in_force else None,
        "stale": snap.stale,
        "error": snap.error,
    }


def build(
    ctx: ProxyContext, decider: PacDecider | None, metrics: ProcessMetrics = METRICS
) -> dict[str, Any]:
    """The report body of this worker now."""
    return {
        "pid": os.getpid(),
        "listening": True,
        "pac": pac_state(decider),
        "active": {"transparent": len(ctx.active)},
        "totals": metrics.snapshot(ctx.in_flight()).to_json(),
        "bad_proxies": ctx.bad_proxies.listing(),
    }


class Reporter:
    """Sends reports up one pipe; `nudge()` asks for one now (a PAC state change)."""

    def __init__(self, fd: int, decider: PacDecider | None) -> None:
        os.set_inheritable(fd, False)  # PAC engine processes must not hold the pipe open
        self.fd = fd
        self.decider = decider
        self.wake = asyncio.Event()

    def nudge(self) -> None:
        self.wake.set()

    def job(self, ctx: ProxyContext) -> Callable[[asyncio.Event], Coroutine[None, None, None]]:
        """A `serve()` job, started once the listeners are open."""

        async def run(_stop: asyncio.Event) -> None:
            loop = asyncio.get_running_loop()
            pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(self.fd, "wb"))
            try:
                while not pipe.is_closing():
                    pipe.write(control.report_message(build(ctx, self.decider)))
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), INTERVAL)
            finally:
                # The last totals, after the drain: a graceful stop loses no count.
                if not pipe.is_closing():
                    pipe.write(control.report_message(build(ctx, self.decider)))
                pipe.close()

        return run
