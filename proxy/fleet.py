"""What the admin endpoint knows about the workers: who runs, what each reported, and from
that whether the proxy is alive and ready.

The supervisor tells a `Fleet` when it starts a worker, what each worker reports over its
report pipe, and when one exits; with `--workers 1` the one process reports itself before
each admin request. Health and readiness are computed here from those facts (pure code, no
I/O), so they are the same in every mode and testable without processes.

A worker's report carries its totals since it started (`proxy.metrics.Totals`); when it
exits, its last totals move into `retired`, so the sum over the fleet never goes down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.metrics import PATHS, Gauges, ProcessMetrics, Totals

#: A worker that has not reported for this long is not alive (its loop is stuck).
SILENCE = 10.0


@dataclass(slots=True)
class WorkerPac:
    """The PAC state one worker decides with (its own engines may fail to load a script)."""

    in_force: bool
    sha256: str | None = None
    stale: bool = False
    error: str | None = None

    @classmethod
    def from_json(cls, data: object) -> WorkerPac | None:
        if not isinstance(data, dict):
            return None
        sha, error = data.get("sha256"), data.get("error")
        return cls(
            in_force=data.get("in_force") is True,
            sha256=sha if isinstance(sha, str) else None,
            stale=data.get("stale") is True,
            error=error if isinstance(error, str) else None,
        )


@dataclass(slots=True)
class WorkerState:
    index: int
    pid: int
    started: float  # wall clock
    started_monotonic: float
    last_report: float | None = None  # monotonic
    listening: bool = False
    pac: WorkerPac | None = None
    active: dict[str, int] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    bad_proxies: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str


class Fleet:
    """The workers of one run, as the supervisor (or the single process) sees them."""

    def __init__(self, count: int, uses_pac: bool, own: ProcessMetrics | None) -> None:
        self.count = count
        self.uses_pac = uses_pac
        #: Counts of the serving process itself (the supervisor); None when the one worker
        #: is the serving process, whose report already holds them.
        self.own = own
        self.workers: dict[int, WorkerState] = {}
        self.retired = Totals()
        self.draining = False

    # ------------------------------------------------------------ what the supervisor says

    def started(self, index: int, pid: int) -> None:
        self.workers[index] = WorkerState(index, pid, time.time(), time.monotonic())

    def reported(self, index: int, pid: int, body: dict[str, Any]) -> None:
        """A worker's report (already decoded JSON); unknown fields are ignored."""
        worker = self.workers.get(index)
        if worker is None or worker.pid != pid:
            return  # a late line from a worker already replaced
        worker.last_report = time.monotonic()
        worker.listening = body.get("listening") is True
        worker.pac = WorkerPac.from_json(body.get("pac"))
        active = body.get("active")
        if isinstance(active, dict):
            worker.active = {
                p: n for p, n in active.items() if p in PATHS and isinstance(n, int) and n >= 0
            }
        worker.totals = Totals.from_json(body.get("totals"))
        bad = body.get("bad_proxies")
        if isinstance(bad, list):
            worker.bad_proxies = [b for b in bad[:256] if isinstance(b, dict)]

    def exited(self, index: int, pid: int) -> None:
        worker = self.workers.get(index)
        if worker is not None and worker.pid == pid:
            self.retired.add(worker.totals)
            del self.workers[index]

    # ------------------------------------------------------------ what the endpoint reads

    def totals(self) -> Totals:
        out = Totals()
        if self.own is not None:
            out.add(self.own.snapshot())
        out.add(self.retired)
        for worker in self.workers.values():
            out.add(worker.totals)
        return out

    def gauges(self) -> Gauges:
        active: dict[str, int] = {"transparent": 0}
        for worker in self.workers.values():
            for path, n in worker.active.items():
                active[path] = active.get(path, 0) + n
        return Gauges(active=active, workers=len(self.reporting()))

    def reporting(self) -> list[WorkerState]:
        now = time.monotonic()
        return [
            w
            for w in self.workers.values()
            if w.last_report is not None and now - w.last_report < SILENCE
        ]

    def health(self) -> Verdict:
        """Alive: every worker runs and its loop answers (it reported lately)."""
        now = time.monotonic()
        for index in range(self.count):
            worker = self.workers.get(index)
            if worker is None:
                return Verdict(False, f"worker {index} is not running (restarting)")
            since = worker.last_report if worker.last_report is not None else None
            if since is None:
                if now - worker.started_monotonic >= SILENCE:
                    return Verdict(False, f"worker {index} has not reported since it started")
            elif now - since >= SILENCE:
                return Verdict(False, f"worker {index} has not reported for {now - since:.0f} s")
        return Verdict(True, "ok")

    def readiness(self) -> Verdict:
        """Ready: not draining; every worker listens; with a PAC, every worker has a
        script in force (a stale one under --pac-stale-grace counts, and the body says)."""
        if self.draining:
            return Verdict(False, "draining: stopping, new connections are refused")
        stale: str | None = None
        now = time.monotonic()
        for index in range(self.count):
            worker = self.workers.get(index)
            if worker is None:
                return Verdict(False, f"worker {index} is restarting")
            if not worker.listening or worker.last_report is None:
                return Verdict(False, f"worker {index} is starting (not listening yet)")
            if now - worker.last_report >= SILENCE:
                return Verdict(False, f"worker {index} has not reported lately")
            if self.uses_pac:
                pac = worker.pac
                if pac is None or not pac.in_force:
                    error = pac.error if pac is not None and pac.error else "no script"
                    return Verdict(False, f"PAC not in force in worker {index}: {error}")
                if pac.stale:
                    stale = pac.error or "PAC failing"
        if stale is not None:
            return Verdict(
                True, f"ready, on a stale PAC script kept under --pac-stale-grace ({stale})"
            )
        return Verdict(True, "ready")

    def bad_proxies(self) -> list[dict[str, Any]]:
        """The proxies tried last now, as any worker reported them (merged by route)."""
        merged: dict[str, dict[str, Any]] = {}
        for worker in self.workers.values():
            for entry in worker.bad_proxies:
                route = entry.get("route")
                left = entry.get("seconds_left")
                if not isinstance(route, str) or not isinstance(left, int | float):
                    continue
                known = merged.get(route)
                if known is None or known["seconds_left"] < left:
                    merged[route] = {"route": route, "seconds_left": round(left, 1)}
        return sorted(merged.values(), key=lambda e: e["route"])

    def describe_workers(self) -> list[dict[str, Any]]:
        return [
            {
                "index": w.index,
                "pid": w.pid,
                "started": iso_time(w.started),
                "listening": w.listening,
                "connections": sum(w.active.values()),
                "pac_in_force": None if w.pac is None else w.pac.in_force,
            }
            for w in sorted(self.workers.values(), key=lambda w: w.index)
        ]


def iso_time(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
