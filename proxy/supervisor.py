"""The supervisor of N worker processes behind SO_REUSEPORT listeners.

Each worker is a fresh `airgap-proxy run ... --workers 1` process (a re-exec, not a fork, so
no event loop or lock is inherited) with one control pipe from the supervisor. The kernel
spreads new connections over the workers' sockets, so every core relays.

The supervisor owns what must be one for all workers: it reads and validates the policy file
(and reloads it) once and sends every worker the same text; with a PAC, it downloads and
validates the script once and sends every worker the same snapshot, so all of them decide
with the same policy (a restarted worker gets the current one at once, before it listens).
Up a second pipe each worker reports its state and counts (`proxy.worker_report`), which
the supervisor keeps in a `proxy.fleet.Fleet` for the admin endpoint, folding a dead
worker's last totals into the sum before it is restarted, and what the others should know
(a proxy it found dead), which the supervisor relays to all. On SIGTERM/SIGINT it tells
every worker to stop over the pipe (each then drains its own relays), restarts a worker that
died on its own or could not be started (after a pause, so a crash loop cannot spin), and
exits when all stopped.
A worker whose control pipe closes (the supervisor is gone) stops: nothing keeps deciding
with a frozen policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Protocol

from proxy.control import (
    CONTROL_FD_ENV,
    REPORT_FD_ENV,
    STOP_MESSAGE,
    STOP_SIGNALS,
    UpwardReader,
)
from proxy.fleet import Fleet
from proxy.metrics import METRICS

log = logging.getLogger("airgap.proxy")

RESTART_PAUSE = 1.0


class Broadcast(Protocol):
    """Sends one message line to every worker. With a `key`, the line is also the latest of
    its kind, which each worker started later gets first (in the order the keys were first
    used); `key=None` sends it to the workers running now only."""

    async def __call__(self, line: bytes, key: str | None = "default") -> None: ...


#: Runs beside the workers, broadcasting what they must all be told.
Feed = Callable[[Broadcast], Coroutine[None, None, None]]
#: A handler of one kind of upward message (`proxy.control.decode_up`): its JSON body.
UpHandler = Callable[[dict[str, object]], None]
#: How long a worker's last reports may take to arrive after it exited.
REPORT_FLUSH = 2.0


class _Worker:
    __slots__ = ("index", "pipe", "proc", "reports")

    def __init__(self, index: int, proc: asyncio.subprocess.Process, pipe: asyncio.WriteTransport,
                 reports: UpwardReader) -> None:  # fmt: skip
        self.index = index
        self.proc = proc
        self.pipe = pipe
        self.reports = reports


async def supervise(
    count: int,
    worker_argv: Sequence[str],
    feed: Feed | None,
    drain_timeout: float,
    first_message: bytes | None = None,
    *,
    first_messages: Sequence[tuple[str, bytes]] = (),
    greeting: Callable[[], Iterable[bytes]] | None = None,
    fleet: Fleet | None = None,
    up_handlers: dict[str, UpHandler] | None = None,
) -> int:
    """Run `count` workers until a stop signal; returns the worst worker exit status.

    `feed` runs beside the workers and broadcasts message lines (`proxy.control`); a newly
    started worker first gets the latest line of each key (`first_messages`, then
    `first_message` under the default key, before any broadcast), then `greeting()`'s.
    Up each worker's report pipe come `{"report": ...}` lines, kept in `fleet` (told of
    every start, report and exit: the admin endpoint reads it), and the kinds of
    `up_handlers` (a bad-proxy note).
    """
    if fleet is None:
        fleet = Fleet(count, uses_pac=False, own=METRICS)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    latest: dict[str, bytes] = dict(first_messages)
    if first_message is not None:
        latest["default"] = first_message
    workers: dict[int, _Worker] = {}

    async def spawn(index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        report_read, report_write = os.pipe()
        env = {**os.environ, CONTROL_FD_ENV: str(read_fd), REPORT_FD_ENV: str(report_write)}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "proxy.cli",
                *worker_argv,
                pass_fds=(read_fd, report_write),
                env=env,
            )
        except BaseException:
            os.close(write_fd)
            os.close(report_read)
            raise
        finally:
            os.close(read_fd)
            os.close(report_write)
        pid = proc.pid
        fleet.started(index, pid)
        handlers: dict[str, UpHandler] = {
            **(up_handlers or {}),
            "report": lambda body: fleet.reported(index, pid, body),
        }

        def on_message(kind: str, body: dict[str, object]) -> None:
            handler = handlers.get(kind)
            if handler is not None:
                try:
                    handler(body)
                except Exception:
                    log.exception("%s message from worker %d failed", kind, index)

        reports = UpwardReader(on_message)
        await loop.connect_read_pipe(lambda: reports, os.fdopen(report_read, "rb"))
        pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_fd, "wb"))
        worker = _Worker(index, proc, pipe, reports)
        for line in latest.values():
            pipe.write(line)
        if greeting is not None:
            for line in greeting():
                pipe.write(line)
        return worker

    async def broadcast(line: bytes, key: str | None = "default") -> None:
        if key is not None:
            latest[key] = line
        for worker in workers.values():
            if not worker.pipe.is_closing():
                worker.pipe.write(line)

    async def keep(index: int) -> int:
        """Keep worker `index` running until the stop; returns its last exit status."""
        while True:
            try:
                worker = await spawn(index)
            except OSError as exc:  # no process or descriptor to be had: try again later
                log.error("worker %d could not be started (%s); trying again", index, exc)
                try:
                    await asyncio.wait_for(stop.wait(), RESTART_PAUSE)
                    return 1
                except TimeoutError:
                    continue
            workers[index] = worker
            if stop.is_set():  # the stop came while it was being spawned
                worker.pipe.write(STOP_MESSAGE)
                worker.pipe.close()
            code = await worker.proc.wait()
            worker.pipe.close()
            # Its last report (written as it stopped) may still be in the pipe.
            try:
                await asyncio.wait_for(asyncio.shield(worker.reports.closed), REPORT_FLUSH)
            except TimeoutError:
                worker.reports.close()
            fleet.exited(index, worker.proc.pid)
            if stop.is_set():
                return code
            (fleet.own or METRICS).inc("airgap_worker_restarts")
            log.error("worker %d exited with %d; restarting it", index, code)
            try:
                await asyncio.wait_for(stop.wait(), RESTART_PAUSE)
                return code
            except TimeoutError:
                continue

    keepers = [loop.create_task(keep(i)) for i in range(count)]
    feeder = loop.create_task(feed(broadcast)) if feed else None
    await stop.wait()
    fleet.draining = True
    if feeder is not None:
        feeder.cancel()
    # Stop by message, not by signal: a worker still starting up would die of a SIGTERM
    # (libuv resets a child's signal mask), while the message waits in its pipe until its
    # loop reads it, and then it drains like any other stop.
    for worker in workers.values():
        if not worker.pipe.is_closing():
            worker.pipe.write(STOP_MESSAGE)
            worker.pipe.close()
    await asyncio.wait(keepers, timeout=drain_timeout + 10)
    for worker in workers.values():
        if worker.proc.returncode is None:
            log.error("worker %d did not stop; killing it", worker.index)
            worker.proc.kill()
    codes = await asyncio.gather(*keepers)
    if feeder is not None:
        await asyncio.gather(feeder, return_exceptions=True)
    return max((c if c >= 0 else 1) for c in codes) if codes else 0
