"""An origin that half-closes at once (a receive-only server, `nc --recv-only`) still gets
every byte the client sends, even when its EOF reaches the proxy before the relay starts."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading

import pytest
import uvloop

from pac.routes import DIRECT
from proxy import connection
from proxy.config import DEFAULTS
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination
from tests.unit.fakes import SyncDecider
from tests.unit.waiting import until

PAYLOAD = bytes(range(256)) * 400


def _receive_only_origin(watched: threading.Event) -> tuple[socket.socket, list[int]]:
    """Accepts one connection, half-closes it as soon as the proxy's side of it is watched
    for the EOF (`watched`), counts what it reads until EOF."""
    listener = socket.create_server(("127.0.0.1", 0))
    counts: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            if watched.wait(10):
                conn.shutdown(socket.SHUT_WR)
            total = 0
            while data := conn.recv(65536):
                total += len(data)
            counts.append(total)

    threading.Thread(target=serve, daemon=True).start()
    return listener, counts


async def _scenario(monkeypatch: pytest.MonkeyPatch, splice: bool) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    watched = threading.Event()
    listener, counts = _receive_only_origin(watched)
    origin_port = listener.getsockname()[1]
    monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", origin_port))
    real_open_direct = connection.open_direct

    class SeesEof(asyncio.Protocol):
        """Wraps the upstream's holding protocol to tell when the origin's EOF came."""

        def __init__(self, held: asyncio.BaseProtocol, eof: asyncio.Event) -> None:
            self.held, self.eof = held, eof

        def data_received(self, data: bytes) -> None:
            self.held.data_received(data)  # type: ignore[attr-defined]

        def eof_received(self) -> bool | None:
            self.eof.set()
            return self.held.eof_received()  # type: ignore[attr-defined, no-any-return]

    async def open_direct_then_wait_for_eof(*args: object) -> object:
        transport, pending = await real_open_direct(*args)  # type: ignore[arg-type]
        eof = asyncio.Event()
        transport.set_protocol(SeesEof(transport.get_protocol(), eof))
        watched.set()
        # The race under test: the origin's EOF reaches the proxy before the hand-over.
        await asyncio.wait_for(eof.wait(), 10)
        return transport, pending

    monkeypatch.setattr(connection, "open_direct", open_direct_then_wait_for_eof)

    def decide(dest: Destination) -> Decision:
        return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)

    ctx = ProxyContext(
        decider=SyncDecider(decide),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=5),
        resolver=NameResolver(),
        config=dataclasses.replace(DEFAULTS, splice=splice),
    )
    proxy = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*proxy.sockets[0].getsockname()[:2])
    try:
        writer.write(PAYLOAD)
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)  # the origin's EOF, passed on
        await until(lambda: counts, "the origin to count what it received")
    finally:
        writer.close()
        proxy.close()
        listener.close()
    return counts[0], answer


@pytest.mark.parametrize("splice", [False, True], ids=["relay", "splice"])
def test_an_origin_that_half_closes_at_once_gets_the_client_bytes(
    monkeypatch: pytest.MonkeyPatch, splice: bool
) -> None:
    received, answer = uvloop.run(_scenario(monkeypatch, splice))
    assert answer == b"", "the client sees the origin's EOF"
    assert received == len(PAYLOAD), "and the origin every byte the client sent"
