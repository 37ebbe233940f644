"""An HTTPS (TLS) upstream that ends its tunnel: the client gets every byte and the end, and
nothing is logged above INFO (a TLS transport cannot stay half-open; asyncio warns when a
protocol asks it to)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path

import pytest
import uvloop

from pac.routes import Route
from proxy import connection
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination
from tests.unit.fakes import SyncDecider
from tests.unit.waiting import until


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl comes with ca-certificates)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def _tunnel_that_the_upstream_ends(cert: Path, key: Path) -> bytes:
    loop = asyncio.get_running_loop()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    class TlsConnectProxy(asyncio.Protocol):
        """Answers CONNECT, sends a greeting through the tunnel, then ends it once the
        client's reply to the greeting came back through the tunnel (so the relay runs)."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.head: bytes | None = b""

        def data_received(self, data: bytes) -> None:
            if self.head is None:  # tunnel bytes: the client answered the greeting
                self.transport.close()  # close_notify, then FIN
                return
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.head = None
                self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\nhello")

    upstream = await loop.create_server(TlsConnectProxy, "127.0.0.1", 0, ssl=server_ctx)
    up_port = upstream.sockets[0].getsockname()[1]

    def decide(dest: Destination) -> Decision:
        route = Route("HTTPS", "127.0.0.1", up_port)
        return Decision("PROXY", (route,), "test", dest.url, dest.host)

    ctx = ProxyContext(
        decider=SyncDecider(decide),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=5, ssl_context=ssl.create_default_context(cafile=cert)),
        resolver=NameResolver(),
    )
    proxy = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*proxy.sockets[0].getsockname()[:2])
    try:
        greeting = await asyncio.wait_for(reader.readexactly(5), 10)
        writer.write(b"!")  # the upstream ends the tunnel when this reaches it
        answer = greeting + await asyncio.wait_for(reader.read(), 10)
        await until(lambda: not ctx.active, "the connection's end")
    finally:
        writer.close()
        proxy.close()
        upstream.close()
    return answer


def test_a_tls_upstream_that_ends_the_tunnel_is_not_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    certificate: tuple[Path, Path],
) -> None:
    monkeypatch.setattr(connection, "original_destination", lambda s: ("203.0.113.5", 8443))
    with caplog.at_level(logging.INFO):
        answer = uvloop.run(_tunnel_that_the_upstream_ends(*certificate))
    assert answer == b"hello"
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.INFO]
    assert loud == []
