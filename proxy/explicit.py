"""The explicit proxy: an HTTP/1.1 forward-proxy listener for proxy-aware clients.

One `ExplicitConnection` per client connection. Each request head is read strictly
(`proxy.forward_head`), decided on its own by the worker's policy as it is at that moment
(`proxy.explicit_decide`, reading `ProxyContext.decider` per request, so a reloaded
policy applies to the next request), and then:

- `CONNECT host:port`: the route is opened with the transparent path's machinery
  (`proxy.upstream`, `rules.routing`), the client gets `200 Connection established`, and
  both sockets go to the same relay (`proxy.connection.hand_over`); one audit line when it
  ends.
- an absolute-form request: forwarded with h11 on both sides (hop-by-hop headers removed,
  `Host` rewritten to the URI's authority, `Via` added, bodies re-framed from what h11
  decoded), origin-form over DIRECT and SOCKS routes and absolute-form to an HTTP(S)
  upstream with its credentials; one audit line per request. The client connection is
  kept alive when both sides allow it, and the next request is decided afresh: an
  upstream connection is reused only for a request with the same decision's route, host
  and port.

Every refusal is an HTTP answer with a `Proxy-Status` (RFC 9209) and the connection
closed: 403 for REJECT (with the one-line reason), 502 when no route could be used, 504
when connecting timed out, 4xx for a malformed request. DIRECT never dials the proxy host's
own addresses nor its own listeners.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass

import h11

from pac.addr import format_hostport
from pac.addr import socket_ip as canonical_ip
from pac.routes import Route
from proxy import reject_wire
from proxy.audit import ConnectionRecord, emit
from proxy.connection import REJECT_DISCARD_LIMIT, REJECT_LINGER, Halves, ProxyContext, hand_over
from proxy.explicit_decide import decide_explicit, explicit_destination
from proxy.forward_head import MAX_HEAD_BYTES, ForwardRequest, HeadError, find_head_end
from proxy.forward_head import parse_request_head as _parse
from proxy.relay import Half
from proxy.splice_relay import SpliceHalf
from proxy.upstream import RouteFailed, open_direct, open_proxy, open_route
from rules import routing
from rules.model import Decision, Destination

log = logging.getLogger("airgap.proxy")

#: The `path` label and audit field of every request this front door serves.
PATH = "explicit"

#: Client bytes held before reading pauses (a head is at most 64 KiB; bodies stream).
READ_LIMIT = MAX_HEAD_BYTES + 4096
#: Response heads accepted from an upstream.
MAX_RESPONSE_HEAD = 64 * 1024

_VIA = ("1.1 " + reject_wire.PROXY_NAME).encode("ascii")
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

#: Request headers that are about one hop, or that the proxy writes itself.
_REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
        b"host",
        b"expect",
    }
)
#: Response headers that are about one hop; `Proxy-Authenticate` is the upstream's own.
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
    }
)


def connection_tokens(headers: Collection[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names a `Connection` header lists (they are hop-by-hop too)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(names)


def forward_headers(req: ForwardRequest, route: Route | None) -> list[tuple[bytes, bytes]]:
    """The headers sent on for `req` (pure): hop-by-hop ones and those `Connection` names
    removed, `Host` the URI's authority, the body's framing, `Via`, and the upstream's
    own `Proxy-Authorization` when `route` is an HTTP(S) proxy with credentials."""
    named = connection_tokens(req.headers)
    out = [(n, v) for n, v in req.headers if n not in _REQUEST_DROP and n not in named]
    host = req.authority if req.port != 80 else req.authority.rsplit(":", 1)[0]
    out.insert(0, (b"host", host.encode("ascii")))
    if req.content_length is not None:
        out.append((b"content-length", str(req.content_length).encode("ascii")))
    elif req.chunked:
        out.append((b"transfer-encoding", b"chunked"))
    out.append((b"via", _VIA))
    if route is not None and route.kind in ("PROXY", "HTTPS") and route.username is not None:
        token = f"{route.username}:{route.password or ''}".encode()
        out.append((b"proxy-authorization", b"Basic " + base64.b64encode(token)))
    return out


def response_headers(headers: Collection[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An upstream response's headers as the client gets them (pure): hop-by-hop ones,
    those `Connection` names and `Proxy-Authenticate` removed, `Via` added."""
    named = connection_tokens(headers)
    out = [(n, v) for n, v in headers if n not in _RESPONSE_DROP and n not in named]
    out.append((b"via", _VIA))
    return out


@dataclass(slots=True)
class ExplicitFront:
    """What the explicit listeners of one worker share: the worker's context (policy,
    resolver, connect options, limits) and the proxy's own listening addresses, which
    DIRECT never dials."""

    ctx: ProxyContext
    #: (ip, port) of every listening socket of this proxy, transparent and explicit.
    listeners: frozenset[tuple[str, int]] = frozenset()
    #: Ports listened on at a wildcard address (`0.0.0.0`, `::`): any local address.
    wildcard_ports: frozenset[int] = frozenset()
    stopping: bool = False

    def own_listener(self, ip: str, port: int) -> bool:
        """True when `ip:port` is one of the proxy's own listening sockets."""
        if (ip, port) in self.listeners:
            return True
        return port in self.wildcard_ports and _is_local_address(ip)


def _is_local_address(ip: str) -> bool:
    """Whether `ip` is an address of this host (it can be bound to)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


class _Peer(asyncio.Protocol):
    """The upstream side of an absolute-form exchange: bytes in a buffer, a waiter for
    more, and write backpressure."""

    __slots__ = ("buf", "eof", "lost", "paused", "transport", "waiter")

    def __init__(self, transport: asyncio.Transport, pending: bytearray) -> None:
        self.transport = transport
        self.buf = bytearray(pending)
        self.eof = False
        self.lost = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        transport.set_protocol(self)
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= READ_LIMIT:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something happens (data, EOF, loss, or writing may go on); TimeoutError
        after `timeout` seconds of nothing."""
        if self.eof:
            return
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.resume_reading()
        async with asyncio.timeout(timeout):
            await waiter

    def take(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def drain(self, timeout: float) -> None:
        while self.paused and not self.lost:
            await self.wait(timeout)


@dataclass(slots=True)
class _Kept:
    """An upstream connection kept between requests, and what it may be reused for."""

    key: tuple[object, ...]
    peer: _Peer
    conn: h11.Connection
    route: Route
    label: Route | str | None
    dst_ip: str


class _Answered(Exception):
    """The request was answered (or the client is gone): the connection is ending."""


class _ClientError(Exception):
    """The client's request body was malformed (answered 400 when nothing was sent yet)."""


class _ClientTimeout(Exception):
    """The client sent nothing for `--idle-timeout` in the middle of a request."""


class ExplicitConnection(asyncio.Protocol):
    """One client connection of the explicit proxy (see the module doc)."""

    def __init__(self, front: ExplicitFront) -> None:
        self.front = front
        self.ctx = front.ctx
        self.buf = bytearray()
        self.eof = False
        self.lost = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.halves: Halves | None = None
        self.record: ConnectionRecord | None = None
        self.kept: _Kept | None = None
        self.discarding = False
        self.discarded = 0
        self.closing_timer: asyncio.TimerHandle | None = None
        self.idle_total = -1
        self.idle_since = 0.0
        self.between_requests = False
        self.client_ip = "?"
        self.client_port = 0
        self.done = False

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip, self.client_port = canonical_ip(peer[0]), peer[1]
        ctx = self.ctx
        ctx.active.add(self)
        if len(ctx.active) > ctx.max_connections:
            self.record = self._new_record()
            self.record.error = "refused: over --max-connections"
            self._reset()
            return
        self.task = (ctx.loop or asyncio.get_running_loop()).create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            self.discarded += len(data)
            if self.discarded > REJECT_DISCARD_LIMIT:
                self.transport.abort()
            return
        self.buf += data
        if len(self.buf) >= READ_LIMIT:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        if self.discarding:
            self.transport.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        elif self.halves is None:
            self._finish()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._wake()

    paused_writing = False

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = (self.ctx.loop or asyncio.get_running_loop()).create_future()
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        await self.waiter

    async def _drain(self) -> None:
        while self.paused_writing and not self.lost:
            await self._wait_client()

    async def _wait_client(self) -> None:
        """`_wait`, bounded by `--idle-timeout` (`_ClientTimeout`) in the middle of a request."""
        timeout = self.ctx.config.idle_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._wait()
        except TimeoutError:
            raise _ClientTimeout(f"the client sent nothing for {timeout:g}s") from None

    # ----------------------------------------------------------------- requests

    def _new_record(self) -> ConnectionRecord:
        return ConnectionRecord(self.client_ip, self.client_port, path="explicit", method="")

    async def _serve(self) -> None:
        """Read, decide and answer requests until the connection ends."""
        try:
            while not self.lost:
                head = await self._read_head()
                if head is None:
                    break
                self.record = record = self._new_record()
                try:
                    req = _parse(head)
                except HeadError as exc:
                    record.status = exc.status
                    record.reason = record.error = str(exc)
                    self._answer_error(exc.status, exc.error, "", str(exc))
                    return
                record.method, record.host, record.port = req.method, req.host, req.port
                record.hostname = None if req.is_ip else req.host
                if req.is_connect:
                    await self._tunnel(req, record)
                    return
                if not await self._forward(req, record, head):
                    return
                self._emit()
        except _Answered:
            return
        except asyncio.CancelledError:
            if self.record is not None and self.record.status is None:
                self.record.error = self.record.error or "client closed"
            raise
        except Exception as exc:
            log.exception("explicit proxy request failed")
            if self.record is not None:
                self.record.error = f"internal error: {type(exc).__name__}: {exc}"
            self._reset()
        finally:
            if self.halves is None:
                self._drop_kept()
                if not self.discarding and not self.transport.is_closing():
                    self.transport.close()
                self._finish()

    async def _read_head(self) -> bytes | None:
        """The next complete request head, or None when the client ended cleanly between
        requests (or the worker is stopping and the client is idle)."""
        timeout = self.ctx.config.idle_timeout
        self.between_requests = not self.buf
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        end = find_head_end(self.buf)
                    except HeadError as exc:
                        self.record = self._new_record()
                        self.record.status = exc.status
                        self.record.reason = self.record.error = str(exc)
                        self._answer_error(exc.status, exc.error, "", str(exc))
                        raise _Answered from None
                    if end > 0:
                        head = bytes(self.buf[:end])
                        del self.buf[:end]
                        return head
                    if self.eof or (self.front.stopping and not self.buf):
                        if self.buf.strip(b"\r\n"):
                            self.record = self._new_record()
                            self.record.error = "client closed in a request head"
                            self._emit()
                        return None
                    await self._wait()
                    if self.buf:
                        self.between_requests = False
        except TimeoutError:
            if self.buf:
                self.record = self._new_record()
                self.record.error = f"no complete request head in {timeout:g}s"
                self._emit()
            return None
        finally:
            self.between_requests = False

    async def _decide(
        self, req: ForwardRequest, record: ConnectionRecord
    ) -> tuple[Destination, Decision, str | None]:
        dest = explicit_destination(req.host, req.port, req.is_ip, self.client_ip)
        ctx = self.ctx
        # The decider is read here, per request: a reloaded policy applies to the next one.
        explicit = await decide_explicit(ctx.decider, ctx.resolver, dest)
        decision = explicit.decision
        record.decision, record.reason = decision.action, decision.reason
        if decision.action == "REJECT" or not decision.routes:
            record.decision = "REJECT"
            record.status = 403
            self._answer_error(403, "http_request_denied", req.host, decision.reason)
            raise _Answered
        return dest, decision, explicit.pinned

    async def _open(
        self,
        req: ForwardRequest,
        record: ConnectionRecord,
        dest: Destination,
        decision: Decision,
        pinned: str | None,
        tunnel: bool,
    ) -> tuple[asyncio.Transport, bytearray, Route]:
        """Open the decision's routes in turn, as the transparent path does; answers the
        client and raises `_Answered` when none can be used."""
        ctx = self.ctx
        errors: list[str] = []
        refusals = 0
        not_found = False
        timed_out = False
        health = ctx.bad_proxies
        for route in health.order(decision.routes):
            addrs: tuple[str, ...] = ()
            if route.kind == "DIRECT":
                if pinned is not None:
                    addrs = (pinned,)
                elif dest.hostname is None:
                    addrs = (dest.ip,)
                else:
                    addrs = await self._addresses(dest.hostname)
            choice = routing.explicit_target(route, dest, addrs, self.front.own_listener)
            if isinstance(choice, routing.Refusal):
                errors.append(choice.reason)
                refusals += 1
                not_found = not_found or not addrs
                continue
            target = choice.host
            try:
                if route.kind == "DIRECT":
                    upstream, leftover = await open_direct(target, dest.port, ctx.connect, ctx.loop)
                elif tunnel or route.kind not in ("PROXY", "HTTPS"):
                    upstream, leftover = await open_route(route, target, dest.port, ctx.connect)
                else:
                    upstream, leftover = await open_proxy(route, ctx.connect)
            except RouteFailed as exc:
                log.warning("route failed for %s: %s", dest.url, exc)
                errors.append(str(exc))
                timed_out = exc.timed_out
                failover = routing.after_failure(exc.kind)
                if failover.mark_bad:
                    health.failed(route)
                    ctx.metrics.upstream_failed(route.kind)
                elif failover.mark_working:
                    health.worked(route)
                if failover.try_next:
                    continue
                ending = routing.refused_by_upstream(decision, str(exc), errors)
                record.kind = "upstream_refused"
                record.route, record.decision = route, "REJECT"
                record.reason, record.error, record.status = ending.reason, ending.error, 403
                self._answer_error(403, "http_request_denied", req.host, ending.reason)
                raise _Answered from None
            health.worked(route)
            if self.lost:
                upstream.abort()
                record.error = "client closed during set-up"
                raise _Answered
            if route.kind == "DIRECT":
                record.dst_ip, record.dst_port = target, dest.port
                record.route = f"DIRECT {format_hostport(target, dest.port)}"
            else:
                record.route = route
            if errors:
                record.error = "; ".join(errors)
            return upstream, leftover, route
        ending = routing.exhausted(decision, errors, refusals)
        record.error = ending.error
        if decision.then_reject:
            status, error, why = 403, "http_request_denied", ending.reason
        elif refusals == len(errors):
            status = 502 if not_found else 403
            error = "destination_not_found" if not_found else "destination_ip_prohibited"
            why = ending.error
        elif timed_out:
            status, error, why = 504, "connection_timeout", ending.error
        else:
            status, error, why = 502, "destination_unavailable", ending.error
        record.decision = "REJECT" if status == 403 else record.decision
        record.status = status
        self._answer_error(status, error, req.host, why)
        raise _Answered

    async def _addresses(self, name: str) -> tuple[str, ...]:
        addrs = self.ctx.resolver.peek(name)
        if addrs is None:
            addrs = await self.ctx.resolver.resolve(name)
        return addrs

    # ----------------------------------------------------------------- CONNECT

    async def _tunnel(self, req: ForwardRequest, record: ConnectionRecord) -> None:
        dest, decision, pinned = await self._decide(req, record)
        upstream, leftover, _route = await self._open(req, record, dest, decision, pinned, True)
        self.transport.write(_ESTABLISHED)
        record.status = 200
        held, self.buf = bytes(self.buf), bytearray()
        if self.record is not None:
            self.ctx.metrics.setup_done(time.monotonic() - self.record.monotonic_start)
        self.halves = hand_over(
            self.transport,
            upstream,
            held,
            leftover,
            self,
            self.ctx.config.splice,
            self.eof,
        )

    def half_lost(self, half: Half | SpliceHalf, exc: Exception | None) -> None:
        self.lost_halves += 1
        other = half.peer.transport
        if not other.is_closing():
            other.close()
        halves = self.halves
        if self.lost_halves >= 2 and halves is not None:
            if self.record is not None:
                self.record.bytes_up = halves[0].nbytes
                self.record.bytes_down = halves[1].nbytes
            self._finish()

    lost_halves = 0

    # ----------------------------------------------------------------- absolute-form

    async def _forward(self, req: ForwardRequest, record: ConnectionRecord, head: bytes) -> bool:
        """One absolute-form exchange; True when the client connection stays open."""
        dest, decision, pinned = await self._decide(req, record)
        key: tuple[object, ...] = (decision.routes, pinned, dest.host, dest.port)
        kept, self.kept = self.kept, None
        if kept is not None and (kept.key != key or kept.peer.eof or kept.peer.lost):
            kept.peer.transport.close()
            kept = None
        if kept is None:
            upstream, leftover, route = await self._open(req, record, dest, decision, pinned, False)
            kept = _Kept(
                key,
                _Peer(upstream, leftover),
                h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD),
                route,
                record.route,
                record.dst_ip,
            )
        else:
            record.route, record.dst_ip = kept.label, kept.dst_ip
            record.dst_port = dest.port if kept.dst_ip else 0
        peer, up = kept.peer, kept.conn
        origin = kept.route.kind not in ("PROXY", "HTTPS")
        client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        client.receive_data(head)
        if not isinstance(client.next_event(), h11.Request):  # parsed once already
            raise RuntimeError("h11 did not read an accepted head")
        target = req.path if origin else f"http://{req.authority}{req.path}"
        request = h11.Request(
            method=req.method,
            target=target,
            headers=forward_headers(req, None if origin else kept.route),
        )
        try:
            out = up.send(request) or b""
            peer.transport.write(out)
            record.bytes_up += len(out)
            if client.they_are_waiting_for_100_continue:
                go_on = h11.InformationalResponse(status_code=100, headers=[])
                self.transport.write(client.send(go_on) or b"")
            try:
                await self._send_body(client, up, peer, record)
            except h11.RemoteProtocolError as exc:
                raise _ClientError(f"malformed request body: {exc}") from None
            await self._relay_response(client, up, peer, record, req)
        except (_ClientError, _ClientTimeout) as exc:
            peer.transport.abort()
            status = 408 if isinstance(exc, _ClientTimeout) else 400
            if record.status is None:
                record.error = str(exc)
                self._answer_error(status, "http_request_error", req.host, str(exc))
                raise _Answered from None
            record.error = str(exc)
            self._reset()
            return False
        except (TimeoutError, h11.ProtocolError) as exc:
            peer.transport.abort()
            if isinstance(exc, TimeoutError):
                why = f"no answer from the upstream in {self.ctx.config.idle_timeout:g}s"
                status, error = 504, "http_response_timeout"
            else:
                why = f"malformed answer from the upstream: {exc}"
                status, error = 502, "http_protocol_error"
            record.error = why
            if record.status is None:
                self._answer_error(status, error, req.host, why)
                raise _Answered from None
            self._reset()
            return False
        if up.our_state is h11.DONE and up.their_state is h11.DONE and not peer.buf:
            up.start_next_cycle()
            self.kept = kept
        else:
            peer.transport.close()
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            rest, _closed = client.trailing_data
            self.buf[:0] = rest
            return True
        return False

    async def _send_body(
        self,
        client: h11.Connection,
        up: h11.Connection,
        peer: _Peer,
        record: ConnectionRecord,
    ) -> None:
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                if self.buf:
                    client.receive_data(bytes(self.buf))
                    self.buf.clear()
                elif self.eof:
                    client.receive_data(b"")
                else:
                    await self._wait_client()
                continue
            if isinstance(event, h11.Data):
                out = up.send(h11.Data(data=bytes(event.data))) or b""
            elif isinstance(event, h11.EndOfMessage):
                out = up.send(h11.EndOfMessage()) or b""
            else:
                raise _ClientError("the client closed in the request body")
            peer.transport.write(out)
            record.bytes_up += len(out)
            await peer.drain(self.ctx.config.idle_timeout)
            if isinstance(event, h11.EndOfMessage):
                return

    async def _relay_response(
        self,
        client: h11.Connection,
        up: h11.Connection,
        peer: _Peer,
        record: ConnectionRecord,
        req: ForwardRequest,
    ) -> None:
        """The upstream's answer, passed on to the client."""
        timeout = self.ctx.config.idle_timeout
        while True:
            event = up.next_event()
            if event is h11.NEED_DATA:
                if peer.buf:
                    up.receive_data(peer.take())
                elif peer.eof:
                    up.receive_data(b"")
                else:
                    await peer.wait(timeout)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx: the proxy answered 100-continue itself; others are dropped
            if isinstance(event, h11.Response):
                if event.status_code == 407:
                    why = "the upstream proxy asked for credentials (407)"
                    record.error = why
                    peer.transport.abort()
                    self._answer_error(502, "proxy_configuration_error", req.host, why)
                    raise _Answered
                record.status = event.status_code
                out = client.send(
                    h11.Response(
                        status_code=event.status_code,
                        headers=response_headers(event.headers),
                        reason=event.reason,
                    )
                )
            elif isinstance(event, h11.Data):
                out = client.send(h11.Data(data=bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                out = client.send(h11.EndOfMessage())
            else:  # ConnectionClosed before the end of the message
                raise h11.RemoteProtocolError("upstream closed before the end of the answer")
            if out:
                self.transport.write(out)
                record.bytes_down += len(out)
            await self._drain()
            if self.lost:
                raise _Answered
            if isinstance(event, h11.EndOfMessage):
                return

    # ----------------------------------------------------------------- endings

    def _answer_error(self, status: int, error: str, host: str, message: str) -> None:
        """Answer `status` with a Proxy-Status and close, reading and dropping what the
        client still sends for a moment (so the answer is not lost to a reset)."""
        if self.record is not None:
            self.record.status = status
            if status == 403:
                self.record.decision = "REJECT"
        self._emit()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(reject_wire.proxy_error(status, error, host, message))
        self.discarding = True
        self.buf.clear()
        if transport.can_write_eof():
            transport.write_eof()
        if self.paused:
            self.paused = False
            transport.resume_reading()
        loop = self.ctx.loop or asyncio.get_running_loop()
        self.closing_timer = loop.call_later(REJECT_LINGER, transport.close)

    def _reset(self) -> None:
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        transport.abort()

    def _drop_kept(self) -> None:
        kept, self.kept = self.kept, None
        if kept is not None:
            kept.peer.transport.close()

    def _emit(self) -> None:
        record, self.record = self.record, None
        if record is not None:
            if not record.decision:
                record.decision = "REJECT"
            self.ctx.metrics.connection_ended(
                PATH, record.decision, record.kind, record.bytes_up, record.bytes_down,
                time.monotonic() - record.monotonic_start,
            )  # fmt: skip
            emit(record, self.ctx.config.json_logs)

    def in_flight(self) -> tuple[str, int, int] | None:
        halves = self.halves
        return None if halves is None else (PATH, halves[0].nbytes, halves[1].nbytes)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.ctx.active.discard(self)
        self.halves = None
        self._emit()

    # ----------------------------------------------------------------- worker hooks

    def check_idle(self, now: float, idle_timeout: float) -> None:
        """The idle sweep: a CONNECT relay that moved no byte for `idle_timeout` is cut (the
        request phase bounds its own waits)."""
        halves = self.halves
        if halves is None:
            return
        total = halves[0].nbytes + halves[1].nbytes
        if total != self.idle_total:
            self.idle_total, self.idle_since = total, now
        elif now - self.idle_since >= idle_timeout:
            if self.record is not None:
                self.record.error = f"idle for {idle_timeout:g}s"
            for half in halves:
                half.transport.abort()

    def abort(self, why: str) -> None:
        """Cut the connection now (drain timeout at shutdown)."""
        if self.record is not None:
            self.record.error = self.record.error or why
        if self.halves is not None:
            for half in self.halves:
                half.transport.abort()
            return
        self._drop_kept()
        self.transport.abort()

    def stop_if_idle(self) -> None:
        """At shutdown: a keep-alive connection waiting for its next request ends now."""
        if self.between_requests and not self.buf:
            self._wake()


def stop_idle(front: ExplicitFront) -> None:
    """At shutdown: no new request is read; idle keep-alive connections end now."""
    front.stopping = True
    for conn in list(front.ctx.active):
        if isinstance(conn, ExplicitConnection):
            conn.stop_if_idle()
