"""The control pipe from the supervisor to each worker: what both ends agree on.

A worker of `airgap-proxy run --workers N` is a re-executed process with one pipe from its
supervisor. Down it go newline-framed JSON objects: `{"stop": true}` (drain and exit) and
`{"pac": {...}}` (the PAC snapshot every worker must decide with). The supervisor forwards
messages it does not read, so it stays a generic process keeper; this module is the one
place that knows their shape. A worker stops on anything it cannot read: it never goes on
deciding with a policy it may have missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from proxy.pac_source import PacSnapshot

log = logging.getLogger("airgap.proxy")

#: The environment variable that hands a worker its end of the pipe.
CONTROL_FD_ENV = "AIRGAP_CONTROL_FD"
#: The signals that stop a worker or the supervisor (drain, then exit).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: Longest message line: a snapshot carries the script, bounded by `--pac-max-bytes`.
MAX_LINE = 16 << 20
STOP_MESSAGE = b'{"stop": true}\n'


@dataclass(frozen=True, slots=True)
class Stop:
    """The supervisor asks the worker to drain and exit."""


def snapshot_message(snapshot: PacSnapshot) -> bytes:
    """The line that puts `snapshot` in force in a worker."""
    return json.dumps({"pac": snapshot.to_json()}).encode() + b"\n"


def decode(line: bytes) -> Stop | PacSnapshot | None:
    """One line (without its newline) -> what it says; None for a message with nothing for
    this worker. ValueError when it is not a control message at all."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    if message.get("stop"):
        return Stop()
    pac = message.get("pac")
    if pac is not None:
        if not isinstance(pac, dict):
            raise ValueError("a PAC snapshot is a JSON object")
        return PacSnapshot.from_json(pac)
    return None


class _ControlReader(asyncio.Protocol):
    """A worker's end of the control pipe: snapshot lines in, EOF means stop."""

    def __init__(self, on_snapshot: Callable[[PacSnapshot], Awaitable[None]] | None,
                 stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:  # fmt: skip
        self.on_snapshot = on_snapshot
        self.stop = stop
        #: Set once the first snapshot is in force (the supervisor sends the current one
        #: first): the worker listens only then.
        self.ready = ready
        self.buf = bytearray()
        self.stopping = False
        #: Snapshot swaps under way (each removes itself when done: a long PAC outage
        #: publishes at every retry, and a list would grow for the life of the worker).
        self.tasks: set[asyncio.Future[None]] = set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_LINE:
            log.error("control pipe line too long; stopping")
            self.stop.set()
            return
        while (end := self.buf.find(b"\n")) >= 0:
            line, self.buf = bytes(self.buf[:end]), self.buf[end + 1 :]
            try:
                message = decode(line)
            except ValueError:
                log.error("unreadable control message; stopping")
                self.stop.set()
                return
            if isinstance(message, Stop):
                log.info("stop requested by the supervisor")
                self.stopping = True
                self.stop.set()
                return
            if message is not None and self.on_snapshot is not None:
                task = asyncio.ensure_future(self.on_snapshot(message))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                if self.ready is not None:  # swaps run in order: the first one ends first
                    task.add_done_callback(_setter(self.ready))
                    self.ready = None

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping and not self.stop.is_set():
            log.error("the supervisor is gone; stopping this worker")
            self.stop.set()


def _setter(event: asyncio.Event) -> Callable[[asyncio.Future[None]], None]:
    """A done-callback that sets `event`."""
    return lambda _task: event.set()


def control_reader(
    fd: int,
    on_snapshot: Callable[[PacSnapshot], Awaitable[None]] | None,
    ready: asyncio.Event | None = None,
) -> Callable[[asyncio.Event], Coroutine[None, None, None]]:
    """A `serve()` background job that follows the supervisor's control pipe; `ready` is
    set when the first snapshot it brought is in force (`serve()` listens only then)."""

    async def follow(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        reader = _ControlReader(on_snapshot, stop, ready)
        transport, _ = await loop.connect_read_pipe(lambda: reader, os.fdopen(fd, "rb"))
        try:
            await stop.wait()
        finally:
            transport.close()

    return follow


# ------------------------------------------------------------------ the report pipe
#
# Up from each worker to the supervisor goes a second pipe, of newline-framed JSON objects
# with one key naming the kind (`{"report": {...}}`: the worker's state and totals). Each
# kind has its own encoder here and its handler in the supervisor, found by that key; a line
# of a kind the supervisor has no handler for is ignored, and an unreadable one ends that
# pipe (the supervisor keeps the worker's last report, and restarts it as usual if it dies).

#: The environment variable that hands a worker the write end of its report pipe.
REPORT_FD_ENV = "AIRGAP_REPORT_FD"
#: Longest upward line read (a report is at most PIPE_BUF bytes; this is generous).
MAX_REPORT_LINE = 64 << 10


def report_message(body: dict[str, object]) -> bytes:
    """The line that carries a worker's report (`proxy.worker_report`)."""
    return json.dumps({"report": body}, separators=(",", ":")).encode() + b"\n"


def decode_up(line: bytes) -> tuple[str, dict[str, object]]:
    """One upward line -> (kind, body); ValueError when it is not one."""
    message = json.loads(line)
    if not isinstance(message, dict) or len(message) != 1:
        raise ValueError("an upward message is a JSON object with one key")
    ((kind, body),) = message.items()
    if not isinstance(body, dict):
        raise ValueError(f"the body of a {kind!r} message is a JSON object")
    return kind, body


class UpwardReader(asyncio.Protocol):
    """The supervisor's end of one worker's report pipe: lines to `on_message`."""

    def __init__(self, on_message: Callable[[str, dict[str, object]], None]) -> None:
        self.on_message = on_message
        self.buf = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\n")) >= 0:
            line, self.buf = bytes(self.buf[:end]), self.buf[end + 1 :]
            try:
                kind, body = decode_up(line)
            except ValueError:
                log.error("unreadable report from a worker; no longer reading its reports")
                self.close()
                return
            self.on_message(kind, body)
        if len(self.buf) > MAX_REPORT_LINE:
            log.error("report line from a worker too long; no longer reading its reports")
            self.close()

    def close(self) -> None:
        self.buf.clear()
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
