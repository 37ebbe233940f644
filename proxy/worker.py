"""Listeners, the idle sweep, and graceful stop for one worker process.

SIGTERM/SIGINT stop accepting at once (the listening sockets close, so new connections are
refused); relays already open keep flowing until they end or `--drain-timeout` passes, then
the rest are cut.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Container, Coroutine, Sequence

from pac.addr import format_hostport, socket_ip
from proxy.config import RunConfig
from proxy.connection import Intercepted, ProxyContext
from proxy.control import STOP_SIGNALS
from proxy.explicit import ExplicitConnection, ExplicitFront, stop_idle
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


async def _listen(
    settings: RunConfig,
    addresses: Sequence[tuple[str, int]],
    factory: Callable[[], asyncio.BaseProtocol],
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    for host, port in addresses:
        try:
            if host in ("::", "0:0:0:0:0:0:0:0"):
                server = await loop.create_server(
                    factory, sock=_dual_stack_socket(port, settings.reuse_port)
                )
            else:
                server = await loop.create_server(
                    factory,
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
    ready: asyncio.Event | None = None,
    context_jobs: Sequence[Callable[[ProxyContext], Background]] = (),
    on_context: Callable[[ProxyContext], None] | None = None,
    bad_proxies: BadProxies | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT, then drain. Returns the exit status.

    `background` coroutines (PAC refresh, the supervisor's control pipe) run while the
    worker serves; each gets the stop event, so it can also end the worker. They start
    before the listeners, and with `ready` the listeners open only once it is set: a
    worker started beside others joins their SO_REUSEPORT group only when its policy is in
    force, so until then the kernel gives every connection to the others.
    `context_jobs` are made from the worker's context once its listeners are open (the
    report to the supervisor, or the admin endpoint of a single process), and run the same.
    `on_context` gets the connections' shared context before the first one, to swap the
    policy in it later (a reload).
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
    tasks = [loop.create_task(job(stop)) for job in background]
    if ready is not None:
        await _first(ready, stop)
    if stop.is_set():  # stopped before it was ready: nothing was accepted, nothing to drain
        await _cancel(tasks)
        log.info("stopped")
        return 0
    front = ExplicitFront(ctx)
    try:
        servers = await _listen(settings, settings.listen, lambda: Intercepted(ctx))
        servers += await _listen(
            settings, settings.explicit_listen, lambda: ExplicitConnection(front)
        )
    except OSError as exc:
        print(f"airgap-proxy: cannot listen: {exc}", file=sys.stderr)
        await _cancel(tasks)
        return 1
    if not servers:
        print("airgap-proxy: no listener could be opened", file=sys.stderr)
        await _cancel(tasks)
        return 1
    own: set[tuple[str, int]] = set()
    wildcard: set[int] = set()
    for server in servers:
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            own.add((socket_ip(host), port))
            if ipaddress.ip_address(socket_ip(host)).is_unspecified:
                wildcard.add(port)
            log.info("listening on %s", format_hostport(host, port))
    for host, port in settings.explicit_listen:
        log.info("explicit proxy on %s", format_hostport(host, port))
    front.listeners, front.wildcard_ports = frozenset(own), frozenset(wildcard)
    sweep_every = max(0.5, min(settings.idle_timeout / 4, 15.0))

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            ctx.sweep_idle()

    tasks.append(loop.create_task(sweeper()))
    tasks += [loop.create_task(make(ctx)(stop)) for make in context_jobs]
    await stop.wait()
    log.info("stopping: no new connections; draining %d open ones", len(ctx.active))
    for server in servers:
        server.close()
    stop_idle(front)
    deadline = time.monotonic() + settings.drain_timeout
    while ctx.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(ctx.active):
        conn.abort("cut at the end of the drain timeout")
    ctx.peeking.close()
    await asyncio.sleep(0)
    await _cancel(tasks)
    log.info("stopped")
    return 0


async def _first(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
