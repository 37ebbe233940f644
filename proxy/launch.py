"""Putting one `airgap-proxy run` together: the policy, the PAC machinery, the worker(s).

A static policy decides synchronously. A PAC policy gets a `PacDecider` (evaluation off the
event loop) fed by a `PacSource`. What owns the policy (`PolicyOwner`: the file, reloaded
on SIGHUP or when it changes, and its PAC source) runs once: in a single process beside the
listeners; with several workers in the supervisor, which sends each worker the same
validated text and the same snapshots over its control pipe (`proxy.supervisor`), so all
of them decide alike, and a worker started later gets the version in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pac.sandbox import AsyncPacSandbox, Limits
from proxy import admin, audit, control
from proxy import shadow as shadow_mod
from proxy.config import RunConfig
from proxy.connection import ProxyContext
from proxy.control import MAIN, SHADOW
from proxy.fleet import Fleet
from proxy.metrics import METRICS, ProcessMetrics
from proxy.operate import RunState
from proxy.pac_decider import PacDecider
from proxy.pac_source import (
    UNLOADED,
    PacSettings,
    PacSnapshot,
    PacSource,
    warn_about_plain_http,
)
from proxy.policy_feed import PolicyFeed, PolicySink, SourceFactory
from proxy.reload import ConfigVersion, ReloadState, text_version
from proxy.resolver import NameResolver
from proxy.route_health import BadProxies
from proxy.status import InForce
from proxy.supervisor import Broadcast, supervise
from proxy.worker import Background, serve
from proxy.worker_policy import WorkerPolicy
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


def source_factory(opts: PacOptions) -> SourceFactory:
    """The PAC source of a config version, for a `PolicyFeed`."""

    def make(
        version: ConfigVersion, publish: Callable[[PacSnapshot], Awaitable[None]]
    ) -> PacSource:
        return make_source(version.cfg, opts, publish)

    return make


def decider_factory(opts: PacOptions, resolver: NameResolver) -> Callable[[str], PacDecider]:
    """A worker's PAC decider (its own engine processes), one per PAC source and slot; the
    shadow's counts its evaluations apart, so the enforced PAC's metrics stay its own."""

    def make(slot: str) -> PacDecider:
        metrics = METRICS if slot == MAIN else ProcessMetrics()
        return PacDecider(
            resolver, opts.limits, opts.engine, opts.evaluators, opts.max_queue, metrics=metrics
        )

    return make


class PolicyOwner:
    """What the process that owns the policy keeps: the feeds of the enforced and the shadow
    policy, their reload records, and the signals that drive them (SIGHUP: reload both;
    SIGUSR1: reopen the audit log, through `on_reopen`).

    `state` is the enforced policy's `ReloadState`, for status pages; its `on_result` hooks
    are where a reload counter is incremented. `bad_proxies` is the table every worker's
    list follows (the supervisor's, or the single worker's own).
    """

    def __init__(
        self, main: ConfigVersion, shadow: ConfigVersion | None, settings: RunConfig
    ) -> None:
        self.main = main
        self.shadow = shadow
        self.settings = settings
        self.state = ReloadState(settings.config_path, main.sha256)
        self.shadow_state = (
            ReloadState(settings.shadow_config_path, shadow.sha256) if shadow is not None else None
        )
        self.bad_proxies: BadProxies | None = None
        self.feeds: list[PolicyFeed] = []

    def build_feeds(self, sink: PolicySink, pac: PacOptions) -> list[PolicyFeed]:
        make = source_factory(pac)
        self.feeds = [
            PolicyFeed(MAIN, self.main, self.settings.config_path, sink, make, self.state)
        ]
        if self.shadow is not None:
            self.feeds.append(
                PolicyFeed(
                    SHADOW,
                    self.shadow,
                    self.settings.shadow_config_path,
                    sink,
                    make,
                    self.shadow_state,
                )
            )
        return self.feeds

    def reload_all(self) -> None:
        for feed in self.feeds:
            feed.request_reload()

    async def run(self, on_reopen: Callable[[], None]) -> None:
        """Run the feeds with the signal handlers in place, until cancelled."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload_all)
        loop.add_signal_handler(signal.SIGUSR1, on_reopen)
        try:
            await asyncio.gather(*(feed.run() for feed in self.feeds))
        finally:
            for signum in (signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)  # a late one must not kill the drain


#: Called with each `PolicyOwner` as it is made (one per `run`): where a status page or
#: the metrics find the reload records and the bad-proxy table.
owner_created: list[Callable[[PolicyOwner], None]] = []


def _made(owner: PolicyOwner) -> PolicyOwner:
    for hook in owner_created:
        hook(owner)
    return owner


class _BroadcastSink:
    """A feed's versions and snapshots as control lines to every worker, each the latest of
    its kind and slot (what a worker started later gets first)."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast

    async def set_config(self, slot: str, version: ConfigVersion) -> None:
        line = control.config_message(slot, version.text, version.source, version.sha256)
        await self.broadcast(line, key=f"config:{slot}")

    async def set_pac(self, slot: str, snap: PacSnapshot) -> None:
        await self.broadcast(control.snapshot_message(snap, slot), key=f"pac:{slot}")


def _ignore_owner_signals() -> None:
    """A worker of a supervisor: SIGHUP and SIGUSR1 are the supervisor's (it tells the
    workers over the pipe); one sent to the whole process group must not kill a worker."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(signum, lambda: None)


def _count_disagreement(enforced: str, shadow: str) -> None:
    """A shadow disagreement of this process, in its metrics (reported up like the rest)."""
    METRICS.inc("airgap_shadow_disagreements", enforced, shadow)


def count_shadow_disagreements() -> None:
    """Count this process's shadow disagreements in `airgap_shadow_disagreements_total`
    (once per process, however many times it is asked)."""
    if _count_disagreement not in shadow_mod.on_disagreement:
        shadow_mod.on_disagreement.append(_count_disagreement)


def in_force_of(owner: PolicyOwner, version: ConfigVersion) -> InForce:
    """What `/status` and `/readyz` show of a version in force (no credential: redacted)."""
    return InForce(
        owner.settings.config_path, version.sha256, version.cfg,
        Policy.from_config(version.cfg, os.environ),
    )  # fmt: skip


def run_state(owner: PolicyOwner, fleet: Fleet) -> RunState:
    """The admin endpoint's view of a run, following the owner's reloads: the version in
    force and its PAC source, the reload record, the reload counter."""
    state = RunState(in_force_of(owner, owner.main), fleet, None)
    state.board.add("reload", owner.state.to_json)

    def reloaded(result: str) -> None:
        METRICS.inc("airgap_config_reloads", result)
        if result == "ok" and owner.feeds:
            state.in_force = in_force_of(owner, owner.feeds[0].version)

    owner.state.on_result.append(reloaded)
    return state


def follow_source(owner: PolicyOwner, state: RunState) -> None:
    """Before each admin request: the PAC source in force now (a reload may have started
    another one, and the first starts only once the feed runs)."""
    state.source = owner.feeds[0].source if owner.feeds else None


class _Local:
    """The single process's own view for its admin endpoint, filled once it listens."""

    ctx: ProxyContext | None = None
    stop: asyncio.Event | None = None

    def job(self, ctx: ProxyContext) -> Background:
        async def listening(stop: asyncio.Event) -> None:
            self.ctx, self.stop = ctx, stop

        return listening


async def _start_local_admin(
    settings: RunConfig,
    state: RunState,
    decider: Callable[[], PacDecider | None],
    local: _Local,
    owner: PolicyOwner,
) -> Any:
    """The admin endpoint of a single process (`--workers 1`: no supervisor to serve it),
    open before the listeners (so /readyz says "starting"); the process reports to itself
    before each request."""
    assert settings.admin_listen is not None
    pid = os.getpid()
    state.fleet.started(0, pid)

    def refresh() -> None:
        follow_source(owner, state)
        if local.ctx is not None and local.stop is not None:
            state.fleet.draining = local.stop.is_set()
            state.fleet.reported(0, pid, build(local.ctx, decider()))

    return await admin.start(*settings.admin_listen, state.endpoints(refresh))


async def run_worker(
    settings: RunConfig,
    pac: PacOptions,
    control_fd: int | None,
    main: ConfigVersion | None,
    shadow: ConfigVersion | None = None,
    report_fd: int | None = None,
) -> int:
    """One worker process: listeners, and the PAC decider when the policy uses a PAC.

    Alone (no `control_fd`), it owns its policy: `main` (and `shadow`), reloaded by its own
    feeds. A worker of a supervisor gets its policy over the control pipe and serves only
    once the enforced one is in force.
    """
    resolver = NameResolver()
    policy = WorkerPolicy(decider_factory(pac, resolver))
    bad = BadProxies(settings.bad_proxy_ttl)
    background: list[Background] = []
    context_jobs: list[Callable[[ProxyContext], Background]] = []
    count_shadow_disagreements()

    def main_decider() -> PacDecider | None:
        return policy.slots[MAIN].decider

    reporter = Reporter(report_fd, main_decider) if report_fd is not None else None
    runner = None
    if control_fd is None:
        assert main is not None
        await policy.set_config(MAIN, main)
        if shadow is not None:
            await policy.set_config(SHADOW, shadow)
        owner = PolicyOwner(main, shadow, settings)
        owner.bad_proxies = bad
        owner.build_feeds(policy, pac)
        _made(owner)

        async def own(_stop: asyncio.Event) -> None:
            await owner.run(audit.reopen_audit_file)

        background.append(own)
        if settings.admin_listen is not None:
            fleet = Fleet(1, main.cfg.uses_pac, own=None)
            state = run_state(owner, fleet)
            local = _Local()
            context_jobs.append(local.job)
            try:
                runner = await _start_local_admin(settings, state, main_decider, local, owner)
            except OSError as exc:
                print(f"airgap-proxy: admin endpoint: cannot listen: {exc}", file=sys.stderr)
                await policy.aclose()
                return 1
    else:
        _ignore_owner_signals()

        async def handle(message: control.Message) -> None:
            if isinstance(message, control.ConfigUpdate):
                try:
                    version = text_version(message.text, message.source)
                    await policy.set_config(message.slot, version)
                except Exception:
                    if not policy.ready.is_set():  # no policy to serve with: stop
                        channel.ended.set()
                    raise
            elif isinstance(message, control.PacUpdate):
                await policy.set_pac(message.slot, message.snapshot)
                if reporter is not None and message.slot == MAIN:
                    reporter.nudge()  # readiness follows the PAC: report at once
            elif isinstance(message, control.BadProxyNote):
                bad.note(message.kind, message.host, message.port, message.ttl)
            elif isinstance(message, control.ReopenAudit):
                audit.reopen_audit_file()

        channel = control.ControlChannel(control_fd, handle)
        await channel.open()
        # It listens (joins the SO_REUSEPORT group) only once the supervisor's version, and
        # with a PAC its current script, is in force: until then the kernel gives every
        # connection to the workers already serving.
        ready = asyncio.ensure_future(policy.in_force.wait())
        ended = asyncio.ensure_future(channel.ended.wait())
        await asyncio.wait((ready, ended), return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        ended.cancel()
        if not policy.in_force.is_set():
            channel.close()
            await policy.aclose()
            return 0 if channel.reader.stopping else 1
        background.append(channel.job())
        if report_fd is not None:
            writer = control.ReportWriter(report_fd)

            def share(kind: str, host: str, port: int, ttl: float) -> None:
                writer.send(control.bad_proxy_message(kind, host, port, ttl))

            bad.on_change = share
    if reporter is not None:
        context_jobs.append(reporter.job)
    first = policy.main
    assert first is not None
    try:
        return await serve(
            settings, first, first.transparent_ports, resolver, background,
            context_jobs=context_jobs, on_context=policy.attach, bad_proxies=bad,
        )  # fmt: skip
    finally:
        if runner is not None:
            await runner.cleanup()
        await policy.aclose()


async def run_supervisor(
    settings: RunConfig,
    worker_argv: Sequence[str],
    pac: PacOptions,
    main: ConfigVersion,
    shadow: ConfigVersion | None = None,
) -> int:
    """N workers, one policy owner: one read of the file, one download of the PAC, for all
    of them; bad proxies one worker found are relayed to every worker."""
    owner = PolicyOwner(main, shadow, settings)
    table = BadProxies(settings.bad_proxy_ttl)
    owner.bad_proxies = table
    _made(owner)
    fleet = Fleet(settings.workers, main.cfg.uses_pac, own=METRICS)
    first: list[tuple[str, bytes]] = []
    for slot, version in ((MAIN, main), (SHADOW, shadow)):
        if version is None:
            continue
        line = control.config_message(slot, version.text, version.source, version.sha256)
        first.append((f"config:{slot}", line))
        if version.cfg.uses_pac:
            first.append((f"pac:{slot}", control.snapshot_message(UNLOADED, slot)))
    relay: list[Broadcast] = []
    sending: set[asyncio.Future[None]] = set()

    def send(line: bytes) -> None:
        """Broadcast from a callback (a report, a signal), keeping the task until it is done."""
        if relay:
            task = asyncio.ensure_future(relay[0](line, key=None))
            sending.add(task)
            task.add_done_callback(sending.discard)

    def on_bad_proxy(body: dict[str, object]) -> None:
        """A worker's bad-proxy note: into the shared table, and down to every worker."""
        try:
            note = control.bad_proxy_note(body)
        except ValueError:
            log.warning("unreadable bad-proxy note from a worker; ignored")
            return
        table.note(note.kind, note.host, note.port, note.ttl)
        send(control.bad_proxy_message(note.kind, note.host, note.port, note.ttl))

    def greeting() -> list[bytes]:
        return [control.bad_proxy_message(*entry) for entry in table.entries()]

    async def feed(broadcast: Broadcast) -> None:
        relay.append(broadcast)
        owner.build_feeds(_BroadcastSink(broadcast), pac)
        await owner.run(lambda: send(control.REOPEN_AUDIT_MESSAGE))

    runner = None
    if settings.admin_listen is not None:
        state = run_state(owner, fleet)
        try:
            runner = await admin.start(
                *settings.admin_listen, state.endpoints(lambda: follow_source(owner, state))
            )
        except OSError as exc:
            print(f"airgap-proxy: admin endpoint: cannot listen: {exc}", file=sys.stderr)
            return 1
    try:
        return await supervise(
            settings.workers, worker_argv, feed, settings.drain_timeout,
            first_messages=first, greeting=greeting, fleet=fleet,
            up_handlers={"bad_proxy": on_bad_proxy},
        )  # fmt: skip
    finally:
        if runner is not None:
            await runner.cleanup()
