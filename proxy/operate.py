"""The admin endpoint of one run put together: what each endpoint reads, in every mode.

The supervisor (or the single process of `--workers 1`) owns one `RunState`: the policy in
force, the PAC source, the fleet of workers and the `/status` board. Each `/status` section
is one provider on the board, so another part of the run adds its own with one
`state.board.add(name, provider)` line (the reload's result is such a section).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.admin import Endpoints, render_registry
from proxy.fleet import Fleet, Verdict, iso_time
from proxy.metrics import DECISIONS, Gauges, Totals, collector
from proxy.pac_source import PacSource
from proxy.status import InForce, StatusBoard, scrub


@dataclass(slots=True)
class RunState:
    """What the admin endpoint of one run reads; a reload replaces `in_force` (and the
    source) and the endpoint follows."""

    in_force: InForce
    fleet: Fleet
    source: PacSource | None = None
    board: StatusBoard = field(default_factory=StatusBoard)

    def __post_init__(self) -> None:
        self.board.secrets = lambda: self.in_force.secrets()
        add = self.board.add
        add("config", lambda: {"path": self.in_force.config_path,
                               "sha256": self.in_force.config_sha256})  # fmt: skip
        add("policy", lambda: self.in_force.describe())
        add("pac", self.pac_status)
        add("workers", self.fleet.describe_workers)
        add("connections", self.connections)
        add("bad_proxies", self.fleet.bad_proxies)
        add("reload", lambda: None)

    def pac_status(self) -> dict[str, Any] | None:
        source = self.source
        if source is None:
            return None
        snap = source.snapshot
        if snap.script is None:
            state = "loading" if source.last_success is None and source.last_error is None \
                else "failing"  # fmt: skip
        else:
            state = "stale" if snap.stale else "in_force"
        error = source.last_error
        label = source.label
        return {
            "source": label,
            "sha256": snap.sha256,
            "state": state,
            "last_success": iso_time(source.last_success),
            "last_error": None
            if error is None
            else {"time": iso_time(error[0]), "message": error[1]},
        }

    def connections(self) -> dict[str, int]:
        totals = self.fleet.totals()
        return {d: int(totals.count("airgap_connections", decision=d)) for d in DECISIONS}

    def read_metrics(self) -> tuple[Totals, Gauges]:
        gauges = self.fleet.gauges()
        pac_sha = ""
        if self.source is not None:
            snap = self.source.snapshot
            gauges.pac_state = 1 if snap.script is not None else 0
            gauges.pac_stale = 1 if snap.stale else 0
            pac_sha = snap.sha256 or ""
        gauges.policy_info = (self.in_force.config_sha256, pac_sha)
        return self.fleet.totals(), gauges

    def endpoints(self, refresh: Callable[[], None] | None = None) -> Endpoints:
        from prometheus_client import CollectorRegistry
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector(self.read_metrics))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        def scrubbed(check: Callable[[], Verdict]) -> Callable[[], Verdict]:
            def verdict() -> Verdict:
                result = check()
                reason = scrub(result.reason, self.in_force.secrets())
                return Verdict(result.ok, str(reason))

            return verdict

        return Endpoints(
            health=scrubbed(self.fleet.health),
            ready=scrubbed(self.fleet.readiness),
            status=self.board.render,
            metrics=lambda: render_registry(registry),
            refresh=refresh,
        )
