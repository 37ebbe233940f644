"""DIRECT connects with a mark: done at once when the kernel finished the handshake inside
`connect()`, else by waiting for the socket to become writable; refusals and silence fail
the route with a reason."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
import uvloop

from pac.routes import DIRECT, Route
from proxy import handshake
from proxy.cli import can_mark
from proxy.upstream import ConnectOptions, RouteFailed, _Handshaking, open_route
from tests.unit.fakes import FakeTransport

MARK = 0x4147
IN_PRIVATE_NETNS = os.environ.get("AIRGAP_PRIVATE_NETNS") == "1" and os.geteuid() == 0


needs_mark = pytest.mark.skipif(not can_mark(MARK), reason="setting SO_MARK needs CAP_NET_ADMIN")
needs_netns = pytest.mark.skipif(
    not IN_PRIVATE_NETNS or shutil.which("iptables") is None,
    reason="changes iptables: only inside the test run's private network namespace",
)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _round_trip(listener: socket.socket, opts: ConnectOptions) -> tuple[bytes, int]:
    """Open DIRECT to the listener, send a line, return what arrived and the socket's mark."""
    loop = asyncio.get_running_loop()
    port = listener.getsockname()[1]
    transport, _pending = await open_route(DIRECT, "127.0.0.1", port, opts)
    try:
        sock = transport.get_extra_info("socket")
        # Connected when open_route returns (ENOTCONN here while the handshake still runs):
        # the caller decides on failover by then.
        assert sock.getpeername()[1] == port
        mark = sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
        transport.write(b"ping\n")
        listener.setblocking(False)
        conn, _ = await loop.sock_accept(listener)
        with conn:
            data = await asyncio.wait_for(loop.sock_recv(conn, 100), 5)
        return data, mark
    finally:
        transport.abort()


@needs_mark
def test_marked_connect_on_loopback(listener: socket.socket) -> None:
    data, mark = uvloop.run(_round_trip(listener, ConnectOptions(timeout=5, mark=MARK)))
    assert data == b"ping\n"
    assert mark == MARK, "the upstream socket carries the mark the redirect rules exempt"


def test_unmarked_connect_on_loopback(listener: socket.socket) -> None:
    data, mark = uvloop.run(_round_trip(listener, ConnectOptions(timeout=5)))
    assert (data, mark) == (b"ping\n", 0)


@pytest.mark.parametrize("mark", [None, pytest.param(MARK, marks=needs_mark)])
def test_refused_connect_fails_the_route(mark: int | None) -> None:
    port = _free_port()
    with pytest.raises(RouteFailed, match="refused"):
        uvloop.run(open_route(DIRECT, "127.0.0.1", port, ConnectOptions(timeout=5, mark=mark)))


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def dropped_syns(listener: socket.socket) -> Iterator[list[str]]:
    """An INPUT rule that drops SYNs to the listener; yields it (for removal in the test)."""
    rule = ["INPUT", "-p", "tcp", "--syn", "--dport", str(listener.getsockname()[1])]
    rule += ["-j", "DROP"]
    _iptables("-I", *rule)
    try:
        yield rule
    finally:
        subprocess.run(["iptables", "-w", "-D", *rule], capture_output=True, timeout=10)


@needs_netns
@needs_mark
def test_marked_connect_waits_for_a_slow_handshake(
    listener: socket.socket, dropped_syns: list[str]
) -> None:
    """The first SYN is lost: the handshake ends only after the kernel's retransmission,
    long after `connect()` returned, and the connect waits for it."""

    async def scenario() -> tuple[bytes, int, float]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, _iptables, "-D", *dropped_syns)
        started = loop.time()
        data, mark = await _round_trip(listener, ConnectOptions(timeout=10, mark=MARK))
        return data, mark, loop.time() - started

    data, mark, took = uvloop.run(scenario())
    assert (data, mark) == (b"ping\n", MARK)
    assert took >= 0.3, "the connection was made by the retransmitted SYN"


@needs_netns
@pytest.mark.parametrize("mark", [None, pytest.param(MARK, marks=needs_mark)])
def test_silent_destination_times_out(
    listener: socket.socket, dropped_syns: list[str], mark: int | None
) -> None:
    port = listener.getsockname()[1]
    opts = ConnectOptions(timeout=0.5, mark=mark)
    with pytest.raises(RouteFailed, match=r"timed out after 0\.5s"):
        uvloop.run(open_route(DIRECT, "127.0.0.1", port, opts))


@pytest.mark.parametrize("mark", [None, pytest.param(MARK, marks=needs_mark)])
def test_proxy_route_connects_and_keeps_bytes_past_the_reply(mark: int | None) -> None:
    """An HTTP CONNECT proxy (a few lines here) answers 200 and at once sends the first
    bytes of the tunnel: the route is open, and those bytes are kept for the relay."""

    async def scenario() -> tuple[bytes, bytes, int]:
        requests: list[bytes] = []

        async def fake_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\nhello from origin")
            await writer.drain()
            await reader.read()  # hold the tunnel until the client closes
            writer.close()

        server = await asyncio.start_server(fake_proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        route = Route("PROXY", "127.0.0.1", port)
        opts = ConnectOptions(timeout=5, mark=mark)
        transport, pending = await open_route(route, "app.example", 443, opts)
        # Final when open_route returns: the reply and the bytes after it came in one read,
        # and reading paused there (more would wait in the kernel for the relay).
        sock = transport.get_extra_info("socket")
        got_mark = sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
        transport.close()
        server.close()
        return requests[0], bytes(pending), got_mark

    request, pending, got_mark = uvloop.run(scenario())
    assert request.startswith(b"CONNECT app.example:443 HTTP/1.1\r\n")
    assert pending == b"hello from origin"
    assert got_mark == (mark or 0)


def test_reply_arriving_after_the_attempt_was_cancelled_is_dropped_quietly() -> None:
    """The client left (its task cancelled the handshake's future) in the same loop turn as
    the upstream's reply arrived: the reply is dropped, not raised out of the protocol
    callback (uvloop would log that as a fatal transport error)."""

    async def scenario() -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        shaking = _Handshaking(handshake.http_connect("a.example", 443), done)
        transport = FakeTransport()
        shaking.connection_made(transport)
        assert transport.written.startswith(b"CONNECT a.example:443 ")
        done.cancel()
        shaking.data_received(b"HTTP/1.1 200 OK\r\n\r\ntunnel")
        shaking.connection_lost(None)
        assert not shaking.pending

    uvloop.run(scenario())


@pytest.mark.parametrize("kind", ["PROXY", "HTTPS", "SOCKS5"])
def test_unencodable_proxy_host_fails_the_route(kind: str) -> None:
    """A PAC may name a proxy whose label is over 63 characters (its result parser checks the
    characters only); IDNA-encoding it raises UnicodeError, which escaped `open_route`, so
    the connection was cut instead of failing over to the next route."""
    route = Route(kind, "a" * 64 + ".example", 3128)  # type: ignore[arg-type]

    async def attempt() -> None:
        await open_route(route, "allowed.example", 443, ConnectOptions(timeout=2))

    with pytest.raises(RouteFailed, match=r"a{64}\.example"):
        uvloop.run(attempt())


async def _fake_proxy(answer: bytes) -> asyncio.Server:
    """A proxy that answers each message it reads with the next `|`-separated part of
    `answer`, then closes (b"": closes without a word)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in answer.split(b"|") if answer else ():
            await reader.read(4096)
            writer.write(part)
            await writer.drain()
        await reader.read(1)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("kind", "answer", "expected"),
    [
        ("PROXY", b"HTTP/1.1 403 Filtered\r\nContent-Length: 0\r\n\r\n", "refused"),
        ("PROXY", b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", "refused"),
        ("PROXY", b"", "unusable"),
        ("PROXY", b"SSH-2.0-x\r\n\r\n", "unusable"),
        ("SOCKS5", b"\x05\x00|\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00", "refused"),
        ("SOCKS5", b"\x05\xff", "refused"),
        ("SOCKS5", b"", "unusable"),
        ("SOCKS4", b"\x00\x5b\x00\x00\x00\x00\x00\x00", "refused"),
        ("SOCKS4", b"\x00\x00", "unusable"),
    ],
)
def test_a_route_failure_says_whether_the_upstream_refused(
    kind: str, answer: bytes, expected: str
) -> None:
    """A refusal in the upstream's answer is told apart from an unusable upstream: the
    connection logic REJECTs on the first and moves on only on the second."""

    async def attempt() -> RouteFailed:
        server = await _fake_proxy(answer)
        route = Route(kind, "127.0.0.1", server.sockets[0].getsockname()[1])  # type: ignore[arg-type]
        try:
            with pytest.raises(RouteFailed) as info:
                await open_route(route, "203.0.113.7", 443, ConnectOptions(timeout=5))
            return info.value
        finally:
            server.close()

    failure = uvloop.run(attempt())
    assert failure.kind == expected, failure


def test_a_refused_or_silent_proxy_connection_is_unusable() -> None:
    route = Route("PROXY", "127.0.0.1", _free_port())
    with pytest.raises(RouteFailed) as info:
        uvloop.run(open_route(route, "a.example", 443, ConnectOptions(timeout=2)))
    assert info.value.kind == "unusable"


def test_a_destination_the_route_cannot_carry_is_inapplicable() -> None:
    """SOCKS4 cannot carry IPv6: that says nothing about the proxy, which must not be
    marked bad for every other client (who would then go to the next entry, often DIRECT)."""
    route = Route("SOCKS4", "127.0.0.1", _free_port())
    with pytest.raises(RouteFailed) as info:
        uvloop.run(open_route(route, "2001:db8::1", 443, ConnectOptions(timeout=2)))
    assert info.value.kind == "inapplicable"
