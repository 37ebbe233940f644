"""PacSource: fail closed until loaded and on every failure, stale grace, validation before
the swap, conditional refresh, file permissions (a real aiohttp server on loopback)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pac.engine import load_engine
from proxy.pac_source import MAX_LINT_LINES, PacSettings, PacSnapshot, PacSource

GOOD = 'function FindProxyForURL(url, host) { return "DIRECT"; }'


async def strict_validate(script: str) -> None:
    if "FindProxyForURL" not in script:
        raise ValueError("no FindProxyForURL")


class Server:
    def __init__(self) -> None:
        self.body: bytes = GOOD.encode()
        self.status = 200
        self.content_type = "application/x-ns-proxy-autoconfig"
        self.charset: str | None = None
        self.seen_if_none_match: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen_if_none_match.append(request.headers.get("If-None-Match"))
        etag = f'"{hash(self.body) & 0xFFFF:x}"'
        if request.headers.get("If-None-Match") == etag and self.status == 200:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            status=self.status, body=self.body, content_type=self.content_type,
            charset=self.charset, headers={"ETag": etag},
        )  # fmt: skip


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    app = web.Application()
    app.router.add_get("/p.pac", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}/p.pac"
    await runner.cleanup()


def _source(url: str | None, seen: list[PacSnapshot], inline: str | None = None, **kw) -> PacSource:
    return PacSource(url, inline, PacSettings(**kw), strict_validate, seen.append)


async def test_loads_then_refreshes_with_304(server) -> None:
    state, url = server
    seen: list[PacSnapshot] = []
    source = _source(url, seen)
    try:
        assert source.snapshot.script is None and "not loaded" in (source.snapshot.error or "")
        assert await source.refresh_once()
        assert seen[-1].script == GOOD
        assert await source.refresh_once()
        assert state.seen_if_none_match[-1] is not None, "the refresh was conditional"
        assert len(seen) == 1, "an unchanged script is not republished"
    finally:
        await source.close()


@pytest.mark.parametrize(
    ("status", "body", "expect"),
    [
        (503, GOOD.encode(), "HTTP 503"),
        (200, b"not a pac", "script refused"),
        (200, b"x" * 2048, "more than 1024 bytes"),
    ],
)
async def test_every_failure_fails_closed_even_after_a_good_script(
    server, status: int, body: bytes, expect: str
) -> None:
    state, url = server
    seen: list[PacSnapshot] = []
    source = _source(url, seen, max_bytes=1024)
    try:
        assert await source.refresh_once()
        state.status, state.body = status, body
        assert not await source.refresh_once()
        assert seen[-1].script is None
        assert expect in (seen[-1].error or "")
        state.status, state.body = 200, GOOD.encode()
        assert await source.refresh_once()
        assert seen[-1].script == GOOD, "recovers without a restart"
    finally:
        await source.close()


async def test_unreachable_source_fails_closed() -> None:
    seen: list[PacSnapshot] = []
    source = _source("http://127.0.0.1:9/p.pac", seen, timeout=2)
    try:
        assert not await source.refresh_once()
        assert seen[-1].script is None and "127.0.0.1:9" in (seen[-1].error or "")
    finally:
        await source.close()


async def test_stale_grace_keeps_the_last_good_script_for_a_bounded_time(server) -> None:
    state, url = server
    seen: list[PacSnapshot] = []
    source = _source(url, seen, stale_grace=0.3)
    try:
        assert await source.refresh_once()
        state.status = 500
        assert not await source.refresh_once()
        assert seen[-1].script == GOOD and seen[-1].stale
        # Time passing is the behaviour under test: only a lower bound matters (a late
        # wake-up is further past the grace, never less).
        await asyncio.sleep(0.35)
        assert not await source.refresh_once()
        assert seen[-1].script is None, "the grace ran out"
    finally:
        await source.close()


async def test_charset_and_bom_decoding(server) -> None:
    state, url = server
    seen: list[PacSnapshot] = []
    source = _source(url, seen)
    script = 'function FindProxyForURL(u, h) { return h == "caf\u00e9" ? "DIRECT" : "DIRECT"; }'
    try:
        state.body = script.encode("latin-1")
        state.charset = "iso-8859-1"
        assert await source.refresh_once()
        assert seen[-1].script == script
        state.body = b"\xef\xbb\xbf" + script.replace("DIRECT", "PROXY a:1", 1).encode()
        assert await source.refresh_once()
        assert seen[-1].script is not None and seen[-1].script.startswith("function")
    finally:
        await source.close()


async def test_embedded_script_that_does_not_load_is_unavailable() -> None:
    seen: list[PacSnapshot] = []
    await _source(None, seen, inline="var x = 1;").run()
    assert seen[-1].script is None and "script refused" in (seen[-1].error or "")


async def test_file_source_refused_when_others_can_write_it(tmp_path: Path) -> None:
    path = tmp_path / "p.pac"
    path.write_text(GOOD)
    path.chmod(0o666)
    seen: list[PacSnapshot] = []
    source = _source(f"file://{path}", seen)
    assert not await source.refresh_once()
    assert "writable by group or others" in (seen[-1].error or "")
    path.chmod(0o644)
    assert await source.refresh_once()
    assert seen[-1].script == GOOD


@pytest.mark.parametrize("charset", ["undefined", "punycode"])
async def test_a_charset_whose_codec_raises_is_ignored_not_fatal(server, charset: str) -> None:
    """Some codec names make bytes.decode raise other errors than UnicodeDecodeError: the
    server's charset must never escape as an exception (which stopped refreshes for good)."""
    state, url = server
    seen: list[PacSnapshot] = []
    source = _source(url, seen)
    try:
        state.charset = charset
        assert await source.refresh_once()
        assert seen[-1].script == GOOD
    finally:
        await source.close()


async def engine_validate(script: str) -> None:
    """Loads the script into a real engine, as the proxy's validator does (in-process)."""
    load_engine("dukpy", script).close()


async def test_a_script_with_only_findproxyforurlex_is_refused_with_the_rename_hint() -> None:
    seen: list[PacSnapshot] = []
    ex_only = 'function FindProxyForURLEx(url, host) { return "DIRECT"; }'
    await PacSource(None, ex_only, PacSettings(), engine_validate, seen.append).run()
    error = seen[-1].error or ""
    assert seen[-1].script is None  # fails closed: every PAC decision is a REJECT
    assert "script refused: no_entrypoint: FindProxyForURL() is undefined" in error
    assert "rename it to 'FindProxyForURL'" in error


async def test_lint_findings_of_a_new_script_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    script = (
        "function FindProxyForURL(url, host) {\n"
        '  if (isInNetEx(host, "::/0")) return "DIRECT";\n'
        '  return "PROXY p.example:1";\n}'
    )
    seen: list[PacSnapshot] = []
    with caplog.at_level(logging.INFO, logger="airgap.pac"):
        await PacSource(None, script, PacSettings(), engine_validate, seen.append).run()
    assert seen[-1].script == script
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "PAC lint: source=embeddedPac line 2: prefix-family: isInNetEx prefix '::/0' also"
        " matches every IPv4 address (Chromium compares an IPv4 address as ::ffff:a.b.c.d);"
        " to match IPv6 addresses only, test for a ':' first"
    ]


async def test_lint_lines_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    rules = "".join(f'  if (isInNetEx(host, "::/{n}")) return "DIRECT";\n' for n in range(30))
    script = f'function FindProxyForURL(url, host) {{\n{rules}  return "PROXY p:1";\n}}'
    with caplog.at_level(logging.WARNING, logger="airgap.pac"):
        await PacSource(None, script, PacSettings(), engine_validate, [].append).run()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == MAX_LINT_LINES + 1
    assert warned[-1] == "PAC lint: source=embeddedPac and 10 more (pac-eval --lint lists them all)"


async def test_file_source_from_a_configmap_volume_and_a_swappable_one(tmp_path: Path) -> None:
    from tests.configmap import write_volume

    root = tmp_path / "policy"
    write_volume(root, {"proxy.pac": GOOD})
    root.chmod(0o755)  # the kubelet's 0777 is safe only on its read-only mount
    seen: list[PacSnapshot] = []
    source = _source(f"file://{root}/proxy.pac", seen)
    assert await source.refresh_once()
    assert seen[-1].script == GOOD
    root.chmod(0o777)  # now anyone could repoint ..data at a script of theirs
    assert not await source.refresh_once()
    assert f"its directory {root} is writable by group or others" in (seen[-1].error or "")
