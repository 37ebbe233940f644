"""A worker's report: its state and totals, built from its context, and the job that sends
it up the report pipe (about once a second, at once when its PAC state changes, and a last
time when it stops), so the supervisor's admin endpoint never asks the worker anything.

A report line is at most `PIPE_BUF` bytes and written with one non-blocking `write`, which
a pipe makes all or nothing: the line never blocks the worker, never arrives in pieces, and
never interleaves with another writer's line on the same pipe. When the pipe is full the
line is dropped; the next one carries the same totals and more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from collections.abc import Callable, Coroutine
from typing import Any

from proxy import control
from proxy.connection import ProxyContext
from proxy.metrics import METRICS, ProcessMetrics
from proxy.pac_decider import PacDecider

log = logging.getLogger("airgap.proxy")

#: Seconds between reports: how stale a scrape may be.
INTERVAL = 1.0
#: The longest line one write puts into a pipe whole (4096 on Linux).
MAX_LINE = select.PIPE_BUF
#: Most bad proxies and characters of a PAC error a report carries (keeps it under MAX_LINE).
MAX_BAD_PROXIES = 8
MAX_ERROR = 300


def pac_state(decider: PacDecider | None) -> dict[str, Any] | None:
    """The script this worker decides with (no text: only its digest and state)."""
    if decider is None:
        return None
    snap = decider.snapshot
    return {
        "in_force": decider.in_force,
        "sha256": snap.sha256 if decider.in_force else None,
        "stale": snap.stale,
        "error": snap.error[:MAX_ERROR] if snap.error else None,
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
        "bad_proxies": ctx.bad_proxies.listing()[:MAX_BAD_PROXIES],
    }


def line(body: dict[str, Any]) -> bytes:
    """The report line, at most MAX_LINE bytes (the bad-proxy list goes first if need be)."""
    out = control.report_message(body)
    if len(out) > MAX_LINE:
        out = control.report_message({**body, "bad_proxies": []})
    return out


class Reporter:
    """Sends reports up one pipe; `nudge()` asks for one now (a PAC state change)."""

    def __init__(self, fd: int, decider: Callable[[], PacDecider | None]) -> None:
        os.set_inheritable(fd, False)  # PAC engine processes must not hold the pipe open
        os.set_blocking(fd, False)
        self.fd = fd
        self.decider = decider
        self.wake = asyncio.Event()
        self.dropped = 0

    def nudge(self) -> None:
        self.wake.set()

    def send(self, data: bytes) -> bool:
        """One whole line up the pipe, or nothing (full: dropped; closed: False)."""
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            self.dropped += 1
        except OSError:
            return False  # the supervisor is gone: the control pipe stops this worker
        return True

    def job(self, ctx: ProxyContext) -> Callable[[asyncio.Event], Coroutine[None, None, None]]:
        """A `serve()` job, started once the listeners are open."""

        async def run(_stop: asyncio.Event) -> None:
            try:
                while self.send(line(build(ctx, self.decider()))):
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), INTERVAL)
            finally:
                # The last totals, after the drain: a graceful stop loses no count.
                self.send(line(build(ctx, self.decider())))
                # The descriptor stays open: bad-proxy notes share it (`control.ReportWriter`),
                # and the process's exit closes it, which ends the supervisor's read.

        return run
