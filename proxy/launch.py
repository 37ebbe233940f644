"""Putting one `airgap-proxy run` together: the policy, the PAC machinery, the worker(s).

A static policy decides synchronously. A PAC policy gets a `PacDecider` (evaluation off the
event loop) fed by a `PacSource`: in a single process the source runs beside the listeners;
with several workers it runs once, in the supervisor, which sends each worker the same
snapshot over its control pipe (`proxy.supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pac.sandbox import AsyncPacSandbox, Limits
from proxy import admin, control
from proxy.config import RunConfig
from proxy.connection import ProxyContext
from proxy.control import control_reader
from proxy.fleet import Fleet
from proxy.metrics import METRICS
from proxy.operate import RunState
from proxy.pac_decider import PacDecider
from proxy.pac_source import (
    UNLOADED,
    PacSettings,
    PacSnapshot,
    PacSource,
    warn_about_plain_http,
)
from proxy.resolver import NameResolver
from proxy.status import InForce
from proxy.supervisor import Broadcast, supervise
from proxy.worker import Background, serve
from proxy.worker_report import Reporter, build
from rules.policy import Policy
from rules.settings import ContainersProxyConfig

log = logging.getLogger("airgap.proxy")


@dataclass(slots=True)
class PacOptions:
    """The PAC machinery of one run, built from `proxy.config.PacConfig`: the download
    settings (with their TLS context), the sandbox bounds and the evaluator pool."""

    source: PacSettings
    limits: Limits
    engine: str
    evaluators: int
    max_queue: int


def pac_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """PAC downloads are verified against the system store, plus `--ca-bundle` if given."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:  # a message, not a traceback (exit 2)
            raise ValueError(f"--ca-bundle {ca_bundle}: {exc.strerror or exc}") from None
    return context


def make_validator(opts: PacOptions) -> Callable[[str], Awaitable[None]]:
    """Load a script into a throw-away engine process: it must load and define the entry."""

    async def validate(script: str) -> None:
        sandbox = AsyncPacSandbox(script, engine=opts.engine, limits=opts.limits, workers=1)
        try:
            await sandbox.start()
        finally:
            await sandbox.aclose()

    return validate


def make_source(
    cfg: ContainersProxyConfig,
    opts: PacOptions,
    on_change: Callable[[PacSnapshot], Awaitable[None] | None],
) -> PacSource:
    """`embeddedPac` wins over `pac` (Docker Desktop's precedence)."""
    inline = cfg.embedded_pac
    source = None if inline is not None else cfg.pac
    if source is not None:
        warn_about_plain_http(source)
    return PacSource(source, inline, opts.source, make_validator(opts), on_change)


def _guarded(source: PacSource) -> Background:
    """Run the source; if it ever dies, say so and fail closed."""

    async def job(_stop: asyncio.Event) -> None:
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("PAC refresh stopped")
            await source.publish(PacSnapshot(None, error=f"PAC refresh stopped: {exc}"))

    return job


class _Local:
    """The single process's own view for its admin endpoint, filled once it listens."""

    ctx: ProxyContext | None = None
    stop: asyncio.Event | None = None

    def job(self, ctx: ProxyContext) -> Background:
        async def listening(stop: asyncio.Event) -> None:
            self.ctx, self.stop = ctx, stop

        return listening


async def _start_local_admin(
    settings: RunConfig, state: RunState, decider: PacDecider | None, local: _Local
) -> Any:
    """The admin endpoint of a single process (`--workers 1`: no supervisor to serve it),
    open before the listeners (so /readyz says "starting"); the process reports to itself
    before each request."""
    assert settings.admin_listen is not None
    pid = os.getpid()
    state.fleet.started(0, pid)

    def refresh() -> None:
        if local.ctx is not None and local.stop is not None:
            state.fleet.draining = local.stop.is_set()
            state.fleet.reported(0, pid, build(local.ctx, decider))

    return await admin.start(*settings.admin_listen, state.endpoints(refresh))


async def run_worker(
    settings: RunConfig,
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    control_fd: int | None,
    report_fd: int | None = None,
    in_force: InForce | None = None,
) -> int:
    """One worker process: listeners, and the PAC decider when the policy uses a PAC.

    Alone (no `control_fd`), it also runs the PAC source and, unless `--admin-listen none`,
    the admin endpoint; as a supervisor's worker it reports up `report_fd` instead.
    """
    resolver = NameResolver()
    background: list[Background] = []
    context_jobs: list[Callable[[ProxyContext], Background]] = []
    decider: PacDecider | None = None
    reporter = Reporter(report_fd, None) if report_fd is not None else None
    source: PacSource | None = None
    if policy.uses_pac:
        decider = PacDecider(resolver, pac.limits, pac.engine, pac.evaluators, pac.max_queue)
        policy = policy.with_pac_decider(decider)
        if reporter is not None:
            reporter.decider = decider
        on_snapshot = _nudging(decider, reporter)
        if control_fd is None:
            source = make_source(cfg, pac, on_snapshot)
            background.append(_guarded(source))
    else:
        on_snapshot = None
    ready: asyncio.Event | None = None
    if control_fd is not None:
        # A supervised PAC worker listens once the supervisor's current script is loaded
        # (a restarted one would otherwise reject "PAC not loaded yet" meanwhile).
        ready = asyncio.Event() if decider is not None else None
        background.append(control_reader(control_fd, on_snapshot, ready))
    if reporter is not None:
        context_jobs.append(reporter.job)
    runner = None
    if control_fd is None and settings.admin_listen is not None and in_force is not None:
        state = RunState(in_force, Fleet(1, policy.uses_pac, own=None), source)
        local = _Local()
        context_jobs.append(local.job)
        try:
            runner = await _start_local_admin(settings, state, decider, local)
        except OSError as exc:
            print(f"airgap-proxy: admin endpoint: cannot listen: {exc}", file=sys.stderr)
            if decider is not None:
                await decider.aclose()
            return 1
    try:
        return await serve(
            settings, policy, policy.transparent_ports, resolver, background, ready, context_jobs
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        if decider is not None:
            await decider.aclose()


def _nudging(
    decider: PacDecider, reporter: Reporter | None
) -> Callable[[PacSnapshot], Awaitable[None]]:
    """The decider's snapshot swap, then a report at once (readiness follows the PAC)."""

    async def swap(snap: PacSnapshot) -> None:
        await decider.set_snapshot(snap)
        if reporter is not None:
            reporter.nudge()

    return swap


async def run_supervisor(
    count: int,
    worker_argv: Sequence[str],
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    drain_timeout: float,
    admin_listen: tuple[str, int] | None = None,
    in_force: InForce | None = None,
) -> int:
    """N workers; with a PAC, one download for all of them; the admin endpoint."""
    fleet = Fleet(count, policy.uses_pac, own=METRICS)
    source: PacSource | None = None
    feed = None
    first = None
    if policy.uses_pac:
        broadcast_to: list[Broadcast] = []

        async def publish(snap: PacSnapshot) -> None:
            await broadcast_to[0](control.snapshot_message(snap))

        source = make_source(cfg, pac, publish)

        async def feed(broadcast: Broadcast) -> None:
            broadcast_to.append(broadcast)
            await _guarded(source)(asyncio.Event())

        first = control.snapshot_message(UNLOADED)
    runner = None
    if admin_listen is not None and in_force is not None:
        state = RunState(in_force, fleet, source)
        try:
            runner = await admin.start(*admin_listen, state.endpoints())
        except OSError as exc:
            print(f"airgap-proxy: admin endpoint: cannot listen: {exc}", file=sys.stderr)
            return 1
    try:
        return await supervise(count, worker_argv, feed, drain_timeout, first, fleet)
    finally:
        if runner is not None:
            await runner.cleanup()
