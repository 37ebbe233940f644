"""Putting one `airgap-proxy run` together: the policy, the PAC machinery, the worker(s).

A static policy decides synchronously. A PAC policy gets a `PacDecider` (evaluation off the
event loop) fed by a `PacSource`: in a single process the source runs beside the listeners;
with several workers it runs once, in the supervisor, which sends each worker the same
snapshot over its control pipe (`proxy.supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pac.sandbox import AsyncPacSandbox, Limits
from proxy import control
from proxy.config import RunConfig
from proxy.control import control_reader
from proxy.pac_decider import PacDecider
from proxy.pac_source import (
    UNLOADED,
    PacSettings,
    PacSnapshot,
    PacSource,
    warn_about_plain_http,
)
from proxy.resolver import NameResolver
from proxy.supervisor import Broadcast, supervise
from proxy.worker import Background, serve
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


async def run_worker(
    settings: RunConfig,
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    control_fd: int | None,
) -> int:
    """One worker process: listeners, and the PAC decider when the policy uses a PAC."""
    resolver = NameResolver()
    background: list[Background] = []
    decider: PacDecider | None = None
    if policy.uses_pac:
        decider = PacDecider(resolver, pac.limits, pac.engine, pac.evaluators, pac.max_queue)
        policy = policy.with_pac_decider(decider)
        if control_fd is None:
            background.append(_guarded(make_source(cfg, pac, decider.set_snapshot)))
    ready: asyncio.Event | None = None
    if control_fd is not None:
        on_snapshot = decider.set_snapshot if decider is not None else None
        # A supervised PAC worker listens once the supervisor's current script is loaded
        # (a restarted one would otherwise reject "PAC not loaded yet" meanwhile).
        ready = asyncio.Event() if decider is not None else None
        background.append(control_reader(control_fd, on_snapshot, ready))
    try:
        return await serve(
            settings, policy, policy.transparent_ports, resolver, background, ready
        )
    finally:
        if decider is not None:
            await decider.aclose()


async def run_supervisor(
    count: int,
    worker_argv: Sequence[str],
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    drain_timeout: float,
) -> int:
    """N workers; with a PAC, one download for all of them."""
    if not policy.uses_pac:
        return await supervise(count, worker_argv, None, drain_timeout)

    async def feed(broadcast: Broadcast) -> None:
        async def publish(snap: PacSnapshot) -> None:
            await broadcast(control.snapshot_message(snap))

        await _guarded(make_source(cfg, pac, publish))(asyncio.Event())

    first = control.snapshot_message(UNLOADED)
    return await supervise(count, worker_argv, feed, drain_timeout, first)
