"""Each place that counts, counting what it means: a real connection over loopback, the
PAC decider with real engines, the PAC source, the resolver, the supervisor's report pipe."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import uvloop

from pac.routes import DIRECT
from pac.sandbox import Limits
from proxy import connection
from proxy import supervisor as workers
from proxy.connection import Intercepted, ProxyContext
from proxy.control import REPORT_FD_ENV, decode_up, report_message
from proxy.fleet import Fleet
from proxy.metrics import ProcessMetrics
from proxy.pac_decider import PacDecider
from proxy.pac_source import PacSettings, PacSnapshot, PacSource, sha256_text
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination
from tests.unit.fakes import SyncDecider
from tests.unit.waiting import until


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _ctx(decide, metrics: ProcessMetrics, **kw) -> ProxyContext:  # type: ignore[no-untyped-def]
    return ProxyContext(
        decider=SyncDecider(decide),
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=2),
        resolver=NameResolver(),
        metrics=metrics,
        **kw,
    )


async def _through(ctx: ProxyContext, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    proxy = await loop.create_server(lambda: Intercepted(ctx), "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    got = b""
    try:
        await loop.sock_sendall(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
    finally:
        sock.close()
        await until(lambda: not ctx.active, "the connection to end")
        proxy.close()
    return got


def test_a_relayed_connection_counts_decision_bytes_and_setup(monkeypatch) -> None:
    async def scenario() -> ProcessMetrics:
        server, port = await _echo_server()
        monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", port))
        metrics = ProcessMetrics()

        def direct(dest: Destination) -> Decision:
            return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)

        assert await _through(_ctx(direct, metrics), b"y" * 5000) == b"y" * 5000
        server.close()
        return metrics

    totals = uvloop.run(scenario()).snapshot()
    assert totals.count("airgap_connections", decision="DIRECT") == 1
    assert totals.count("airgap_connections") == 1
    assert totals.count("airgap_bytes", direction="up") == 5000
    assert totals.count("airgap_bytes", direction="down") == 5000
    assert sum(totals.histograms["airgap_setup_seconds"].counts) == 1
    assert totals.count("airgap_connection_errors") == 0


def test_rejects_and_refusals_count_their_kind(monkeypatch) -> None:
    async def scenario() -> ProcessMetrics:
        metrics = ProcessMetrics()

        def reject(dest: Destination) -> Decision:
            return Decision("REJECT", (), "no", dest.url, dest.host)

        monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.2", 9))
        await _through(_ctx(reject, metrics), b"x")

        def broken(sock: object) -> tuple[str, int]:
            raise OSError("no original destination")

        monkeypatch.setattr(connection, "original_destination", broken)
        await _through(_ctx(reject, metrics), b"x")
        # A DIRECT route nobody listens on: the route failed, the client is reset.
        monkeypatch.setattr(connection, "original_destination", lambda s: ("127.0.0.1", 1))

        def direct(dest: Destination) -> Decision:
            return Decision("DIRECT", (DIRECT,), "test", dest.url, dest.host)

        await _through(_ctx(direct, metrics), b"x")
        return metrics

    totals = uvloop.run(scenario()).snapshot()
    assert totals.count("airgap_connections", decision="REJECT") == 2
    assert totals.count("airgap_connections", decision="DIRECT") == 1
    assert totals.count("airgap_connection_errors", kind="no_original_dst") == 1
    assert totals.count("airgap_connection_errors", kind="route_failed") == 1
    assert totals.count("airgap_connection_errors") == 2
    assert totals.count("airgap_bytes") == 0
    assert sum(totals.histograms["airgap_setup_seconds"].counts) == 0


async def test_pac_decisions_count_how_they_were_answered() -> None:
    metrics = ProcessMetrics()
    script = (
        'function FindProxyForURL(u, h) { if (h == "spin") { while (true) {} } return "DIRECT"; }'
    )
    decider = PacDecider(NameResolver(metrics=metrics), Limits(time=0.5), "pacparser",
                         evaluators=1, max_queue=1, metrics=metrics)  # fmt: skip
    dest = Destination("203.0.113.5", 443, "app.example", "10.0.0.1")
    try:
        assert decider.decide_now(dest) is not None  # no script yet
        assert not decider.in_force
        await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
        assert decider.in_force
        assert decider.decide_now(dest) is None
        await decider.decide(dest)  # evaluated
        assert decider.decide_now(dest) is not None  # cached
        await decider.decide(Destination("203.0.113.5", 443, "spin", "10.0.0.1"))  # timeout
    finally:
        await decider.aclose()
    totals = metrics.snapshot()
    for result, n in {"unavailable": 1, "ok": 1, "cached": 1, "timeout": 1}.items():
        assert totals.count("airgap_pac_evaluations", result=result) == n, result
    assert sum(totals.histograms["airgap_pac_evaluation_seconds"].counts) == 2


async def test_pac_fetches_count_ok_unchanged_invalid_and_error(tmp_path: Path) -> None:
    metrics = ProcessMetrics()
    path = tmp_path / "p.pac"
    path.write_text('function FindProxyForURL(u, h) { return "DIRECT"; }')
    path.chmod(0o600)

    async def validate(script: str) -> None:
        if "FindProxyForURL" not in script:
            raise ValueError("no entry point")

    seen: list[PacSnapshot] = []
    source = PacSource(str(path), None, PacSettings(), validate, seen.append, metrics)
    assert await source.refresh_once()
    assert await source.refresh_once()  # the same script again
    path.write_text("nothing here")
    assert not await source.refresh_once()
    path.unlink()
    assert not await source.refresh_once()
    totals = metrics.snapshot()
    for result in ("ok", "unchanged", "invalid", "error"):
        assert totals.count("airgap_pac_fetches", result=result) == 1, result
    assert source.last_success is not None and source.last_error is not None


def test_dns_lookups_count_ok_not_found_and_timeout() -> None:
    async def scenario() -> ProcessMetrics:
        metrics = ProcessMetrics()
        resolver = NameResolver(timeout=0.2, metrics=metrics)
        never = asyncio.Event()

        async def getaddrinfo(host: str, *args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
            if host == "slow.example":
                await never.wait()
            if host == "gone.example":
                raise socket.gaierror(socket.EAI_NONAME, "not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.7", 0))]

        asyncio.get_running_loop().getaddrinfo = getaddrinfo  # type: ignore[method-assign]
        assert await resolver.resolve("ok.example") == ("203.0.113.7",)
        assert await resolver.resolve("ok.example") == ("203.0.113.7",)  # cached: no lookup
        assert await resolver.resolve("gone.example") == ()
        assert await resolver.resolve("slow.example") == ()
        return metrics

    totals = uvloop.run(scenario()).snapshot()
    for result in ("ok", "not_found", "timeout"):
        assert totals.count("airgap_dns_lookups", result=result) == 1, result


def test_report_lines_round_trip() -> None:
    line = report_message({"listening": True})
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert decode_up(line[:-1]) == ("report", {"listening": True})
    for bad in (b"[]", b'{"a": 1, "b": 2}', b'{"report": 3}', b"nope"):
        with pytest.raises(ValueError):
            decode_up(bad)


#: A stand-in worker: sends one report with a count, then waits for its control pipe to close.
REPORTING_WORKER = (
    "import os, json\n"
    f"fd = int(os.environ[{REPORT_FD_ENV!r}])\n"
    "body = {'listening': True, 'totals': {'counters': {'airgap_connections':"
    " [['transparent', 'DIRECT', 7]]}}}\n"
    "os.write(fd, json.dumps({'report': body}).encode() + b'\\n')\n"
    f"cfd = int(os.environ[{workers.CONTROL_FD_ENV!r}])\n"
    "while os.read(cfd, 65536):\n"
    "    pass\n"
)


async def test_the_supervisor_keeps_a_dead_workers_last_report(monkeypatch) -> None:
    real_exec = asyncio.create_subprocess_exec
    started: list[asyncio.subprocess.Process] = []

    async def fake(*_argv: str, **kwargs: object) -> asyncio.subprocess.Process:
        proc = await real_exec(sys.executable, "-c", REPORTING_WORKER, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    monkeypatch.setattr(workers.asyncio, "create_subprocess_exec", fake)
    fleet = Fleet(1, uses_pac=False, own=ProcessMetrics())
    supervisor = asyncio.ensure_future(
        workers.supervise(1, ["run"], None, drain_timeout=1, fleet=fleet)
    )
    await until(lambda: fleet.totals().count("airgap_connections") == 7, "the first report")
    assert fleet.readiness().ok
    started[0].kill()  # it dies; its replacement reports 7 of its own
    await until(lambda: len(started) == 2, "the restart")
    await until(lambda: fleet.totals().count("airgap_connections") == 14, "both reports summed")
    assert fleet.own is not None
    assert fleet.own.snapshot().count("airgap_worker_restarts") == 1
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(supervisor, 15) in (0, 1)
    assert fleet.totals().count("airgap_connections") == 14
    assert json.dumps(fleet.describe_workers()) == "[]"
