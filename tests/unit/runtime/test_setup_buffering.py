"""While a connection is being decided and connected, what the client sends is held back:
the proxy keeps at most what had arrived and pauses reading, then sends it all, in order."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from pac.routes import DIRECT
from proxy import connection
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination

FIRST = b"a" * 1000
LATER = bytes(range(256)) * 4000  # 1 MB the client pushes while the decision is pending


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

    async def slow_decide(dest: Destination) -> Decision:
        await release.wait()
        return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)

    ctx = ProxyContext(
        decide=slow_decide,
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=5),
        resolver=NameResolver(),
    )
    proxy = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    client = socket.create_connection(proxy.sockets[0].getsockname()[:2], timeout=5)
    client.setblocking(False)
    try:
        await loop.sock_sendall(client, FIRST)
        async with asyncio.timeout(5):  # accepted, and the first bytes read
            while not ctx.active or len(next(iter(ctx.active)).buf) < len(FIRST):
                await asyncio.sleep(0.01)
        # Fill what the kernel buffers for us while the decision hangs; the proxy must not
        # take it all into its own memory.
        pushed = 0
        while pushed < len(LATER):
            try:
                pushed += client.send(LATER[pushed : pushed + 65536])
            except BlockingIOError:
                break
        await asyncio.sleep(0.1)
        (conn,) = ctx.active
        held = len(conn.buf)
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
