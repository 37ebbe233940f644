"""An unexpected failure while setting a connection up cuts the client: never a hang."""

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
from tests.unit.fakes import SyncDecider


def _direct(dest: Destination) -> Decision:
    return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)


async def _client_sees_the_end(ctx: ProxyContext) -> bytes:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, b"hello\n")
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
        except ConnectionResetError:
            return b""
    finally:
        sock.close()
        server.close()


@pytest.mark.parametrize("where", ["open_direct", "decide"])
def test_unexpected_errors_reset_the_client(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    monkeypatch.setattr(connection, "original_destination", lambda sock: ("203.0.113.9", 8080))

    async def broken_route(*args: object) -> None:
        raise RuntimeError("a bug")

    def broken_decide(dest: Destination) -> Decision:
        raise RuntimeError("a bug")

    if where == "open_direct":
        monkeypatch.setattr(connection, "open_direct", broken_route)
    ctx = ProxyContext(
        decider=SyncDecider(broken_decide if where == "decide" else _direct),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=2),
        resolver=NameResolver(),
    )
    answer = uvloop.run(_client_sees_the_end(ctx))
    assert answer == b"", "the client is cut, not left waiting"
    assert not ctx.active, "and the connection is accounted for"
