"""One intercepted connection: original destination → sniff → decide → connect → relay → log.

The accepted transport starts with an `Intercepted` protocol that runs the set-up phase; once
a route is connected, both transports are handed to the relay halves (`proxy.relay`) and
this object only waits for them to finish, then writes the audit line. Every failure on the
way fails closed: no original destination, a policy error, an unusable name, or a route that
cannot be opened never turns into an unchecked connection.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Protocol

from pac.addr import socket_ip as canonical_ip
from proxy import reject_wire
from proxy import shadow as shadow_mod
from proxy.audit import UNDECIDED, ConnectionRecord, emit
from proxy.config import DEFAULTS, RunConfig
from proxy.deadlines import Deadlines
from proxy.metrics import METRICS, ProcessMetrics
from proxy.origdst import original_destination
from proxy.relay import Half, pair
from proxy.resolver import NameResolver
from proxy.route_health import BadProxies
from proxy.sniff import MAX_SNIFF_BYTES, Sniffer, SniffResult
from proxy.splice_relay import SpliceHalf, take_over
from proxy.upstream import ConnectOptions, RouteFailed, open_direct, open_route
from rules import routing
from rules.model import Decider, Decision, Destination
from rules.names import canonical_hostname

log = logging.getLogger("airgap.proxy")

SNIFF_PORTS = (80, 443)
#: The `path` label of this front door's metrics.
PATH = "transparent"
#: Most one read takes while the connection peeks: a hello or head usually fits in one.
PEEK_READ = 16 * 1024
#: Most one read takes once the connection is being decided or connected (then it pauses).
HOLD_READ = 4 * 1024
#: How long a rejected client may keep sending before it is cut, and how much we discard.
REJECT_LINGER = 2.0
REJECT_DISCARD_LIMIT = 1 << 20

#: The cap of a context built without `run` (which resolves it from the descriptor limit).
UNRESOLVED_MAX_CONNECTIONS = 10_000

_SETUP, _PEEKING, _CONNECTING, _RELAY, _REJECTING, _DONE = range(6)


class _Released(Sniffer):
    """The sniffer of every connection whose set-up bytes were handed on (relayed) or
    dropped (rejected): one shared empty object instead of one kept per connection. Shared,
    so it must never keep a byte: a read that reached it would be one client's bytes in
    another's connection, and it fails that connection instead."""

    __slots__ = ()

    def feed(self, data: bytes) -> SniffResult | None:
        raise RuntimeError("set-up bytes after the set-up ended")

    def hold(self, data: bytes) -> None:
        raise RuntimeError("set-up bytes after the set-up ended")


_RELEASED = _Released()
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(slots=True)
class ProxyContext:
    """What every connection of one worker shares.

    `decider` and `transparent_ports` are the policy in force: a reload replaces them
    between connections (`proxy.worker_policy`), and a connection reads them when it
    decides, so an open connection keeps the route it was given. `shadow`, when set, is
    decided beside the policy for the audit line only, never for the route.
    """

    decider: Decider
    transparent_ports: Container[int]
    connect: ConnectOptions
    resolver: NameResolver
    #: The operator's choices (timeouts, the cap, log format, `--splice`): read, never changed.
    config: RunConfig = DEFAULTS
    bad_proxies: BadProxies = field(default_factory=BadProxies)
    #: Where this process counts (`proxy.metrics`): a few dict updates per connection.
    metrics: ProcessMetrics = METRICS
    shadow: Decider | None = None
    #: The cap in force: the config's, which `run` resolved from the descriptor limit
    #: (`RunConfig.max_connections` 0 means "from the limit", which only the CLI knows;
    #: a context built elsewhere, by a test or an embedding, gets a fixed cap).
    max_connections: int = field(init=False)
    active: set[Tracked] = field(default_factory=set)
    #: Connections still waiting for their hello/head, by peek deadline.
    peeking: Deadlines[Intercepted] = field(init=False)
    #: The worker's loop, when made inside it: `asyncio.get_running_loop()` costs a getpid
    #: system call each time (CPython checks for a fork), twice per connection otherwise.
    loop: asyncio.AbstractEventLoop | None = field(init=False)
    #: Where every set-up read lands (`Intercepted.get_buffer`), before its bytes are copied
    #: to the connection: one buffer per worker, as the event loop runs one read at a time.
    scratch: memoryview = field(init=False)
    peek_view: memoryview = field(init=False)
    hold_view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.max_connections = self.config.max_connections or UNRESOLVED_MAX_CONNECTIONS
        self.peeking = Deadlines(self.config.peek_timeout, Intercepted.peek_timed_out)
        self.scratch = memoryview(bytearray(MAX_SNIFF_BYTES))
        self.peek_view = self.scratch[:PEEK_READ]
        self.hold_view = self.scratch[:HOLD_READ]
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    def in_flight(self) -> list[tuple[str, int, int]]:
        """(path, bytes up, bytes down) of every relay still open, for the report."""
        out = []
        for conn in self.active:
            moving = conn.in_flight()
            if moving is not None:
                out.append(moving)
        return out

    def sweep_idle(self) -> None:
        """Close relays that moved no byte for `idle_timeout` (a sweep, not a timer per read)."""
        now = time.monotonic()
        idle_timeout = self.config.idle_timeout
        for conn in list(self.active):
            conn.check_idle(now, idle_timeout)


class Intercepted(asyncio.BufferedProtocol):
    """Set-up phase of one client connection, then the owner of its relay.

    A `BufferedProtocol` during the set-up, so that the proxy chooses how much each read
    takes (`get_buffer`): a plain Protocol gets whatever the event loop read, up to 256 KiB
    with uvloop, and a connection waiting for its route would keep all of it. The relay
    halves that take over are plain Protocols again, reading as much as comes.
    """

    __slots__ = (
        "client_eof",
        "ctx",
        "dest",
        "discarded",
        "halves",
        "idle_since",
        "idle_total",
        "lost",
        "record",
        "shadow_task",
        "sniffed",
        "sniffer",
        "state",
        "task",
        "timer",
        "transport",
    )

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.state = _SETUP
        self.sniffer = Sniffer()
        self.client_eof = False
        self.sniffed: SniffResult | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.shadow_task: asyncio.Future[Decision] | None = None
        self.halves: Halves | None = None
        self.lost = 0
        self.discarded = 0
        self.idle_total = -1
        self.idle_since = 0.0

    # ----------------------------------------------------------------- set-up phase

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        # uvloop read both addresses when it accepted: asking the transport costs no syscall.
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            client_ip = canonical_ip(peer[0])
            self.record = ConnectionRecord(client_ip, peer[1])
        else:  # the client is already gone
            client_ip = "?"
            self.record = ConnectionRecord(client_ip, 0)
        ctx.active.add(self)
        if len(ctx.active) > ctx.max_connections:
            self._reset("refused: over --max-connections", "over_limit")
            return
        try:
            ip, port = self._original_destination()
        except Exception:  # OSError, or anything odd: never relay what we cannot place
            self._reset(
                "refused: no original destination (connection was not redirected)",
                "no_original_dst",
            )
            return
        self.record.dst_ip, self.record.dst_port = ip, port
        if not local or (canonical_ip(local[0]), local[1]) == (ip, port):
            self._reset(
                "refused: not redirected (addressed to the proxy's own listener)",
                "not_redirected",
            )
            return
        self.dest = Destination(ip=ip, port=port, client_ip=client_ip)
        if port in SNIFF_PORTS and port in ctx.transparent_ports:
            self.state = _PEEKING
            ctx.peeking.add(self)
        else:
            self._decide()

    def _original_destination(self) -> tuple[str, int]:
        """SO_ORIGINAL_DST of the accepted socket, through one plain socket object over its
        descriptor (uvloop's pseudo-socket would build a new one for each query)."""
        pseudo = self.transport.get_extra_info("socket")
        sock = _socket.socket(pseudo.family, socket.SOCK_STREAM, 0, pseudo.fileno())
        try:
            return original_destination(sock)  # type: ignore[arg-type]
        finally:
            sock.detach()

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes: the worker's scratch buffer, cut to what this phase may
        take. A peek reads at most what the sniffer may still look at (`MAX_SNIFF_BYTES`
        in all), in reads of `PEEK_READ`; a connection being decided or connected reads
        `HOLD_READ` once and pauses, the rest stays in the kernel until the relay runs; a
        rejected one reads to discard."""
        state = self.state
        if state == _PEEKING:
            room = MAX_SNIFF_BYTES - len(self.sniffer)
            return self.ctx.peek_view if room >= PEEK_READ else self.ctx.scratch[: max(room, 1)]
        if state == _REJECTING:
            return self.ctx.scratch
        return self.ctx.hold_view

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == _REJECTING:
            self.discarded += nbytes
            if self.discarded > REJECT_DISCARD_LIMIT:
                self._reset(self.record.error or "rejected")
            return
        data = self.ctx.scratch[:nbytes].tobytes()
        if self.state == _PEEKING:
            result = self.sniffer.feed(data)
            if result is not None:
                self._sniffed(result)
        else:
            # Deciding or connecting: keep what came (it is sent first once connected), and
            # leave the rest in the kernel until then. Not pausing up front saves two
            # syscalls for the usual client, which sends nothing more before the answer.
            self.sniffer.hold(data)
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.state == _REJECTING:
            self.transport.close()
            return False
        if self.state == _PEEKING:
            self._sniffed(self.sniffer.finish())
        return True  # keep the write side: the answer may still come

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in (_SETUP, _PEEKING, _CONNECTING):
            self.record.error = self.record.error or "client closed during set-up"
            self.record.kind = self.record.kind or "client_closed"
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.halves is None:
            self._finish()

    def peek_timed_out(self) -> None:
        """The peek deadline passed (`ProxyContext.peeking`): decide on what arrived."""
        if self.state == _PEEKING:
            self._sniffed(self.sniffer.finish())

    def _sniffed(self, result: SniffResult) -> None:
        self.ctx.peeking.discard(self)
        self.sniffed = result
        name = canonical_hostname(result.hostname) if result.hostname else None
        if result.hostname and name is None:
            log.debug("ignoring unusable name %r from %s", result.hostname, self.record.client)
        if name is not None:
            self.record.hostname = name
            dest = self.dest
            self.dest = Destination(dest.ip, dest.port, name, dest.client_ip)
        self._decide()

    def _decide(self) -> None:
        """Ask the policy, then connect in a task. The client is not paused up front: reading
        pauses at the first bytes that arrive meanwhile (`buffer_updated`)."""
        self.state = _CONNECTING
        dest = self.dest
        ctx = self.ctx
        decider = ctx.decider  # the policy in force now: a reload meanwhile is for later ones
        try:
            decision = decider.decide_now(dest)
        except Exception as exc:  # fail closed on any policy failure
            decision = _policy_failed(dest, exc)
        loop = ctx.loop or asyncio.get_running_loop()
        self.task = loop.create_task(self._establish(decision, decider))

    async def _establish(self, decision: Decision | None, decider: Decider) -> None:
        """Connect a route (after the evaluation `decide_now` could not spare); any
        unexpected failure cuts the client (never a hang)."""
        try:
            if decision is None:
                try:
                    decision = await decider.decide(self.dest)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # fail closed on any policy failure
                    decision = _policy_failed(self.dest, exc)
            await self._connect_routes(decision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("set-up failed for %s", self.dest.url)
            if self.halves is None and not self.transport.is_closing():
                self._reset(f"internal error: {type(exc).__name__}: {exc}", "internal")

    async def _connect_routes(self, decision: Decision) -> None:
        """Open the decision's routes in turn (`rules.routing` says what each one dials and
        what a failure means); the I/O only: resolving, connecting, handing over."""
        record, dest, ctx = self.record, self.dest, self.ctx
        record.decision = decision.action
        record.reason = decision.reason
        if ctx.shadow is not None:  # after this connection's own set-up has gone on
            (ctx.loop or asyncio.get_running_loop()).call_soon(self._shadow, decision)
        if decision.action == "REJECT" or not decision.routes:
            self._reject(decision.reason)
            return
        errors: list[str] = []
        refusals = 0  # routes the routing rules refused (not connection failures)
        health = ctx.bad_proxies
        for route in health.order(decision.routes):
            target = routing.unchecked_target(route, dest, decision)
            if target is None:
                assert dest.hostname is not None
                choice = routing.checked_target(
                    route, dest, decision, await self._addresses(dest.hostname)
                )
                if isinstance(choice, routing.Refusal):
                    errors.append(choice.reason)
                    refusals += 1
                    continue
                if choice.note:
                    log.warning("%s: %s", record.client, choice.note)
                target = choice.host
            try:
                if route.kind == "DIRECT":
                    upstream, leftover = await open_direct(target, dest.port, ctx.connect, ctx.loop)
                else:
                    upstream, leftover = await open_route(route, target, dest.port, ctx.connect)
            except RouteFailed as exc:
                log.warning("route failed for %s: %s", dest.url, exc)
                errors.append(str(exc))
                failover = routing.after_failure(exc.kind)
                if failover.mark_bad:
                    health.failed(route)
                    ctx.metrics.upstream_failed(route.kind)
                elif failover.mark_working:
                    health.worked(route)
                if failover.try_next:
                    continue
                ending = routing.refused_by_upstream(decision, str(exc), errors)
                record.route = route
                record.reason = ending.reason
                record.error = ending.error
                record.kind = "upstream_refused"
                self._reject(ending.reason)
                return
            health.worked(route)
            if self.transport.is_closing():
                upstream.abort()
                return
            record.route = routing.route_label(route, dest, target)
            if errors:
                record.error = "; ".join(errors)
            self._start_relay(upstream, leftover)
            return
        ending = routing.exhausted(decision, errors, refusals)
        record.error = ending.error
        if errors:
            record.kind = "route_refused" if refusals == len(errors) else "route_failed"
        if ending.reject:
            self._reject(ending.reason)
        else:
            self._reset(ending.error)

    async def _addresses(self, name: str) -> tuple[str, ...]:
        addrs = self.ctx.resolver.peek(name)
        if addrs is None:
            addrs = await self.ctx.resolver.resolve(name)
        return addrs

    def _shadow(self, enforced: Decision) -> None:
        """Decide the shadow policy too (`shadow.compare` says what a disagreement is);
        whatever it does, or fails to do, changes nothing for this connection."""
        shadow = self.ctx.shadow
        if shadow is None or self not in self.ctx.active:  # ended: its line is written
            return
        try:
            decision = shadow.decide_now(self.dest)
        except Exception as exc:
            decision = Decision("REJECT", (), f"shadow policy error: {exc}", "", "")
        if decision is not None:
            shadow_mod.compare(self.record, enforced, decision)
            return
        task = asyncio.ensure_future(shadow.decide(self.dest))
        self.shadow_task = task

        def done(t: asyncio.Future[Decision]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                shadow_mod.compare(self.record, enforced, t.result())
            else:
                failed = Decision("REJECT", (), f"shadow policy error: {exc}", "", "")
                shadow_mod.compare(self.record, enforced, failed)

        task.add_done_callback(done)

    # ----------------------------------------------------------------- relay phase

    def _start_relay(self, upstream: asyncio.Transport, leftover: bytearray) -> None:
        self.state = _RELAY
        self.ctx.metrics.setup_done(time.monotonic() - self.record.monotonic_start)
        held, self.sniffer = self.sniffer.take(), _RELEASED
        self.halves = hand_over(
            self.transport, upstream, held, leftover, self, self.ctx.config.splice, self.client_eof
        )
        # Nothing of the set-up phase is kept for the life of the relay.
        self.task = None
        self.sniffed = None

    def in_flight(self) -> tuple[str, int, int] | None:
        halves = self.halves
        return None if halves is None else (PATH, halves[0].nbytes, halves[1].nbytes)

    def half_lost(self, half: Half | SpliceHalf, exc: Exception | None) -> None:
        self.lost += 1
        if exc is not None and self.record.kind is None:
            self.record.kind = "reset"
        other = half.peer.transport
        if not other.is_closing():
            other.close()
        if self.lost >= 2:
            self._finish()

    def check_idle(self, now: float, idle_timeout: float) -> None:
        if self.halves is None:
            return
        total = self.halves[0].nbytes + self.halves[1].nbytes
        if total != self.idle_total:
            self.idle_total, self.idle_since = total, now
        elif now - self.idle_since >= idle_timeout:
            self.record.error = f"idle for {idle_timeout:g}s"
            self.record.kind = "timeout"
            for half in self.halves:
                half.transport.abort()

    def abort(self, why: str) -> None:
        """Cut the connection now (drain timeout at shutdown)."""
        self.record.error = self.record.error or why
        self.record.kind = self.record.kind or "drain_cut"
        if self.halves is not None:
            for half in self.halves:
                half.transport.abort()
        else:
            self._reset(why)

    # ----------------------------------------------------------------- endings

    def _reject(self, reason: str) -> None:
        """Block on the wire: 403 for HTTP, a TLS alert, else a reset (README, "On the wire")."""
        self.record.decision = "REJECT"
        protocol = self.sniffed.protocol if self.sniffed is not None else "other"
        transport = self.transport
        if transport.is_closing():
            return
        if protocol == "http":
            transport.write(reject_wire.http_forbidden(self.dest.host, reason))
        elif protocol == "tls":
            transport.write(reject_wire.tls_access_denied_alert(self.sniffer.data[:64]))
        else:
            self._reset(None)
            return
        self.state = _REJECTING
        self.sniffer = _RELEASED
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()  # read and discard what the client still sends
        self.timer = asyncio.get_running_loop().call_later(REJECT_LINGER, transport.close)

    def _reset(self, why: str | None, kind: str | None = None) -> None:
        if why:
            self.record.error = why
        if kind is not None:
            self.record.kind = kind
        self.state = _DONE
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def _finish(self) -> None:
        if self not in self.ctx.active:
            return
        self.ctx.active.discard(self)
        self.ctx.peeking.discard(self)
        self.state = _DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        halves = self.halves
        record = self.record
        if halves is not None:
            record.bytes_up = halves[0].nbytes
            record.bytes_down = halves[1].nbytes
            # Both halves are gone: break the reference cycles, so the connection's objects
            # are freed at once instead of waiting for the garbage collector.
            self.halves = None
            for half in halves:
                if isinstance(half, Half):  # spliced ones are few: left to the collector
                    half.peer = half.owner = None  # type: ignore[assignment]
        self.ctx.metrics.connection_ended(
            PATH, record.decision or UNDECIDED, record.kind, record.bytes_up, record.bytes_down,
            time.monotonic() - record.monotonic_start,
        )  # fmt: skip
        pending = self.shadow_task
        if pending is not None and not pending.done():
            # The audit line waits for the shadow's answer (bounded by its evaluation).
            record, json_logs = self.record, self.ctx.config.json_logs
            pending.add_done_callback(lambda _t: emit(record, json_logs))
        else:
            emit(self.record, self.ctx.config.json_logs)
        self.shadow_task = None


Halves = tuple[Half, Half] | tuple[SpliceHalf, SpliceHalf]


class HalfOwner(Protocol):
    """Who owns a relay of either kind: told once per half when it is gone."""

    def half_lost(self, half: Half | SpliceHalf, exc: Exception | None) -> None: ...


def hand_over(
    client: asyncio.Transport,
    upstream: asyncio.Transport,
    held: bytes,
    leftover: bytes | bytearray,
    owner: HalfOwner,
    splice: bool,
    client_eof: bool,
) -> Halves:
    """Start the relay between a client and a connected route (both front doors use it).

    `held`: the client's bytes read during the set-up, sent upstream first; `leftover`: what
    the upstream sent past its handshake, sent to the client first; `client_eof`: the
    client half-closed already. `--splice` where it applies, else the default relay.
    """
    if splice:
        # None: this one cannot be spliced (TLS upstream, no descriptors left): default relay.
        spliced = take_over(client, upstream, held, bytes(leftover), owner)
        if spliced is not None:
            return spliced
    from_client, from_upstream = pair(client, upstream, owner)
    # Resume first, then write: a write that fills a buffer past its high-water mark
    # pauses the other side (`Half.pause_writing`), and a resume after it would undo
    # that pause, with no second `pause_writing` to come (the buffer would grow without
    # bound behind a peer that does not read).
    client.resume_reading()
    upstream.resume_reading()
    if held:
        from_client.nbytes += len(held)
        upstream.write(held)
    if leftover:
        from_upstream.nbytes += len(leftover)
        client.write(bytes(leftover))
    if client_eof:
        from_client.eof = True
        if upstream.can_write_eof():
            upstream.write_eof()
    return from_client, from_upstream


class Tracked(Protocol):
    """A connection the worker tracks (`ProxyContext.active`): the idle sweep and the
    drain at shutdown reach every front door's connections through these two."""

    def check_idle(self, now: float, idle_timeout: float) -> None: ...

    def abort(self, why: str) -> None: ...

    def in_flight(self) -> tuple[str, int, int] | None:
        """(path, bytes up, bytes down) while relaying, for the metrics report; else None."""
        ...


def _policy_failed(dest: Destination, exc: Exception) -> Decision:
    log.error("policy failed for %s", dest.url, exc_info=exc)
    return Decision("REJECT", (), f"policy error: {exc}", dest.url, dest.host)
