"""A proxy that refuses a destination ends the connection; it is not a dead proxy.

With `PROXY corp:8080; DIRECT` and a filtering corporate proxy, reading its 403 as "proxy
down" sent the refused destination DIRECT and marked the proxy bad, so every other client
went DIRECT too for --bad-proxy-ttl. Here the real connection class runs on a loop, with a
fake upstream and a DIRECT origin that counts who reached it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket

import pytest
import uvloop

from pac.routes import DIRECT, Route
from proxy import connection
from proxy.config import DEFAULTS
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination
from tests.unit.fakes import SyncDecider


async def _serve(answer: bytes) -> asyncio.Server:
    """An upstream that answers its first message with `answer` (b"": closes at once)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer:
            await reader.read(4096)
            writer.write(answer)
            await writer.drain()
            await reader.read(1)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def _scenario(
    monkeypatch: pytest.MonkeyPatch, answer: bytes
) -> tuple[list[int], ProxyContext, Route]:
    reached: list[int] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(1)
        writer.close()

    origin_server = await asyncio.start_server(origin, "127.0.0.1", 0)
    upstream = await _serve(answer)
    route = Route("PROXY", "127.0.0.1", _port(upstream))

    def decide(dest: Destination) -> Decision:
        return Decision("PROXY", (route, DIRECT), "PAC returned", dest.url, dest.host)

    ctx = ProxyContext(
        decider=SyncDecider(decide),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=5),
        resolver=NameResolver(),
        config=dataclasses.replace(DEFAULTS, log_format="json"),
    )
    loop = asyncio.get_running_loop()
    origin_port = _port(origin_server)
    monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", origin_port))
    server = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, b"hello\n")
        try:
            while await asyncio.wait_for(loop.sock_recv(sock, 100), 5):
                pass
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    for _ in range(100):  # the audit line is written once the connection is accounted for
        if not ctx.active:
            break
        await asyncio.sleep(0.01)
    for srv in (server, origin_server, upstream):
        srv.close()
    return reached, ctx, route


def _record(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    lines = [r.getMessage() for r in caplog.records if r.name == "airgap.conn"]
    assert len(lines) == 1, lines
    return dict(json.loads(lines[0]))


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 403 Filtered\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 407 Auth\r\n\r\n"],
)
def test_a_refusing_proxy_rejects_and_is_not_marked_bad(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    caplog.set_level(logging.INFO, logger="airgap.conn")
    reached, ctx, route = uvloop.run(_scenario(monkeypatch, answer))
    assert reached == [], "the refused destination was reached DIRECT"
    assert ctx.bad_proxies.order((route, DIRECT)) == (route, DIRECT), "marked bad"
    record = _record(caplog)
    assert record["decision"] == "REJECT" and record["route"] == str(route)
    status = answer.split(b"\r\n")[0][9:].decode()
    assert status in str(record["reason"]) and status in str(record["error"])


def test_an_unusable_proxy_still_fails_over_and_is_marked_bad(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="airgap.conn")
    reached, ctx, route = uvloop.run(_scenario(monkeypatch, b""))  # closes before any reply
    assert reached == [1], "the next entry was used"
    assert ctx.bad_proxies.order((route, DIRECT)) == (DIRECT, route)
    record = _record(caplog)
    assert record["decision"] == "PROXY" and record["route"] == "DIRECT"
