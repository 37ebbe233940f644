"""The admin endpoint (`--admin-listen`): `/healthz`, `/readyz`, `/status`, `/metrics`.

Served by the supervisor with aiohttp, never by a worker's connection path (with
`--workers 1` there is no supervisor: the one process serves it on its own loop, beside its
listeners). Read-only: every method but GET is answered 405, and no endpoint changes
anything. Bodies are built from what the run registered in `Endpoints`; the routes here
only turn them into HTTP.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pac.addr import format_hostport
from proxy.fleet import Verdict

if TYPE_CHECKING:  # aiohttp is imported only where an admin endpoint is served
    from aiohttp import web

log = logging.getLogger("airgap.proxy")

PATHS = ("/healthz", "/readyz", "/status", "/metrics")


@dataclass(slots=True)
class Endpoints:
    """What each endpoint answers from. `refresh` runs first on every request (the single
    process brings its own report up to date there)."""

    health: Callable[[], Verdict]
    ready: Callable[[], Verdict]
    status: Callable[[], object]
    metrics: Callable[[], tuple[bytes, str]]  # (body, content type)
    refresh: Callable[[], None] | None = None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(endpoints: Endpoints) -> web.Application:
    from aiohttp import web

    @web.middleware
    async def read_only(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method != "GET":
            return web.Response(status=405, text="read-only: GET only\n", headers={"Allow": "GET"})
        if endpoints.refresh is not None:
            endpoints.refresh()
        return await handler(request)

    def verdict(check: Callable[[], Verdict]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            result = check()
            return web.Response(status=200 if result.ok else 503, text=result.reason + "\n")

        return handle

    async def status(_request: web.Request) -> web.Response:
        body = json.dumps(endpoints.status(), indent=2, sort_keys=False) + "\n"
        return web.Response(text=body, content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = endpoints.metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application(middlewares=[read_only], client_max_size=4096)
    app.router.add_get("/healthz", verdict(endpoints.health), allow_head=False)
    app.router.add_get("/readyz", verdict(endpoints.ready), allow_head=False)
    app.router.add_get("/status", status, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    return app


async def start(host: str, port: int, endpoints: Endpoints) -> web.AppRunner:
    """Listen on host:port (OSError when it cannot); `await runner.cleanup()` stops it."""
    from aiohttp import web

    where = format_hostport(host, port)
    if not is_loopback(host):
        log.warning(
            "admin endpoint on %s is reachable from outside this host: it shows the "
            "policy's shape (credentials redacted) and the metrics to whoever connects",
            where,
        )  # fmt: skip
    runner = web.AppRunner(make_app(endpoints), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("admin endpoint on http://%s (/healthz /readyz /status /metrics)", where)
    return runner


def render_registry(registry: object) -> tuple[bytes, str]:
    """The Prometheus text of a prometheus-client registry."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
