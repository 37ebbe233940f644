"""Listeners, the idle sweep, and graceful stop for one worker process.

SIGTERM/SIGINT stop accepting at once (the listening sockets close, so new connections are
refused); relays already open keep flowing until they end or `--drain-timeout` passes, then
the rest are cut.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Container, Coroutine, Sequence

from pac.addr import format_hostport
from proxy.config import RunConfig
from proxy.connection import Intercepted, ProxyContext
from proxy.control import STOP_SIGNALS
from proxy.resolver import NameResolver
from proxy.route_health import BadProxies
from proxy.upstream import ConnectOptions
from rules.model import Decider

log = logging.getLogger("airgap.proxy")


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """TLS to HTTPS proxies: verified against the system store or `--ca-bundle`."""
    return ssl.create_default_context(cafile=ca_bundle)


def _dual_stack_socket(port: int, reuse_port: bool) -> socket.socket:
    """`[::]:port` takes IPv4 too (as IPv4-mapped addresses), which asyncio would turn off."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _listen(settings: RunConfig, ctx: ProxyContext) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    for host, port in settings.listen:
        try:
            if host in ("::", "0:0:0:0:0:0:0:0"):
                server = await loop.create_server(
                    lambda: Intercepted(ctx), sock=_dual_stack_socket(port, settings.reuse_port)
                )
            else:
                server = await loop.create_server(
                    lambda: Intercepted(ctx),
                    host,
                    port,
                    backlog=1024,
                    reuse_port=settings.reuse_port or None,
                )
        except OSError as exc:
            no_ipv6 = exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
            if settings.listen_is_default and ":" in host and no_ipv6:
                log.warning("no IPv6 on this host: not listening on [%s]:%d", host, port)
                continue
            raise
        servers.append(server)
    return servers


Background = Callable[[asyncio.Event], Coroutine[None, None, None]]


async def serve(
    settings: RunConfig,
    decider: Decider,
    transparent_ports: Container[int],
    resolver: NameResolver | None = None,
    background: Sequence[Background] = (),
    on_context: Callable[[ProxyContext], None] | None = None,
    bad_proxies: BadProxies | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT, then drain. Returns the exit status.

    `background` coroutines (PAC refresh, the supervisor's control pipe) run while the
    worker serves; each gets the stop event, so it can also end the worker. `on_context`
    gets the connections' shared context before the first one, to swap the policy in it
    later (a reload).
    """
    loop = asyncio.get_running_loop()
    ctx = ProxyContext(
        decider=decider,
        transparent_ports=transparent_ports,
        connect=ConnectOptions(
            timeout=settings.connect_timeout,
            mark=settings.mark,
            ssl_context=_ssl_context(settings.ca_bundle),
        ),
        resolver=resolver or NameResolver(),
        config=settings,
        bad_proxies=bad_proxies if bad_proxies is not None else BadProxies(settings.bad_proxy_ttl),
    )
    if on_context is not None:
        on_context(ctx)
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    # A worker starts with these blocked (proxy.supervisor): one sent early is handled now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        servers = await _listen(settings, ctx)
    except OSError as exc:
        print(f"airgap-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    if not servers:
        print("airgap-proxy: no listener could be opened", file=sys.stderr)
        return 1
    for server in servers:
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            log.info("listening on %s", format_hostport(host, port))
    sweep_every = max(0.5, min(settings.idle_timeout / 4, 15.0))

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            ctx.sweep_idle()

    tasks = [loop.create_task(sweeper())]
    tasks += [loop.create_task(job(stop)) for job in background]
    await stop.wait()
    log.info("stopping: no new connections; draining %d open ones", len(ctx.active))
    for server in servers:
        server.close()
    deadline = time.monotonic() + settings.drain_timeout
    while ctx.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(ctx.active):
        conn.abort("cut at the end of the drain timeout")
    ctx.peeking.close()
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")
    return 0
