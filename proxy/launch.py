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
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pac.sandbox import AsyncPacSandbox, Limits
from proxy import audit, control
from proxy.config import RunConfig
from proxy.control import MAIN, SHADOW
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
from proxy.supervisor import Broadcast, supervise
from proxy.worker import Background, serve
from proxy.worker_policy import WorkerPolicy
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


def decider_factory(opts: PacOptions, resolver: NameResolver) -> Callable[[], PacDecider]:
    """A worker's PAC decider (its own engine processes), one per PAC source and slot."""

    def make() -> PacDecider:
        return PacDecider(resolver, opts.limits, opts.engine, opts.evaluators, opts.max_queue)

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
            elif isinstance(message, control.BadProxyNote):
                bad.note(message.kind, message.host, message.port, message.ttl)
            elif isinstance(message, control.ReopenAudit):
                audit.reopen_audit_file()

        channel = control.ControlChannel(control_fd, handle)
        await channel.open()
        ready = asyncio.ensure_future(policy.ready.wait())
        ended = asyncio.ensure_future(channel.ended.wait())
        await asyncio.wait((ready, ended), return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        ended.cancel()
        if not policy.ready.is_set():
            channel.close()
            await policy.aclose()
            return 0 if channel.reader.stopping else 1
        background.append(channel.job())
        if report_fd is not None:
            writer = control.ReportWriter(report_fd)

            def share(kind: str, host: str, port: int, ttl: float) -> None:
                writer.send(control.bad_proxy_message(kind, host, port, ttl))

            bad.on_change = share
    first = policy.main
    assert first is not None
    try:
        return await serve(
            settings, first, first.transparent_ports, resolver, background,
            on_context=policy.attach, bad_proxies=bad,
        )  # fmt: skip
    finally:
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

    def on_report(_index: int, line: bytes) -> None:
        try:
            note = control.decode_report(line)
        except ValueError:
            log.warning("unreadable report from a worker; ignored")
            return
        if note is None:
            return
        table.note(note.kind, note.host, note.port, note.ttl)
        send(control.bad_proxy_message(note.kind, note.host, note.port, note.ttl))

    def greeting() -> list[bytes]:
        return [control.bad_proxy_message(*entry) for entry in table.entries()]

    async def feed(broadcast: Broadcast) -> None:
        relay.append(broadcast)
        owner.build_feeds(_BroadcastSink(broadcast), pac)
        await owner.run(lambda: send(control.REOPEN_AUDIT_MESSAGE))

    return await supervise(
        settings.workers, worker_argv, feed, settings.drain_timeout,
        first_messages=first, greeting=greeting, on_report=on_report,
    )  # fmt: skip
