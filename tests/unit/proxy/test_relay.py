"""The relay halves on real loopback sockets: backpressure, half-close, byte counts."""

from __future__ import annotations

import asyncio
import select
import socket

import uvloop

from proxy import relay
from tests.unit.waiting import until


def _writable(sock: socket.socket) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


async def _relay_through(sink_reads: bool) -> dict[str, int]:
    """client → [relay] → sink; the sink reads or not. Returns buffer and byte figures."""
    loop = asyncio.get_running_loop()
    results: dict[str, int] = {"max_buffer": 0}
    sink_ready: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if not sink_reads:  # uvloop ignores a pause inside connection_made
                loop.call_soon(transport.pause_reading)  # type: ignore[attr-defined]
            sink_ready.set_result(transport)  # type: ignore[arg-type]

    sink_server = await loop.create_server(Sink, "127.0.0.1", 0)
    sink_port = sink_server.sockets[0].getsockname()[1]
    halves: list[relay.Half] = []  # (from the client, from the sink) once paired
    lost: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    class Owner:
        def half_lost(self, half: relay.Half, exc: Exception | None) -> None:
            lost.append(repr(exc))

    owner = Owner()

    class Front(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            async def link() -> None:
                up, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", sink_port)
                halves.extend(relay.pair(transport, up, owner))  # type: ignore[arg-type]

            tasks.append(loop.create_task(link()))

    front = await loop.create_server(Front, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    await sink_ready
    await until(lambda: halves, "the front paired with the sink")  # it relays only then
    from_client = halves[0].transport
    chunk = b"x" * 65536
    sent = 0
    total = 64 * 1024 * 1024
    while sent < total:
        try:
            sent += client.send(chunk[: total - sent])
        except BlockingIOError:
            # Behind a sink that does not read, the relay's pause is for good (nothing will
            # drain the buffers): the client is stopped. Else wait (bounded) for room.
            if not sink_reads and not from_client.is_reading():  # type: ignore[attr-defined]
                break
            await until(
                lambda: _writable(client) or (not sink_reads and not from_client.is_reading()),  # type: ignore[attr-defined]
                "the client socket writable again, or the relay pausing it for good",
            )
        results["max_buffer"] = max(
            results["max_buffer"], halves[1].transport.get_write_buffer_size()
        )
    results["sent"] = sent
    if sink_reads:
        await until(lambda: halves[0].nbytes >= sent, "every byte relayed to the sink")
    results["relayed"] = halves[0].nbytes
    client.close()
    front.close()
    sink_server.close()
    return results


def test_slow_reader_bounds_the_proxy_buffer() -> None:
    figures = uvloop.run(_relay_through(sink_reads=False))
    # The client is stopped long before 64 MiB: the relay paused reading from it.
    assert figures["sent"] < 16 * 1024 * 1024
    assert figures["max_buffer"] <= relay.WRITE_HIGH_WATER + 512 * 1024


def test_fast_reader_moves_everything() -> None:
    figures = uvloop.run(_relay_through(sink_reads=True))
    assert figures["sent"] == 64 * 1024 * 1024
    assert figures["relayed"] == figures["sent"]
