"""Reading PAC files: decoding, size bounds, and http(s) fetches against a local server."""

from __future__ import annotations

import asyncio
import codecs
import io
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pac.loader import PacSourceError, check_size, decode_pac, fetch_pac, read_pac

STOPPING = web.AppKey("stopping", asyncio.Event)
PAC = 'function FindProxyForURL(u, h) { return "DIRECT"; } // café'


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        (codecs.BOM_UTF8 + "é".encode(), "latin-1", "é"),  # BOM beats the header
        (codecs.BOM_UTF16_LE + "é".encode("utf-16-le"), None, "é"),
        (codecs.BOM_UTF16_BE + "é".encode("utf-16-be"), None, "é"),
        ("é".encode("latin-1"), "iso-8859-1", "é"),  # declared charset
        ("é".encode(), "no-such-charset", "é"),  # unknown charset: UTF-8
        ("é".encode(), None, "é"),
        (b"\xe9", None, "é"),  # not UTF-8: Latin-1, which never fails
        ("é".encode(), "ascii", "é"),  # charset that cannot decode: UTF-8
    ],
)
def test_decode_order(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_pac(data, charset) == expected


def test_size_bound() -> None:
    check_size(10, 10, "x")
    with pytest.raises(PacSourceError, match="more than 10 bytes"):
        check_size(11, 10, "x")


def test_local_sources(tmp_path: Path) -> None:
    path = tmp_path / "my proxy.pac"
    path.write_bytes(PAC.encode())
    assert read_pac(str(path)) == PAC
    assert read_pac(path.as_uri()) == PAC
    assert read_pac("-", stdin=io.BytesIO(PAC.encode())) == PAC
    with pytest.raises(PacSourceError, match="more than 20 bytes"):
        read_pac(str(path), max_bytes=20)
    with pytest.raises(PacSourceError):
        read_pac(str(tmp_path / "missing.pac"))
    with pytest.raises(PacSourceError, match="unsupported URL scheme"):
        read_pac("ftp://example.com/x.pac")


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(
            body=PAC.encode("latin-1", "replace").replace(b"?", b"\xe9"),
            content_type="application/x-ns-proxy-autoconfig",
            charset="iso-8859-1",
        )

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(50):
            await resp.write(b"y" * 200)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        # An origin that does not answer until the server stops: only a timeout ends the
        # fetch. (Answering at the stop spares the server's 60 s shutdown wait.)
        await request.app[STOPPING].wait()
        return web.Response(text=PAC)

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app[STOPPING] = asyncio.Event()
    app.add_routes(
        [
            web.get("/ok.pac", ok),
            web.get("/big.pac", big),
            web.get("/chunked.pac", chunked),
            web.get("/slow.pac", slow),
            web.get("/missing.pac", missing),
        ]
    )
    return app


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    runner, port = await _serve(_app())
    yield f"http://127.0.0.1:{port}"
    runner.app[STOPPING].set()
    await runner.cleanup()


async def test_http_fetch(http_server: str) -> None:
    body, charset = await fetch_pac(f"{http_server}/ok.pac")
    assert charset == "iso-8859-1"
    assert decode_pac(body, charset) == PAC


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/big.pac", "more than 1000 bytes"),
        ("/chunked.pac", "more than 1000 bytes"),
        ("/missing.pac", "HTTP 404"),
    ],
)
async def test_http_refusals(http_server: str, path: str, needle: str) -> None:
    with pytest.raises(PacSourceError, match=needle):
        await fetch_pac(f"{http_server}{path}", max_bytes=1000)


async def test_http_time_bound(http_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(PacSourceError, match=r"within 0\.5 s"):
        await fetch_pac(f"{http_server}/slow.pac", timeout=0.5)
    assert time.monotonic() - started < 2


async def test_unreachable() -> None:
    with pytest.raises(PacSourceError):
        await fetch_pac("http://127.0.0.1:9/none.pac", timeout=2)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl comes with ca-certificates)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_is_verified(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    runner, port = await _serve(_app(), server_ctx)
    url = f"https://127.0.0.1:{port}/ok.pac"
    try:
        with pytest.raises(PacSourceError, match=r"(?i)certificate"):
            await fetch_pac(url, timeout=5)  # not trusted by the system store
        trusting = ssl.create_default_context(cafile=str(cert))
        body, charset = await fetch_pac(url, timeout=5, ssl_context=trusting)
        assert decode_pac(body, charset) == PAC
    finally:
        await runner.cleanup()


def test_pac_eval_fetches_over_http(tmp_path: Path) -> None:
    """The command end to end, against a server in another thread's loop."""
    import threading

    from tests.unit.pac.test_cli import pac_eval

    ready = threading.Event()
    state: dict[str, object] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner, port = loop.run_until_complete(_serve(_app()))
        state["port"], state["loop"] = port, loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        base = f"http://127.0.0.1:{state['port']}"
        ok = pac_eval(f"{base}/ok.pac", "a.example:443", "--no-dns")
        assert ok.returncode == 0 and ok.stdout == "DIRECT\n"
        missing = pac_eval(f"{base}/missing.pac", "a.example:443")
        assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    finally:
        loop = state["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
