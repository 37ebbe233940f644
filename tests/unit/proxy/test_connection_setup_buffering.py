"""While a connection is being decided and connected, what the client sends is held back:
the proxy keeps at most one bounded read beyond its peek and pauses reading, then sends it
all, in order; however much the client pushes, the set-up holds a few KiB."""

from __future__ import annotations

import asyncio
import select
import socket

import pytest
import uvloop

from pac.routes import DIRECT
from proxy import connection, relay, upstream
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination
from tests.unit.fakes import AsyncDecider
from tests.unit.waiting import loop_has_polled, until

FIRST = b"a" * 1000
LATER = bytes(range(256)) * 4000  # 1 MB the client pushes while the decision is pending


def _held_context(release: asyncio.Event) -> ProxyContext:
    """A context whose policy answers DIRECT only once `release` is set: the connection
    stays in its set-up phase until then."""

    async def slow_decide(dest: Destination) -> Decision:
        await release.wait()
        return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)

    return ProxyContext(
        decider=AsyncDecider(slow_decide),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=5),
        resolver=NameResolver(),
    )


async def _scenario(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, int, bool]:
    loop = asyncio.get_running_loop()
    received = bytearray()
    origin_done = loop.create_future()

    class Origin(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.extend(data)

        def eof_received(self) -> bool:
            origin_done.set_result(None)
            return False

    origin = await loop.create_server(Origin, "127.0.0.1", 0)
    origin_port = origin.sockets[0].getsockname()[1]
    monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", origin_port))
    release = asyncio.Event()
    ctx = _held_context(release)
    proxy = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    client = socket.create_connection(proxy.sockets[0].getsockname()[:2], timeout=5)
    client.setblocking(False)
    try:
        await loop.sock_sendall(client, FIRST)
        await until(
            lambda: ctx.active and len(next(iter(ctx.active)).sniffer) >= len(FIRST),
            "the connection accepted and its first bytes read",
        )
        # Fill what the kernel buffers for us while the decision hangs; the proxy must not
        # take it all into its own memory.
        pushed = 0
        while pushed < len(LATER):
            try:
                pushed += client.send(LATER[pushed : pushed + 65536])
            except BlockingIOError:
                break
        # The proxy had the chance to read what was pushed (and must not have).
        await loop_has_polled()
        (conn,) = ctx.active
        held = len(conn.sniffer)
        paused = not conn.transport.is_reading()  # type: ignore[attr-defined]
        release.set()
        await loop.sock_sendall(client, LATER[pushed:])
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(origin_done, 10)
    finally:
        client.close()
        proxy.close()
        origin.close()
    return bytes(received), held, paused


def test_client_bytes_are_held_back_and_then_sent_in_order(monkeypatch) -> None:
    received, held, paused = uvloop.run(_scenario(monkeypatch))
    assert paused, "reading pauses while the connection is being set up"
    assert held == len(FIRST), f"{held} bytes kept: only the read that came first"
    assert received == FIRST + LATER, "everything arrives once, in order"


async def _held_back_then_relayed_to_a_peer_that_does_not_read(
    monkeypatch: pytest.MonkeyPatch, peek: bool
) -> tuple[int, int, int]:
    """A client pushes hard during the peek and the decision; the origin never reads.
    Returns (bytes held at the hand-over, most ever buffered for the origin, bytes pushed)."""
    loop = asyncio.get_running_loop()
    origin_sock = socket.socket()
    origin_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    origin_sock.bind(("127.0.0.1", 0))
    origin_sock.listen()
    origin_sock.setblocking(False)

    accepted: list[asyncio.BaseTransport] = []

    class Origin(asyncio.Protocol):  # accepts, never reads
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)  # (a transport nothing refers to may be collected)
            loop.call_soon(transport.pause_reading)  # type: ignore[attr-defined]

    origin = await loop.create_server(Origin, sock=origin_sock)
    origin_port = origin_sock.getsockname()[1]
    monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", origin_port))
    if peek:
        monkeypatch.setattr(connection, "SNIFF_PORTS", (origin_port,))  # as on 80/443
    new_socket = upstream._new_socket

    def small_send_buffer(*args: object) -> socket.socket:
        # A fresh path to a far origin takes little at once; loopback would take it all.
        sock = new_socket(*args)  # type: ignore[arg-type]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock

    monkeypatch.setattr(upstream, "_new_socket", small_send_buffer)
    release = asyncio.Event()
    ctx = _held_context(release)
    listener = socket.socket()  # a window as wide as autotuning opens on a fast path
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 << 20)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    proxy = await loop.create_server(lambda: Intercepted(ctx), sock=listener)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    client.connect(listener.getsockname())
    client.setblocking(False)
    chunk = b"x" * 65536
    pushed = most = held = 0
    try:

        def held_back() -> bool:
            """The proxy stopped reading from the client: for good while the decision is
            pending, and behind an origin that never reads once relaying."""
            return bool(ctx.active) and not next(iter(ctx.active)).transport.is_reading()  # type: ignore[attr-defined]

        def writable() -> bool:
            return bool(select.select([], [client], [], 0)[1])

        async def push(conn: Intercepted | None) -> None:
            """Push until the client is held back for good (or 64 MiB went in)."""
            nonlocal pushed, most
            while pushed < 64 << 20:
                try:
                    pushed += client.send(chunk)
                except BlockingIOError:
                    if held_back():
                        break
                    await until(lambda: writable() or held_back(), "room, or the client paused")
                if conn is not None and conn.halves is not None:
                    size = conn.halves[1].transport.get_write_buffer_size()
                    most = max(most, size)

        await push(None)  # the peek ends at once (a big first read), then it waits
        (conn,) = ctx.active
        held = len(conn.sniffer)
        release.set()
        await until(lambda: conn.halves is not None, "the relay to start")
        await push(conn)
    finally:
        client.close()
        proxy.close()
        origin.close()
    return held, most, pushed


@pytest.mark.parametrize("peek", [True, False], ids=["peeked", "not-peeked"])
def test_an_origin_that_does_not_read_holds_the_client_back_from_the_first_byte(
    monkeypatch: pytest.MonkeyPatch, peek: bool
) -> None:
    """What was held back during the set-up can fill the origin's buffer past its high-water
    mark at once: the client must then stay paused, not be resumed by the hand-over. (The
    set-up holds at most a few KiB, so the water marks are lowered below that here.)"""
    monkeypatch.setattr(relay, "WRITE_HIGH_WATER", 2048)
    monkeypatch.setattr(relay, "WRITE_LOW_WATER", 512)
    held, most, pushed = uvloop.run(
        _held_back_then_relayed_to_a_peer_that_does_not_read(monkeypatch, peek)
    )
    # The client pushed megabytes at once: the set-up kept one bounded read (two with a
    # peek: the sniffed one, and the one that came while it was being decided).
    limit = connection.HOLD_READ + (connection.PEEK_READ if peek else 0)
    assert held <= limit, f"{held} bytes held during the set-up ({pushed} pushed)"
    assert held > relay.WRITE_HIGH_WATER, f"set-up: only {held} bytes held (test needs more)"
    bound = relay.WRITE_HIGH_WATER + held + 512 * 1024
    assert most <= bound, f"{most} bytes buffered for an origin that never reads ({pushed} pushed)"
