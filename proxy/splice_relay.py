"""The `--splice` relay: bytes move socket → pipe → socket inside the kernel (`os.splice`).

Why: the default relay (`proxy.relay`) is at the floor of a Python relay for bulk data —
most of its CPU is the kernel copying each chunk into a Python `bytes` and back out. With
`splice(2)` the payload never enters user space: per wake-up the proxy makes two system calls
and adds an integer, however much data moved.

How it fits the proxy:

* It starts only after the peek and the decision, from `Intercepted._start_relay`. The bytes
  already read by then (the sniffed client bytes, and what an upstream sent past its
  handshake) are written first, in order, before any spliced byte.
* uvloop owns the descriptors of its transports and refuses `add_reader` on them. So each
  socket is duplicated (`os.dup`), the transport gets an inert protocol and is aborted. That
  closes only uvloop's descriptor: libuv removes it from epoll, then `close(2)`s it, and the
  socket lives on in our duplicate. Neither `close` nor `abort` calls `shutdown(2)` (uvloop
  0.23 `UVStream._close`, libuv `uv__stream_close`), so the peer sees no FIN or RST then.
* Each direction owns one non-blocking pipe of bounded size: that pipe *is* the buffer. The
  source is read only when the pipe is empty, so a reader that does not read stops us reading
  from the writer (backpressure), and the proxy never holds more than one pipe per direction.
* At any time a direction waits on exactly one event: its source readable, or its destination
  writable. A destination that cannot take more parks the direction on the writer callback,
  never in a retry loop, and one wake-up does at most `ROUNDS` transfers so a busy connection
  cannot starve the others.
* EOF on one side is passed on with `shutdown(SHUT_WR)` once the pipe is drained, while the
  other direction keeps flowing. Any error on either side closes both sockets at once.
* The owner (`Intercepted`) sees what it sees with the default relay: two halves with
  `nbytes` (audit line, idle sweep) and a `transport` whose `abort()` cuts the connection
  (idle timeout, drain timeout), and `half_lost` once per half when it is over.

Cost: two sockets and two pipes (four descriptors) per connection, six in all instead of
two, so `--max-connections` shrinks (`proxy.cli.default_max_connections`). When a connection
cannot be spliced (a TLS upstream, whose bytes must pass through Python; a transport already
closing; no descriptors left) `take_over` returns None and the default relay is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import sys
from typing import Protocol

log = logging.getLogger("airgap.proxy")

#: Bytes one pipe may hold: one direction's buffer (uvloop also reads 256 KiB at a time).
PIPE_SIZE = 256 * 1024
#: Descriptors a spliced connection holds: two sockets, and a pipe (two ends) per direction.
FDS_PER_CONNECTION = 6
#: Transfers per wake-up before the event loop gets its turn again (fairness).
ROUNDS = 8

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

# What a direction waits for.
_IDLE, _READ, _WRITE, _DONE = range(4)


class SpliceOwner(Protocol):
    """Who is told when the relay is over (the connection, for its audit line)."""

    def half_lost(self, half: SpliceHalf, exc: Exception | None) -> None: ...


def unavailable() -> str | None:
    """Why `--splice` cannot work here, or None. Checked at start-up, so a missing or
    forbidden (seccomp) `splice(2)` is an error then, not at the first connection."""
    if not sys.platform.startswith("linux") or not hasattr(os, "splice"):
        return f"os.splice is not available here ({sys.platform}, Python {sys.version.split()[0]})"
    try:
        left, right = socket.socketpair()
        with left, right:
            read_end, write_end = os.pipe()
            try:
                left.sendall(b"x")
                if os.splice(right.fileno(), write_end, 1, flags=_FLAGS) != 1:
                    return "splice(2) moved no byte in the start-up probe"
            finally:
                os.close(read_end)
                os.close(write_end)
    except OSError as exc:
        return f"splice(2) fails here: {exc}"
    return None


class _Inert(asyncio.Protocol):
    """Protocol of a transport whose socket the splice relay took: nothing may arrive."""

    def data_received(self, data: bytes) -> None:  # pragma: no cover - guarded by abort()
        log.error("splice relay: %d bytes reached a handed-over transport", len(data))

    def eof_received(self) -> bool:
        return False


class Endpoint:
    """The transport-like face the owner uses: `abort()`/`close()` cut the whole relay."""

    __slots__ = ("relay",)

    def __init__(self, relay: SpliceRelay) -> None:
        self.relay = relay

    def abort(self) -> None:
        self.relay.close(None)

    def close(self) -> None:
        # Only the owner calls this, after a half was lost, i.e. when the relay is already
        # closed; there is nothing buffered in Python to flush.
        self.relay.close(None)

    def is_closing(self) -> bool:
        return self.relay.closed


class SpliceHalf:
    """One direction: `src` → pipe → `dst`, after `head` (bytes read before the hand-over)."""

    __slots__ = (
        "dst",
        "dst_sock",
        "eof",
        "head",
        "loop",
        "nbytes",
        "peer",
        "pending",
        "pipe_r",
        "pipe_w",
        "relay",
        "src",
        "state",
        "transport",
    )

    def __init__(
        self,
        relay: SpliceRelay,
        src: socket.socket,
        dst: socket.socket,
        pipe: tuple[int, int],
        head: bytes,
    ) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.transport = relay.endpoint
        self.peer: SpliceHalf = self  # set by SpliceRelay
        self.src, self.dst, self.dst_sock = src.fileno(), dst.fileno(), dst
        self.eof = False
        self.pipe_r, self.pipe_w = pipe
        self.head = memoryview(head) if head else None
        self.nbytes = len(head)  # as the default relay counts the sniffed bytes
        self.pending = 0  # bytes in the pipe
        self.state = _IDLE

    def pump(self) -> None:
        """Move what can be moved now, then wait for the one event that unblocks us."""
        if self.relay.closed:  # a callback queued in the same loop turn as the close
            return
        try:
            state = self._transfer()
            self._wait(state)
        except OSError as exc:  # a reset, a broken pipe, ...: the connection is over
            self.relay.close(exc)
            return
        except Exception as exc:  # a bug must cut this connection, not hang or spin it
            log.exception("splice relay failed")
            self.relay.close(exc)
            return
        if state == _DONE:
            self.relay.half_done()

    def _transfer(self) -> int:
        """Up to ROUNDS read/write steps; returns what to wait for next."""
        for _ in range(ROUNDS):
            if self.head is not None and not self._write_head():
                return _WRITE
            if self.pending and not self._drain_pipe():
                return _WRITE
            if self.eof:  # everything before the EOF is written: pass the EOF on
                self.dst_sock.shutdown(socket.SHUT_WR)
                return _DONE
            try:
                n = os.splice(self.src, self.pipe_w, PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                return _READ
            if n == 0:
                self.eof = True
            else:
                self.nbytes += n
                self.pending += n
        return _WRITE if self.pending or self.head is not None else _READ

    def _write_head(self) -> bool:
        """Write the pre-read bytes; False when the destination cannot take more now."""
        head = self.head
        assert head is not None
        try:
            n = os.write(self.dst, head)
        except BlockingIOError:
            return False
        self.head = head[n:] if n < len(head) else None
        return self.head is None

    def _drain_pipe(self) -> bool:
        """Splice the pipe's bytes out; False when the destination cannot take more now."""
        try:
            n = os.splice(self.pipe_r, self.dst, self.pending, flags=_FLAGS)
        except BlockingIOError:
            return False
        if n <= 0:  # the pipe claims to be empty while we count bytes in it: never spin
            raise OSError("splice relay: pipe out of step")
        self.pending -= n
        return self.pending == 0

    def _wait(self, state: int) -> None:
        """Arm the one callback `state` needs (only on a change: re-arming costs)."""
        if state == self.state:
            return
        loop = self.loop
        if self.state == _READ:
            loop.remove_reader(self.src)
        elif self.state == _WRITE:
            loop.remove_writer(self.dst)
        self.state = state
        if state == _READ:
            loop.add_reader(self.src, self.pump)
        elif state == _WRITE:
            loop.add_writer(self.dst, self.pump)


class SpliceRelay:
    """Owns both sockets (duplicates) and both pipes of one connection; closes each once."""

    __slots__ = ("closed", "endpoint", "halves", "loop", "owner", "pipes", "socks")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        socks: tuple[socket.socket, socket.socket],
        pipes: tuple[tuple[int, int], tuple[int, int]],
        heads: tuple[bytes, bytes],
        owner: SpliceOwner,
    ) -> None:
        self.loop = loop
        self.owner = owner
        self.socks = socks
        self.pipes = pipes
        self.closed = False
        self.endpoint = Endpoint(self)
        client, upstream = socks
        up = SpliceHalf(self, client, upstream, pipes[0], heads[0])
        down = SpliceHalf(self, upstream, client, pipes[1], heads[1])
        up.peer, down.peer = down, up
        self.halves = (up, down)

    def start(self) -> None:
        for half in self.halves:
            half.pump()
            if self.closed:
                return

    def half_done(self) -> None:
        if all(half.state == _DONE for half in self.halves):
            self.close(None)

    def close(self, exc: Exception | None) -> None:
        """Stop every callback, close every descriptor exactly once, then tell the owner."""
        if self.closed:
            return
        self.closed = True
        for half in self.halves:
            # Callbacks go before their descriptors, or the loop would poll a closed fd.
            with contextlib.suppress(Exception):
                half._wait(_IDLE)
            half.state = _DONE
        for read_end, write_end in self.pipes:
            os.close(read_end)
            os.close(write_end)
        for sock in self.socks:
            sock.close()
        self.loop.call_soon(self._report, exc)

    def _report(self, exc: Exception | None) -> None:
        for half in self.halves:
            self.owner.half_lost(half, exc)


def _socket_of(transport: asyncio.Transport) -> socket.socket | None:
    """A duplicate of a plain TCP transport's socket, or None when it cannot be spliced."""
    if transport.is_closing() or transport.get_write_buffer_size():
        return None
    if transport.get_extra_info("ssl_object") is not None:
        return None  # TLS: the bytes on the socket are not the bytes to relay
    pseudo = transport.get_extra_info("socket")
    if pseudo is None or pseudo.type != socket.SOCK_STREAM:
        return None
    fd = os.dup(pseudo.fileno())
    try:
        sock = socket.socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    sock.setblocking(False)
    return sock


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # over the per-user pipe quota: a smaller pipe works
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


def take_over(
    client: asyncio.Transport,
    upstream: asyncio.Transport,
    client_head: bytes,
    upstream_head: bytes,
    owner: SpliceOwner,
) -> tuple[SpliceHalf, SpliceHalf] | None:
    """Take both sockets from their transports and splice between them.

    Returns the halves (client → upstream, upstream → client), or None when the connection
    cannot be spliced; then nothing was changed and the caller uses the default relay.
    """
    socks: list[socket.socket] = []
    pipes: list[tuple[int, int]] = []
    try:
        for transport in (client, upstream):
            sock = _socket_of(transport)
            if sock is None:
                raise LookupError
            socks.append(sock)
        for _ in range(2):  # one at a time: a second that fails must not leak the first
            pipes.append(_pipe())
    except (OSError, LookupError) as exc:  # e.g. EMFILE: the default relay needs no more fds
        if isinstance(exc, OSError):
            log.warning("splice relay unavailable for one connection: %s", exc)
        for sock in socks:
            sock.close()
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)
        return None
    for transport in (client, upstream):
        transport.set_protocol(_Inert())
        transport.abort()  # closes uvloop's descriptor only; ours keeps the socket open
    relay = SpliceRelay(
        asyncio.get_running_loop(),
        (socks[0], socks[1]),
        (pipes[0], pipes[1]),
        (client_head, upstream_head),
        owner,
    )
    relay.start()
    return relay.halves
