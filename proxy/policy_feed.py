"""Where a policy comes from while the proxy runs: its file, reloaded, and its PAC source.

One `PolicyFeed` per policy (the enforced one, and the `--shadow-config` one) runs in the
process that owns the policy: the supervisor with several workers, the single worker
otherwise. It hands every version and every PAC snapshot to a `PolicySink` (the workers'
control pipes, or the single worker's own `WorkerPolicy`).

A reload (SIGHUP, or the file seen changed) reads the file and validates it completely
first. Invalid, unreadable, unsafe (writable by group or others), deleted or half-written:
nothing changes, the version in force stays, one `config reload refused: ...` line says
why, and the next change of the file is tried again. Valid: the new version goes to every
worker at once (`config reloaded` with both sha256), a new or changed PAC source replaces
the old one (no script until the new source has loaded one: fail closed), and a change of
`transparentPorts` is logged, since the redirect rules outside the proxy must follow it.
Options given on the command line are not reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from proxy import filewatch
from proxy.control import MAIN
from proxy.pac_source import PacSnapshot, PacSource, local_path
from proxy.reload import ConfigVersion, ReloadState, pac_identity, read_version
from rules.config import ConfigError
from rules.policy import Policy

log = logging.getLogger("airgap.proxy")


#: The PAC state between a reload that names a new PAC source and that source's first script.
NEW_SOURCE = PacSnapshot(None, error="PAC not loaded yet (the reloaded config names a new source)")


class PolicySink(Protocol):
    """Where a feed's versions and snapshots go."""

    async def set_config(self, slot: str, version: ConfigVersion) -> None: ...

    async def set_pac(self, slot: str, snap: PacSnapshot) -> None: ...


#: Builds the PAC source of a config, publishing to the given callback.
SourceFactory = Callable[[ConfigVersion, Callable[[PacSnapshot], Awaitable[None]]], PacSource]


def _ports_text(version: ConfigVersion) -> str:
    ports = version.cfg.transparent_ports
    if ports.is_all:
        return "*"
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ports.ranges()) or '""'


class PolicyFeed:
    """One policy's file and PAC source, kept current in its sink."""

    def __init__(
        self,
        slot: str,
        version: ConfigVersion,
        path: str | None,
        sink: PolicySink,
        make_source: SourceFactory,
        state: ReloadState | None = None,
    ) -> None:
        self.slot = slot
        self.version = version
        self.path = path
        self.sink = sink
        self.make_source = make_source
        self.state = state if state is not None else ReloadState(path, version.sha256)
        self.wake = asyncio.Event()
        self.source: PacSource | None = None
        self._source_task: asyncio.Task[None] | None = None
        self.name = "config" if slot == MAIN else "shadow config"

    # ----------------------------------------------------------------- running

    def request_reload(self) -> None:
        """Reload at the next turn of the loop (SIGHUP; safe from a signal handler)."""
        self.wake.set()

    async def run(self) -> None:
        """Start the PAC source, watch the file(s), reload when asked; until cancelled."""
        self._start_source()
        watchers = []
        if self.path is not None:
            path = self.path
            watchers.append(asyncio.ensure_future(filewatch.watch(lambda: (path,), self.wake.set)))
        watchers.append(asyncio.ensure_future(filewatch.watch(self._pac_files, self._poke_pac)))
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                await self.reload()
        finally:
            for task in watchers:
                task.cancel()
            await self._stop_source()

    def _pac_files(self) -> tuple[str, ...]:
        cfg = self.version.cfg
        if not cfg.uses_pac or cfg.embedded_pac is not None or cfg.pac is None:
            return ()
        try:
            path = local_path(cfg.pac)
        except Exception:
            return ()
        return (str(path),) if path is not None else ()

    def _poke_pac(self) -> None:
        if self.source is not None:
            self.source.poke()

    # ----------------------------------------------------------------- reloading

    async def reload(self) -> None:
        """Read, validate, and put in force the file's current version (or refuse it)."""
        state, old = self.state, self.version
        if self.path is None:
            log.warning("%s reload: no --config file to read (the bundled default stays)",
                        self.name)  # fmt: skip
            state.record("unchanged", old.sha256, None)
            return
        try:
            new = await asyncio.to_thread(read_version, self.path)
            # The same build the workers make: the environment (system mode) is checked too.
            policy = Policy.from_config(new.cfg, os.environ)
        except ConfigError as exc:
            log.error("%s reload refused: %s; the policy in force (sha256 %s) stays",
                      self.name, exc, old.sha256[:16])  # fmt: skip
            state.record("invalid", None, str(exc))
            return
        if new.sha256 == old.sha256:
            log.info("%s reloaded: unchanged (sha256 %s)", self.name, old.sha256[:16])
            state.record("unchanged", new.sha256, None)
            self._poke_pac()  # SIGHUP also asks for the PAC again
            return
        changed_pac = pac_identity(old.cfg) != pac_identity(new.cfg)
        if changed_pac:
            await self._stop_source()
        self.version = new
        await self.sink.set_config(self.slot, new)
        if changed_pac:
            # No script until the new source has one: the old one is no longer the intent
            # (and a worker started from now on must not be handed it).
            await self.sink.set_pac(self.slot, NEW_SOURCE)
            self._start_source()
        for warning in policy.warnings:
            log.warning("%s", warning)
        if self.slot == MAIN and old.cfg.transparent_ports != new.cfg.transparent_ports:
            log.warning(
                "transparentPorts changed from %s to %s: in force in the proxy now; the"
                " redirect rules must be re-applied to match (airgap-proxy iptables apply"
                " --config %s; the sidecar entrypoint does it on SIGHUP)",
                _ports_text(old), _ports_text(new), self.path,
            )  # fmt: skip
        state.record("ok", new.sha256, None)
        log.info("%s reloaded: %s sha256 %s -> %s%s", self.name, self.path, old.sha256[:16],
                 new.sha256[:16], " (new PAC source: PAC-decided connections are rejected"
                 " until it has loaded)" if changed_pac and new.cfg.uses_pac else "")  # fmt: skip

    # ----------------------------------------------------------------- the PAC source

    def _start_source(self) -> None:
        if not self.version.cfg.uses_pac:
            return
        slot = self.slot

        async def publish(snap: PacSnapshot) -> None:
            await self.sink.set_pac(slot, snap)

        source = self.make_source(self.version, publish)
        self.source = source

        async def guarded() -> None:
            try:
                await source.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("PAC refresh stopped")
                await source.publish(PacSnapshot(None, error=f"PAC refresh stopped: {exc}"))

        self._source_task = asyncio.ensure_future(guarded())

    async def _stop_source(self) -> None:
        task, self._source_task, self.source = self._source_task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
