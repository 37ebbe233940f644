"""The control pipe from the supervisor to each worker: what both ends agree on.

A worker of `airgap-proxy run --workers N` is a re-executed process with one pipe from its
supervisor. Down it go newline-framed JSON objects: `{"stop": true}` (drain and exit),
`{"config": {...}}` (the validated policy text every worker must decide with: a worker never
reads the file itself), `{"pac": {...}}` (the PAC snapshot), `{"bad_proxy": {...}}` (a proxy
some worker could not use) and `{"reopen_audit": true}`. Up a second pipe, the report pipe,
a worker sends its own bad-proxy notes, which the supervisor relays to all. The supervisor forwards
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


#: The policy slots a worker decides with: the one enforced, and the shadow beside it.
MAIN = "main"
SHADOW = "shadow"
SLOTS = (MAIN, SHADOW)


@dataclass(frozen=True, slots=True)
class PacUpdate:
    """The PAC snapshot of one slot's policy."""

    slot: str
    snapshot: PacSnapshot


def snapshot_message(snapshot: PacSnapshot, slot: str = MAIN) -> bytes:
    """The line that puts `snapshot` in force in a worker (for `slot`'s policy)."""
    message: dict[str, object] = {"pac": snapshot.to_json()}
    if slot != MAIN:
        message["slot"] = slot
    return json.dumps(message).encode() + b"\n"


def _decode_pac(message: dict[str, object]) -> PacUpdate:
    pac = message["pac"]
    if not isinstance(pac, dict):
        raise ValueError("a PAC snapshot is a JSON object")
    return PacUpdate(_slot(message), PacSnapshot.from_json(pac))


def _slot(message: dict[str, object]) -> str:
    slot = message.get("slot", MAIN)
    if slot not in SLOTS:
        raise ValueError(f"unknown policy slot {slot!r}")
    return str(slot)


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """A new policy file for one slot: the validated text, where it came from, its sha256.
    The worker parses it again (pure, so the same), never reads the file itself."""

    slot: str
    text: str
    source: str
    sha256: str


def config_message(slot: str, text: str, source: str, sha256: str) -> bytes:
    """The line that puts a policy file's text in force in a worker."""
    body = {"slot": slot, "text": text, "source": source, "sha256": sha256}
    return json.dumps({"config": body}).encode() + b"\n"


def _decode_config(message: dict[str, object]) -> ConfigUpdate:
    body = message["config"]
    if not isinstance(body, dict):
        raise ValueError("a config message is a JSON object")
    text, source, sha256 = body.get("text"), body.get("source"), body.get("sha256")
    if not (isinstance(text, str) and isinstance(source, str) and isinstance(sha256, str)):
        raise ValueError("a config message has text, source and sha256 strings")
    return ConfigUpdate(_slot(body), text, source, sha256)


@dataclass(frozen=True, slots=True)
class BadProxyNote:
    """A proxy one worker could not use (`ttl` > 0: tried last for that many more seconds)
    or could use again (`ttl` 0). Sent up by the worker, relayed down to every worker."""

    kind: str
    host: str
    port: int
    ttl: float


def bad_proxy_message(kind: str, host: str, port: int, ttl: float) -> bytes:
    body = {"kind": kind, "host": host, "port": port, "ttl": round(ttl, 3)}
    return json.dumps({"bad_proxy": body}).encode() + b"\n"


def _decode_bad_proxy(message: dict[str, object]) -> BadProxyNote:
    body = message["bad_proxy"]
    if not isinstance(body, dict):
        raise ValueError("a bad-proxy note is a JSON object")
    kind, host, port, ttl = body.get("kind"), body.get("host"), body.get("port"), body.get("ttl")
    if not (isinstance(kind, str) and isinstance(host, str) and isinstance(port, int)):
        raise ValueError("a bad-proxy note has kind, host and port")
    if isinstance(port, bool) or not 0 < port < 65536 or len(host) > 255 or len(kind) > 16:
        raise ValueError("a bad-proxy note names no proxy")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 <= ttl < 86400 * 366:
        raise ValueError("a bad-proxy note has a ttl of seconds")
    return BadProxyNote(kind, host, port, float(ttl))


@dataclass(frozen=True, slots=True)
class ReopenAudit:
    """Reopen the `--audit-log` file (logrotate moved it away)."""


REOPEN_AUDIT_MESSAGE = b'{"reopen_audit": true}\n'


def _decode_reopen(message: dict[str, object]) -> ReopenAudit:
    return ReopenAudit()


Message = Stop | PacUpdate | ConfigUpdate | BadProxyNote | ReopenAudit

#: The key that names a message's kind -> its decoder. A kind this worker does not know is
#: ignored (None), so a supervisor can add kinds without breaking older decoders.
_DECODERS: dict[str, Callable[[dict[str, object]], Message]] = {
    "stop": lambda _m: Stop(),
    "pac": _decode_pac,
    "config": _decode_config,
    "bad_proxy": _decode_bad_proxy,
    "reopen_audit": _decode_reopen,
}


def decode(line: bytes) -> Message | None:
    """One line (without its newline) -> what it says; None for a message with nothing for
    this worker. ValueError when it is not a control message at all."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    for key, decoder in _DECODERS.items():
        if message.get(key) is not None and message.get(key) is not False:
            return decoder(message)
    return None


Handler = Callable[[Message], Awaitable[None]]


class _ControlReader(asyncio.Protocol):
    """A worker's end of the control pipe: message lines in, EOF means stop.

    Messages are handled one after the other, in the order they were sent (a config and the
    PAC snapshot that follows it must not swap places); a stop is taken at once.
    """

    def __init__(self, handler: Handler | None, stop: asyncio.Event) -> None:
        self.handler = handler
        self.stop = stop
        self.buf = bytearray()
        self.stopping = False
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.consumer: asyncio.Task[None] | None = None

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
            if message is not None and self.handler is not None:
                self.queue.put_nowait(message)
                if self.consumer is None:
                    self.consumer = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        assert self.handler is not None
        while True:
            message = await self.queue.get()
            try:
                await self.handler(message)
            except Exception:  # a message that cannot be applied must not stop the others
                log.exception("control message failed")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping and not self.stop.is_set():
            log.error("the supervisor is gone; stopping this worker")
            self.stop.set()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.cancel()


class ControlChannel:
    """A worker's control pipe, opened before it serves: the worker needs the policy in
    force (the first message) before it listens, and a stop may come before that too."""

    def __init__(self, fd: int, handler: Handler) -> None:
        self.fd = fd
        self.ended = asyncio.Event()
        self.reader = _ControlReader(handler, self.ended)
        self.transport: asyncio.BaseTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.connect_read_pipe(
            lambda: self.reader, os.fdopen(self.fd, "rb")
        )

    def job(self) -> Callable[[asyncio.Event], Coroutine[None, None, None]]:
        """A `serve()` background job: the pipe's end (a stop, EOF) stops the worker."""

        async def follow(stop: asyncio.Event) -> None:
            try:
                await self.ended.wait()
                stop.set()
            finally:
                self.close()

        return follow

    def close(self) -> None:
        self.reader.close()
        if self.transport is not None:
            self.transport.close()


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


class ReportWriter:
    """A worker's end of the report pipe for bad-proxy notes (`{"bad_proxy": {...}}`
    lines, beside `proxy.worker_report`'s reports on the same pipe: each line is one write
    of at most PIPE_BUF bytes, so the two never interleave inside a line); never blocking
    the worker (a full pipe drops the line: a note is an optimisation, never a decision)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, line: bytes) -> None:
        try:
            os.write(self.fd, line)
        except BlockingIOError:
            log.debug("report pipe full; a bad-proxy note was not shared")
        except OSError:
            pass  # the supervisor is gone: the control pipe stops this worker


def bad_proxy_note(body: dict[str, object]) -> BadProxyNote:
    """The note of an upward `{"bad_proxy": body}` line (ValueError when it is not one)."""
    return _decode_bad_proxy({"bad_proxy": body})
