"""The splice relay on real loopback TCP sockets and a real uvloop: data, half-close,
backpressure, resets, and every descriptor closed once.

The relay runs in a uvloop event loop on a background thread, exactly as in the proxy (the
transports are uvloop's, handed over by `take_over`); the test's own ends are plain blocking
sockets, so a test reads like a client and an origin talking through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import pytest
import uvloop

from proxy import splice_relay
from proxy.splice_relay import SpliceHalf
from tests.unit.waiting import wait_until


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Owner:
    """Records `half_lost` as `Intercepted` would receive it."""

    def __init__(self) -> None:
        self.lost: list[tuple[SpliceHalf, Exception | None]] = []
        self.done = threading.Event()

    def half_lost(self, half: SpliceHalf, exc: Exception | None) -> None:
        self.lost.append((half, exc))
        if len(self.lost) == 2:
            self.done.set()


@dataclass
class Link:
    """One spliced connection: `client` → proxy → `origin`, as seen by the test."""

    client: socket.socket
    origin: socket.socket
    owner: Owner
    halves: tuple[SpliceHalf, SpliceHalf]
    extra: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (self.client, self.origin, *self.extra):
            sock.close()


class Rig:
    """A uvloop loop on a thread, and a way to splice a fresh connection through it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        async def call():  # type: ignore[no-untyped-def]
            return fn(*args)

        return self.run(call())

    def splice(self, client_head: bytes = b"", upstream_head: bytes = b"", rcvbuf: int = 0) -> Link:
        listener = socket.create_server(("127.0.0.1", 0))
        owner = Owner()

        async def build() -> tuple[socket.socket, tuple[SpliceHalf, SpliceHalf] | None]:
            loop = asyncio.get_running_loop()
            accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

            class Front(asyncio.Protocol):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    accepted.set_result(transport)  # type: ignore[arg-type]

            server = await loop.create_server(Front, "127.0.0.1", 0)
            client = socket.socket()
            if rcvbuf:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            client.connect(server.sockets[0].getsockname())
            front = await accepted
            front.pause_reading()
            up, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
            up.pause_reading()
            server.close()
            halves = splice_relay.take_over(front, up, client_head, upstream_head, owner)
            return client, halves

        client, halves = self.run(build())
        origin, _ = listener.accept()
        listener.close()
        assert halves is not None
        for sock in (client, origin):
            sock.settimeout(10)
        return Link(client, origin, owner, halves)

    def descriptors_back_to(self, before: int) -> None:
        """Every descriptor closed: uvloop closes handed-over handles a loop turn or two
        later (uv_close completes asynchronously), so wait for the count, bounded."""
        wait_until(lambda: open_fds() == before, f"{open_fds()} open descriptors to be {before}")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    # libuv opens a spare /dev/null descriptor at its first listen (its EMFILE trick): one
    # connection first, so descriptor counts compare like with like.
    warm = r.splice()
    warm.client.shutdown(socket.SHUT_WR)
    warm.origin.shutdown(socket.SHUT_WR)
    assert warm.owner.done.wait(5)
    warm.close()
    yield r
    r.close()


def _writable(sock: socket.socket) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        data = sock.recv(min(1 << 20, n - got))
        assert data, f"EOF after {got} of {n} bytes"
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def test_bytes_arrive_intact_both_ways_after_the_pre_read_heads(rig: Rig) -> None:
    before = open_fds()
    link = rig.splice(client_head=b"GET / HTTP/1.1\r\n", upstream_head=b"HTTP/1.1 200 OK\r\n")
    size = 8 << 20
    up_data = os.urandom(size)
    down_data = os.urandom(size)
    received: dict[str, bytes] = {}

    def origin_side() -> None:
        sender = threading.Thread(target=link.origin.sendall, args=(down_data,))
        sender.start()
        received["up"] = recv_exactly(link.origin, 16 + size)
        sender.join()

    worker = threading.Thread(target=origin_side)
    worker.start()
    sender = threading.Thread(target=link.client.sendall, args=(up_data,))
    sender.start()
    received["down"] = recv_exactly(link.client, 17 + size)
    sender.join()
    worker.join(30)
    assert received["up"] == b"GET / HTTP/1.1\r\n" + up_data
    assert received["down"] == b"HTTP/1.1 200 OK\r\n" + down_data
    assert link.halves[0].nbytes == 16 + size
    assert link.halves[1].nbytes == 17 + size
    link.client.shutdown(socket.SHUT_WR)
    link.origin.shutdown(socket.SHUT_WR)
    assert link.owner.done.wait(5)
    assert [exc for _half, exc in link.owner.lost] == [None, None]
    link.close()
    rig.descriptors_back_to(before)


@pytest.mark.parametrize("first", ["client", "origin"])
def test_half_close_passes_on_while_the_other_way_flows(rig: Rig, first: str) -> None:
    link = rig.splice()
    ends = (link.client, link.origin)
    closer, other = ends if first == "client" else ends[::-1]
    closer.sendall(b"last words")
    closer.shutdown(socket.SHUT_WR)
    assert recv_to_eof(other) == b"last words", "the EOF is passed on after the data"
    for i in range(3):  # the other direction still works, both ways round
        other.sendall(b"reply %d" % i)
        assert recv_exactly(closer, 7) == b"reply %d" % i
    assert not link.owner.done.is_set()
    other.shutdown(socket.SHUT_WR)
    assert recv_to_eof(closer) == b""
    assert link.owner.done.wait(5)
    assert [exc for _half, exc in link.owner.lost] == [None, None]
    link.close()


def test_eof_before_the_hand_over_follows_the_head(rig: Rig) -> None:
    """A client that sent its request and EOF during the peek: both reach the origin."""
    listener = socket.create_server(("127.0.0.1", 0))
    owner = Owner()

    async def build() -> socket.socket:
        loop = asyncio.get_running_loop()
        got_eof: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Front(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def eof_received(self) -> bool:
                got_eof.set_result(self.transport)  # type: ignore[arg-type]
                return True

        server = await loop.create_server(Front, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        client.shutdown(socket.SHUT_WR)
        front = await got_eof
        up, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        server.close()
        assert splice_relay.take_over(front, up, b"request", b"", owner) is not None
        return client

    client = rig.run(build())
    origin, _ = listener.accept()
    listener.close()
    origin.settimeout(10)
    assert recv_to_eof(origin) == b"request"
    origin.sendall(b"answer")
    origin.close()
    client.settimeout(10)
    assert recv_to_eof(client) == b"answer"
    assert owner.done.wait(5)
    client.close()


def test_a_reader_that_does_not_read_stops_the_writer_without_spinning(rig: Rig) -> None:
    link = rig.splice(rcvbuf=64 * 1024)
    link.origin.setblocking(False)
    down = link.halves[1]
    chunk = b"y" * 65536
    sent = 0
    while sent < 256 << 20:
        try:
            sent += link.origin.send(chunk)
        except BlockingIOError:
            # The origin is stopped for good once the relay parked this direction on the
            # client's writability (the client never reads, so it stays parked). Else
            # wait, bounded, for the socket to take more or for the relay to park.
            if down.state == splice_relay._WRITE:
                break
            wait_until(
                lambda: _writable(link.origin) or down.state == splice_relay._WRITE,
                "the origin socket writable again, or the relay parked",
            )
    assert sent < 64 << 20, "the origin was stopped: the relay stopped reading from it"
    assert down.pending <= splice_relay.PIPE_SIZE, "at most one pipe of bytes in the proxy"
    assert down.state == splice_relay._WRITE, "parked on the client's writability"
    cpu_before = time.process_time()
    # The sleep is the measurement window, not a wait: the relay must spend no CPU in it.
    # (CPU time, not wall time: a loaded machine does not make it larger.)
    time.sleep(1.0)
    assert time.process_time() - cpu_before < 0.2, "no busy loop while the client is stuck"
    link.origin.setblocking(True)
    link.origin.shutdown(socket.SHUT_WR)
    assert len(recv_to_eof(link.client)) == sent, "everything arrives once the client reads"
    link.client.shutdown(socket.SHUT_WR)
    assert link.owner.done.wait(5)
    link.close()


@pytest.mark.parametrize("side", ["client", "origin"])
def test_a_reset_closes_both_sides_and_every_descriptor(rig: Rig, side: str) -> None:
    before = open_fds()
    link = rig.splice()
    link.client.sendall(b"hello")
    assert recv_exactly(link.origin, 5) == b"hello"
    ends = (link.client, link.origin)
    resetter, survivor = ends if side == "client" else ends[::-1]
    resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    resetter.close()
    assert link.owner.done.wait(5)
    assert any(exc is not None for _half, exc in link.owner.lost), "the reset is reported"
    with contextlib.suppress(ConnectionResetError):
        assert survivor.recv(100) == b""
    survivor.close()
    rig.descriptors_back_to(before)


def test_abort_cuts_the_connection_as_the_idle_sweep_and_drain_do(rig: Rig) -> None:
    before = open_fds()
    link = rig.splice()
    link.client.sendall(b"ping")
    assert recv_exactly(link.origin, 4) == b"ping"
    assert not link.halves[0].transport.is_closing()
    rig.call(link.halves[0].transport.abort)
    rig.call(link.halves[1].transport.abort)  # the owner aborts both halves: once is enough
    assert link.owner.done.wait(5)
    assert len(link.owner.lost) == 2
    assert link.halves[1].peer.transport.is_closing()
    assert link.client.recv(10) == b"" and link.origin.recv(10) == b""
    link.close()
    rig.descriptors_back_to(before)


def test_many_connections_leave_no_descriptor_behind(rig: Rig) -> None:
    before = open_fds()
    for i in range(50):
        link = rig.splice(client_head=b"h")
        link.client.sendall(b"%d" % i)
        assert recv_exactly(link.origin, len(b"h%d" % i)) == b"h%d" % i
        if i % 2:
            link.client.close()
            link.origin.close()
        else:
            link.client.shutdown(socket.SHUT_WR)
            link.origin.shutdown(socket.SHUT_WR)
        assert link.owner.done.wait(5)
        link.close()
    rig.descriptors_back_to(before)


def test_connections_that_cannot_be_spliced_are_left_to_the_default_relay(rig: Rig) -> None:
    before = open_fds()
    listener = socket.create_server(("127.0.0.1", 0))

    async def closing_upstream() -> object:
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        other, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        up.close()
        result = splice_relay.take_over(other, up, b"", b"", Owner())
        assert not other.is_closing(), "untouched: the default relay takes it"
        other.close()
        return result

    assert rig.run(closing_upstream()) is None
    listener.close()
    rig.descriptors_back_to(before)


@pytest.mark.parametrize("failing_pipe", [1, 2])
def test_take_over_without_descriptors_falls_back(rig: Rig, monkeypatch, failing_pipe: int) -> None:  # type: ignore[no-untyped-def]
    """No descriptor for the first or the second pipe: nothing is left open."""
    real_pipe2 = os.pipe2
    calls = 0

    def pipe_until_emfile(flags: int) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls >= failing_pipe:
            raise OSError(24, "Too many open files")
        return real_pipe2(flags)

    monkeypatch.setattr(splice_relay.os, "pipe2", pipe_until_emfile)
    before = open_fds()
    listener = socket.create_server(("127.0.0.1", 0))

    async def attempt() -> object:
        loop = asyncio.get_running_loop()
        a, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        b, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        result = splice_relay.take_over(a, b, b"", b"", Owner())
        assert not a.is_closing() and not b.is_closing()
        a.close()
        b.close()
        return result

    assert rig.run(attempt()) is None
    listener.close()
    rig.descriptors_back_to(before)


def test_checksum_of_a_large_transfer_through_a_small_pipe(rig: Rig, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Partial splices (a pipe smaller than the data) keep order and lose nothing."""
    monkeypatch.setattr(splice_relay, "PIPE_SIZE", 4096)
    link = rig.splice()
    size = 16 << 20
    data = os.urandom(size)
    sender = threading.Thread(target=lambda: (link.client.sendall(data), link.client.shutdown(1)))
    sender.start()
    got = hashlib.sha256(recv_to_eof(link.origin)).hexdigest()
    sender.join()
    assert got == hashlib.sha256(data).hexdigest()
    link.origin.shutdown(socket.SHUT_WR)
    assert link.owner.done.wait(5)
    link.close()


def test_splice_is_available_here_and_refused_clearly_elsewhere(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert splice_relay.unavailable() is None
    monkeypatch.setattr(splice_relay.sys, "platform", "darwin")
    assert "os.splice is not available" in (splice_relay.unavailable() or "")


def test_an_unexpected_error_cuts_the_connection_and_frees_everything(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = open_fds()
    link = rig.splice()

    def broken(_half: SpliceHalf) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(SpliceHalf, "_transfer", broken)
    link.client.sendall(b"x")  # wakes the client → upstream half, which fails
    assert link.owner.done.wait(5)
    assert all(isinstance(exc, RuntimeError) for _half, exc in link.owner.lost)
    assert link.origin.recv(10) == b""
    link.close()
    rig.descriptors_back_to(before)
