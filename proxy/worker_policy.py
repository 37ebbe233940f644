"""The policies one worker decides with, swapped between connections, never under one.

A worker holds two slots: `main`, the policy enforced, and `shadow`, decided beside it for
the audit only (`--shadow-config`). Each is built from a validated file version
(`proxy.reload.ConfigVersion`) and, when it uses a PAC, a `PacDecider` of its own (its own
engine processes), fed the snapshots its owner publishes.

A new version replaces the slot's `Policy` object on the worker's `ProxyContext` in one
assignment, on the event loop: a connection reads the decider from the context when it
decides, so every connection decided after the swap uses the new policy and none is cut or
re-decided (its route stays). A policy whose PAC source changed gets a new decider with no
script: its PAC-decided connections are REJECTed ("PAC unavailable") until the new source's
first script has loaded; one whose PAC source is the same keeps the script in force. Either
way the decision caches start empty (a new `Policy` has an empty one; the PAC decider's are
cleared).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from proxy.connection import ProxyContext
from proxy.control import MAIN, SHADOW
from proxy.pac_decider import PacDecider
from proxy.pac_source import PacSnapshot
from proxy.reload import ConfigVersion, pac_identity
from rules.policy import Policy

log = logging.getLogger("airgap.proxy")

#: Seconds a replaced PAC decider is kept, so evaluations under way finish on it.
RETIRE_AFTER = 5.0


@dataclass(slots=True)
class _Slot:
    version: ConfigVersion | None = None
    policy: Policy | None = None
    pac_id: tuple[str, str] | None = None
    decider: PacDecider | None = None


class WorkerPolicy:
    """The main and shadow policies of one worker, and where they are installed."""

    def __init__(self, make_decider: Callable[[str], PacDecider]) -> None:
        self.make_decider = make_decider
        self.slots = {MAIN: _Slot(), SHADOW: _Slot()}
        self.ctx: ProxyContext | None = None
        #: Set once the main policy is known.
        self.ready = asyncio.Event()
        #: Set once the main policy is in force: known and, when it uses a PAC, given its
        #: owner's current script (loaded or not): a worker of a supervisor serves only then.
        self.in_force = asyncio.Event()
        self._retiring: dict[asyncio.Future[None], PacDecider] = {}

    @property
    def main(self) -> Policy | None:
        return self.slots[MAIN].policy

    @property
    def shadow(self) -> Policy | None:
        return self.slots[SHADOW].policy

    def attach(self, ctx: ProxyContext) -> None:
        """Install the policies in force on `ctx`, and every later one as it comes."""
        self.ctx = ctx
        self._install()

    async def set_config(self, slot: str, version: ConfigVersion) -> None:
        """Put `version` in force for `slot` (it was validated by the owner)."""
        s = self.slots[slot]
        if s.version is not None and s.version.sha256 == version.sha256:
            return
        policy = Policy.from_config(version.cfg, os.environ)
        pac_id = pac_identity(version.cfg)
        retired: PacDecider | None = None
        if policy.uses_pac:
            if s.decider is None or pac_id != s.pac_id:
                retired, s.decider = s.decider, self.make_decider(slot)
            else:
                s.decider.cache.clear()
                s.decider.failures.clear()
            policy = policy.with_pac_decider(s.decider)
        else:
            retired, s.decider = s.decider, None
        s.version, s.policy, s.pac_id = version, policy, pac_id
        self._install()
        if slot == MAIN:
            self.ready.set()
            if not policy.uses_pac:
                self.in_force.set()
        if retired is not None:
            self._retire(retired)

    async def set_pac(self, slot: str, snap: PacSnapshot) -> None:
        decider = self.slots[slot].decider
        if decider is not None:
            await decider.set_snapshot(snap)
            if slot == MAIN:
                self.in_force.set()

    def _install(self) -> None:
        ctx, main = self.ctx, self.slots[MAIN].policy
        if ctx is None or main is None:
            return
        ctx.decider = main
        ctx.transparent_ports = main.transparent_ports
        ctx.shadow = self.slots[SHADOW].policy

    def _retire(self, decider: PacDecider) -> None:
        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER)
            await decider.aclose()

        task = asyncio.ensure_future(later())
        self._retiring[task] = decider
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def aclose(self) -> None:
        deciders = [s.decider for s in self.slots.values() if s.decider is not None]
        for task, decider in list(self._retiring.items()):
            task.cancel()  # being retired: closed now rather than at the end of its pause
            deciders.append(decider)
        for decider in deciders:
            await decider.aclose()
