"""The supervisor of N worker processes behind SO_REUSEPORT listeners.

Each worker is a fresh `airgap-proxy run ... --workers 1` process (a re-exec, not a fork, so
no event loop or lock is inherited) with one control pipe from the supervisor. The kernel
spreads new connections over the workers' sockets, so every core relays.

The supervisor owns what must be one for all workers: with a PAC, it downloads and validates
the script once and sends every worker the same snapshot, so all of them decide with the
same script (a restarted worker gets the current one at once). On SIGTERM/SIGINT it tells
every worker to stop over the pipe (each then drains its own relays), restarts a worker that
died on its own or could not be started (after a pause, so a crash loop cannot spin), and
exits when all stopped.
A worker whose control pipe closes (the supervisor is gone) stops: nothing keeps deciding
with a frozen policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from proxy.pac_source import PacSnapshot

log = logging.getLogger("airgap.proxy")

CONTROL_FD_ENV = "AIRGAP_CONTROL_FD"
RESTART_PAUSE = 1.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
MAX_CONTROL_LINE = 16 << 20
STOP_LINE = b'{"stop": true}\n'


class _Worker:
    __slots__ = ("index", "pipe", "proc")

    def __init__(self, index: int, proc: asyncio.subprocess.Process, pipe: asyncio.WriteTransport):
        self.index = index
        self.proc = proc
        self.pipe = pipe


def _line(snapshot: PacSnapshot | None) -> bytes:
    data = {"pac": snapshot.to_json()} if snapshot is not None else {}
    return json.dumps(data).encode() + b"\n"


async def supervise(
    count: int,
    worker_argv: Sequence[str],
    pac_feed: Callable[[Callable[[PacSnapshot], Awaitable[None]]], Awaitable[None]] | None,
    drain_timeout: float = 30.0,
) -> int:
    """Run `count` workers until a stop signal; returns the worst worker exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    snapshot: PacSnapshot | None = (
        PacSnapshot(None, error="PAC not loaded yet") if pac_feed else None
    )
    workers: dict[int, _Worker] = {}

    async def spawn(index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, CONTROL_FD_ENV: str(read_fd)}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "proxy.cli",
                *worker_argv,
                pass_fds=(read_fd,),
                env=env,
            )
        finally:
            os.close(read_fd)
        pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_fd, "wb"))
        worker = _Worker(index, proc, pipe)  # type: ignore[arg-type]
        pipe.write(_line(snapshot))
        return worker

    async def broadcast(snap: PacSnapshot) -> None:
        nonlocal snapshot
        snapshot = snap
        line = _line(snap)
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
                worker.pipe.write(STOP_LINE)
                worker.pipe.close()
            code = await worker.proc.wait()
            worker.pipe.close()
            if stop.is_set():
                return code
            log.error("worker %d exited with %d; restarting it", index, code)
            try:
                await asyncio.wait_for(stop.wait(), RESTART_PAUSE)
                return code
            except TimeoutError:
                continue

    keepers = [loop.create_task(keep(i)) for i in range(count)]
    feeder = loop.create_task(pac_feed(broadcast)) if pac_feed else None
    await stop.wait()
    if feeder is not None:
        feeder.cancel()
    # Stop by message, not by signal: a worker still starting up would die of a SIGTERM
    # (libuv resets a child's signal mask), while the message waits in its pipe until its
    # loop reads it, and then it drains like any other stop.
    for worker in workers.values():
        if not worker.pipe.is_closing():
            worker.pipe.write(STOP_LINE)
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


class _ControlReader(asyncio.Protocol):
    """A worker's end of the control pipe: snapshot lines in, EOF means stop."""

    def __init__(self, on_snapshot: Callable[[PacSnapshot], Awaitable[None]] | None,
                 stop: asyncio.Event) -> None:  # fmt: skip
        self.on_snapshot = on_snapshot
        self.stop = stop
        self.buf = bytearray()
        self.stopping = False
        #: Snapshot swaps under way (each removes itself when done: a long PAC outage
        #: publishes at every retry, and a list would grow for the life of the worker).
        self.tasks: set[asyncio.Future[None]] = set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_CONTROL_LINE:
            log.error("control pipe line too long; stopping")
            self.stop.set()
            return
        while (end := self.buf.find(b"\n")) >= 0:
            line, self.buf = bytes(self.buf[:end]), self.buf[end + 1 :]
            try:
                message = json.loads(line)
            except ValueError:
                log.error("unreadable control message; stopping")
                self.stop.set()
                return
            if message.get("stop"):
                log.info("stop requested by the supervisor")
                self.stopping = True
                self.stop.set()
                return
            if "pac" in message and self.on_snapshot is not None:
                snap = PacSnapshot.from_json(message["pac"])
                task = asyncio.ensure_future(self.on_snapshot(snap))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping and not self.stop.is_set():
            log.error("the supervisor is gone; stopping this worker")
            self.stop.set()


def control_reader(
    fd: int, on_snapshot: Callable[[PacSnapshot], Awaitable[None]] | None
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A `serve()` background job that follows the supervisor's control pipe."""

    async def follow(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        reader = _ControlReader(on_snapshot, stop)
        transport, _ = await loop.connect_read_pipe(lambda: reader, os.fdopen(fd, "rb"))
        try:
            await stop.wait()
        finally:
            transport.close()

    return follow
