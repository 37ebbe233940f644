"""Opening one route: DIRECT to an address, or a tunnel through an HTTP CONNECT / SOCKS proxy.

Each attempt returns a connected transport whose reading is paused, plus any bytes the
upstream already sent past its handshake reply, so the caller can switch it to the relay
without losing a byte. The proxy's own sockets carry `--mark` (SO_MARK) when configured, so
the redirect rules can exclude them: the proxy never loops into itself.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pac.routes import Route
from proxy import handshake as hs
from proxy.config import DEFAULTS
from rules.routing import INAPPLICABLE, REFUSED, UNUSABLE, FailureKind


class RouteFailed(Exception):
    """A route could not be used; the message says why, `kind` what follows
    (`rules.routing.after_failure`): the next route for an unusable or inapplicable one, a
    REJECT when the upstream answered with a refusal."""

    def __init__(self, message: str, kind: FailureKind = UNUSABLE, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        #: No answer within `--connect-timeout` (the explicit proxy answers 504 for it).
        self.timed_out = timed_out


def _kind(exc: hs.HandshakeError) -> FailureKind:
    return REFUSED if isinstance(exc, hs.UpstreamRefused) else UNUSABLE


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What every upstream connection shares."""

    timeout: float = DEFAULTS.connect_timeout
    mark: int | None = None
    ssl_context: ssl.SSLContext | None = None


class _Held(asyncio.Protocol):
    """Holds a fresh upstream transport until the relay takes it over.

    uvloop starts reading after `connection_made` returns, so a pause there is ignored:
    whatever arrives before the relay takes over is kept in `pending` (and reading paused
    then), never dropped.
    """

    __slots__ = ("pending", "transport")

    def __init__(self) -> None:
        self.pending = bytearray()

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport: `create_connection` makes nothing else.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        # The upstream half-closed (a receive-only server does at once): keep the other
        # direction. The relay reads the EOF again when it resumes reading (a read after
        # EOF returns it again) and passes it on after `pending`. Returning False here
        # closed the socket, and the client's bytes were dropped while it saw a clean end.
        return True


class _Handshaking(_Held):
    """Runs a sans-IO upstream handshake (`proxy.handshake`) over a transport."""

    __slots__ = ("done", "handshake")

    def __init__(self, handshake: hs.UpstreamHandshake, done: asyncio.Future[None]) -> None:
        super().__init__()
        self.handshake = handshake
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.write(self.handshake.start())

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            # Cancelled (the client left while the reply was on its way): the transport is
            # being aborted. `exception()` would raise CancelledError out of this callback.
            if not self.done.cancelled() and self.done.exception() is None:
                super().data_received(data)
            return
        try:
            step = self.handshake.receive(data)
        except hs.HandshakeError as exc:
            self.done.set_exception(RouteFailed(str(exc), _kind(exc)))
            self.transport.close()
            return
        if step.send:
            self.transport.write(step.send)
        if step.done:
            self.pending += step.leftover
            self.transport.pause_reading()
            self.done.set_result(None)

    def eof_received(self) -> bool:
        # Before the reply: a failed handshake (close). After it: a half-closed tunnel.
        done = self.done
        return done.done() and not done.cancelled() and done.exception() is None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RouteFailed("upstream closed during the handshake"))


def _connect_started(sock: socket.socket, addr: tuple[Any, ...]) -> bool:
    """Start connecting a non-blocking socket; True when the handshake is already done.

    On loopback and other fast paths the kernel completes the handshake inside `connect()`
    itself: `getpeername()` tells, and then no writer has to be registered and waited for.
    Raises OSError when the connect failed at once.
    """
    err = sock.connect_ex(addr)
    if err == 0:
        return True
    if err != errno.EINPROGRESS:
        raise OSError(err, os.strerror(err))
    try:
        sock.getpeername()  # ENOTCONN while the handshake is still under way
    except OSError:
        return False
    return True


async def _connect_finished(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until a started connect is done; raises OSError when it failed."""
    fd = sock.fileno()
    writable: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _wake, writable)
    try:
        await writable
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _new_socket(family: int, type_: int, proto: int, mark: int | None) -> socket.socket:
    """A non-blocking TCP socket, marked (`--mark`) before its SYN so that the redirect
    rules let the proxy's own traffic pass."""
    sock = socket.socket(family, type_ | socket.SOCK_NONBLOCK, proto)
    if mark is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except BaseException:
            sock.close()
            raise
    return sock


def _why(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _numeric(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """An IP literal's address without a resolver round trip (DIRECT always has one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None
    addr = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)]


async def _connect(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    opts: ConnectOptions,
    use_tls: bool = False,
) -> asyncio.Transport:
    """TCP (optionally TLS) connect to a proxy, trying each of its addresses in turn.

    The same socket path with and without a mark: uvloop's own `create_connection(host,
    port)` measured slower than this one (README, Benchmarks).
    """
    loop = asyncio.get_running_loop()
    tls = (opts.ssl_context or ssl.create_default_context()) if use_tls else None
    server_hostname = host if use_tls else None
    infos = _numeric(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"{host} does not resolve")
    for family, type_, proto, _canon, addr in infos:
        sock = _new_socket(family, type_, proto, opts.mark)
        try:
            if not _connect_started(sock, addr):
                await _connect_finished(loop, sock)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        transport, _ = await loop.create_connection(
            factory,
            sock=sock,
            ssl=tls,
            server_hostname=server_hostname,
        )
        return transport
    raise last


def _handshake_for(route: Route, host: str, port: int) -> hs.UpstreamHandshake:
    if route.kind in ("PROXY", "HTTPS"):
        return hs.http_connect(host, port, route.username, route.password)
    if route.kind == "SOCKS5":
        return hs.socks5(host, port, route.username, route.password)
    return hs.socks4(host, port)


async def open_route(
    route: Route, target_host: str, target_port: int, opts: ConnectOptions
) -> tuple[asyncio.Transport, bytearray]:
    """Connect one route to `target_host:target_port`; raises RouteFailed.

    Returns the transport and the live buffer of bytes the upstream sent past its handshake
    (it may still grow until the relay takes the transport over: read it then).
    For DIRECT `target_host` must be an IP (the caller decided which one is safe); proxies
    get the hostname when one is known, so the upstream resolves it.
    """
    if route.kind == "DIRECT":
        return await open_direct(target_host, target_port, opts)
    try:
        async with asyncio.timeout(opts.timeout):
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            handshake = _handshake_for(route, target_host, target_port)
            shaking = _Handshaking(handshake, done)
            transport = await _connect(
                lambda: shaking,
                route.host,
                route.port,
                opts,
                use_tls=route.kind == "HTTPS",
            )
            try:
                await done
            except BaseException:
                transport.abort()
                raise
            return transport, shaking.pending
    except TimeoutError:
        raise RouteFailed(f"{route} timed out after {opts.timeout:g}s", timed_out=True) from None
    except hs.HandshakeError as exc:  # raised at construction (e.g. SOCKS4 to IPv6)
        raise RouteFailed(f"{route}: {exc}", INAPPLICABLE) from None
    except RouteFailed as exc:
        raise RouteFailed(f"{route}: {exc}", exc.kind) from None
    except ssl.SSLError as exc:
        raise RouteFailed(f"{route}: TLS: {exc.reason or exc}") from None
    except OSError as exc:
        raise RouteFailed(f"{route}: {_why(exc)}") from None
    except ValueError as exc:  # UnicodeError: a PAC-given host IDNA cannot encode
        raise RouteFailed(f"{route}: unusable host name: {exc}") from None


async def open_proxy(route: Route, opts: ConnectOptions) -> tuple[asyncio.Transport, bytearray]:
    """A connection to an HTTP (`PROXY`) or TLS (`HTTPS`) proxy itself, with no tunnel: the
    explicit proxy sends it absolute-form requests. Raises RouteFailed (unusable, or
    timed out after `opts.timeout`); returns what `open_route` returns."""
    try:
        async with asyncio.timeout(opts.timeout):
            held = _Held()
            transport = await _connect(
                lambda: held, route.host, route.port, opts, use_tls=route.kind == "HTTPS"
            )
            return transport, held.pending
    except TimeoutError:
        raise RouteFailed(f"{route} timed out after {opts.timeout:g}s", timed_out=True) from None
    except ssl.SSLError as exc:
        raise RouteFailed(f"{route}: TLS: {exc.reason or exc}") from None
    except OSError as exc:
        raise RouteFailed(f"{route}: {_why(exc)}") from None
    except ValueError as exc:
        raise RouteFailed(f"{route}: unusable host name: {exc}") from None


async def open_direct(
    ip: str, port: int, opts: ConnectOptions, loop: asyncio.AbstractEventLoop | None = None
) -> tuple[asyncio.Transport, bytearray]:
    """DIRECT to `ip:port`; raises RouteFailed. Returns what `open_route` returns.

    Every new connection takes this path, so it is kept flat: the socket is made, marked and
    connected here, and the timeout is armed only when the handshake did not finish inside
    `connect()` (on loopback it does; `asyncio.timeout` costs as much as the rest of this).
    `ip` must be an address: the caller chose which one is safe, and nothing here resolves.
    `loop`: the running loop, when the caller has it at hand (looking it up costs a syscall).
    """
    infos = _numeric(ip, port)
    if infos is None:
        raise RouteFailed(f"DIRECT: {ip!r} is not an IP address")
    family, type_, proto, _canon, addr = infos[0]
    try:
        sock = _new_socket(family, type_, proto, opts.mark)
    except OSError as exc:
        raise RouteFailed(f"DIRECT: {_why(exc)}") from None
    try:
        loop = loop or asyncio.get_running_loop()
        if not _connect_started(sock, addr):
            async with asyncio.timeout(opts.timeout):
                await _connect_finished(loop, sock)
        held = _Held()
        transport, _ = await loop.create_connection(lambda: held, sock=sock)
    except TimeoutError:
        sock.close()
        raise RouteFailed(f"DIRECT timed out after {opts.timeout:g}s", timed_out=True) from None
    except OSError as exc:
        sock.close()
        raise RouteFailed(f"DIRECT: {_why(exc)}") from None
    except BaseException:
        sock.close()
        raise
    return transport, held.pending
