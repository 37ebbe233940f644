"""What the proxy counts, and how counts from many processes become one Prometheus scrape.

Every process (a worker, the supervisor, or the one process of `--workers 1`) keeps its
counts in a `ProcessMetrics`: plain integers in dicts, no lock, no system call, so the
connection path pays a few dict updates per connection (bytes are added once, when a
connection ends, never per relayed chunk). A worker sends its totals since it started to
the supervisor over its report pipe (`proxy.control`) about once a second and when it
stops; the supervisor keeps the newest totals of each live worker and, when a worker exits,
folds its last totals into a "retired" sum. The scrape is the supervisor's own counts plus
the retired sum plus every live worker's totals, so a restarted worker (which starts again
from zero) never makes a counter go backwards.

Label values come only from the fixed sets in `FAMILIES`: a value that is not listed is
dropped when a report is read, never rendered (an unbounded label is a denial of service
on the monitoring system). Hosts, clients and PAC text never become labels.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PATHS = ("transparent", "explicit")
DECISIONS = ("DIRECT", "PROXY", "REJECT")
ROUTE_KINDS = ("DIRECT", "PROXY", "HTTPS", "SOCKS4", "SOCKS5")

#: Why a connection ended badly (`airgap_connection_errors_total{kind}`).
ERROR_KINDS = (
    "route_failed",  # every route failed to connect (the client was reset)
    "upstream_refused",  # an upstream proxy answered with a refusal (REJECT)
    "route_refused",  # every route was refused by the routing rules (a name check, SOCKS4)
    "reset",  # a side of the relay was reset
    "timeout",  # the relay was idle past --idle-timeout
    "no_original_dst",  # the kernel could not tell where it was going
    "not_redirected",  # addressed to the proxy's own listener
    "over_limit",  # past --max-connections
    "client_closed",  # the client left before its relay started
    "drain_cut",  # still open at the end of --drain-timeout
    "internal",  # a bug: the set-up raised
)
PAC_EVAL_RESULTS = ("ok", "cached", "error", "timeout", "overloaded", "unavailable")
PAC_FETCH_RESULTS = ("ok", "unchanged", "error", "invalid")
DNS_RESULTS = ("ok", "not_found", "timeout")
RELOAD_RESULTS = ("ok", "unchanged", "invalid")

#: Accept to relay start: mostly sub-millisecond; a PAC or a slow upstream adds more.
SETUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
PAC_EVAL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its name (without `_total`), help, labels and their allowed values."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    values: tuple[tuple[str, ...], ...] = ()
    buckets: tuple[float, ...] = ()
    #: Counted in the workers (summed over them) or in the process that serves the scrape.
    where: Literal["worker", "supervisor"] = "worker"

    def allows(self, key: tuple[str, ...]) -> bool:
        return len(key) == len(self.values) and all(
            v in allowed for v, allowed in zip(key, self.values, strict=True)
        )


FAMILIES: tuple[Family, ...] = (
    Family("airgap_connections", "counter", "Connections ended, by decision.",
           ("path", "decision"), (PATHS, DECISIONS)),
    Family("airgap_connection_errors", "counter", "Connections that ended badly, by kind.",
           ("path", "kind"), (PATHS, ERROR_KINDS)),
    Family("airgap_connections_active", "gauge", "Connections open now.", ("path",), (PATHS,)),
    Family("airgap_bytes", "counter", "Bytes relayed (up: client to destination).",
           ("path", "direction"), (PATHS, ("up", "down"))),
    Family("airgap_setup_seconds", "histogram", "Accept to relay start.",
           buckets=SETUP_BUCKETS),
    Family("airgap_connection_duration_seconds", "histogram", "Accept to close, relayed or not.",
           buckets=DURATION_BUCKETS),
    Family("airgap_upstream_failures", "counter", "Route attempts that could not be used.",
           ("route_kind",), (ROUTE_KINDS,)),
    Family("airgap_pac_evaluations", "counter", "PAC decisions, by how they were answered.",
           ("result",), (PAC_EVAL_RESULTS,)),
    Family("airgap_pac_evaluation_seconds", "histogram", "One PAC evaluation in an engine.",
           buckets=PAC_EVAL_BUCKETS),
    Family("airgap_dns_lookups", "counter", "Name lookups sent to the resolver.",
           ("result",), (DNS_RESULTS,)),
    Family("airgap_shadow_disagreements", "counter",
           "Connections the shadow policy would have decided otherwise.",
           ("enforced", "shadow"), (DECISIONS, DECISIONS)),
    Family("airgap_pac_fetches", "counter", "PAC downloads and re-reads, by result.",
           ("result",), (PAC_FETCH_RESULTS,), where="supervisor"),
    Family("airgap_config_reloads", "counter", "Config reloads, by result.",
           ("result",), (RELOAD_RESULTS,), where="supervisor"),
    Family("airgap_worker_restarts", "counter", "Workers restarted after they exited.",
           where="supervisor"),
)  # fmt: skip
BY_NAME: Mapping[str, Family] = {f.name: f for f in FAMILIES}


class Histogram:
    """Bucket counts (not cumulative: `counts[i]` is the number in bucket i) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, counts: list[int], total: float) -> None:
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.sum += total


Key = tuple[str, ...]


@dataclass(slots=True)
class Totals:
    """Counts of one or more processes: the shape that crosses the report pipe."""

    counters: dict[str, dict[Key, float]] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def add(self, other: Totals) -> None:
        for name, values in other.counters.items():
            mine = self.counters.setdefault(name, {})
            for key, n in values.items():
                mine[key] = mine.get(key, 0) + n
        for name, hist in other.histograms.items():
            target = self.histograms.get(name)
            if target is None:
                target = self.histograms[name] = Histogram(hist.bounds)
            target.add(hist.counts, hist.sum)

    def count(self, name: str, **labels: str) -> float:
        """The sum over the series of `name` that match `labels` (for /status and tests)."""
        family = BY_NAME[name]
        where = [(family.labels.index(k), v) for k, v in labels.items()]
        return sum(
            n
            for key, n in self.counters.get(name, {}).items()
            if all(key[i] == v for i, v in where)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": {
                name: [[*key, n] for key, n in values.items()]
                for name, values in self.counters.items()
            },
            "histograms": {
                name: {"counts": h.counts, "sum": h.sum} for name, h in self.histograms.items()
            },
        }

    @classmethod
    def from_json(cls, data: object) -> Totals:
        """A report's totals; anything not in `FAMILIES` (name, label value, bucket count)
        is dropped, so a confused sender can neither add a series nor break the scrape."""
        out = cls()
        if not isinstance(data, dict):
            return out
        counters = data.get("counters")
        if isinstance(counters, dict):
            for name, rows in counters.items():
                family = BY_NAME.get(name)
                if family is None or family.kind != "counter" or not isinstance(rows, list):
                    continue
                values = out.counters.setdefault(name, {})
                for row in rows:
                    if not isinstance(row, list) or not row:
                        continue
                    *key, n = row
                    if not _is_number(n) or not all(isinstance(k, str) for k in key):
                        continue
                    if family.allows(tuple(key)):
                        values[tuple(key)] = values.get(tuple(key), 0) + n
        hists = data.get("histograms")
        if isinstance(hists, dict):
            for name, body in hists.items():
                family = BY_NAME.get(name)
                if family is None or family.kind != "histogram" or not isinstance(body, dict):
                    continue
                counts, total = body.get("counts"), body.get("sum")
                if (
                    isinstance(counts, list)
                    and len(counts) == len(family.buckets) + 1
                    and all(isinstance(n, int) and n >= 0 for n in counts)
                    and _is_number(total)
                ):
                    hist = Histogram(family.buckets)
                    hist.add(counts, float(total))  # type: ignore[arg-type]
                    out.histograms[name] = hist
        return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


class ProcessMetrics:
    """One process's counts. The methods the connection path calls do a few dict updates
    and nothing else: no lock (one event loop per process), no system call."""

    __slots__ = ("_bytes", "_conns", "_dns", "_errors", "_evals", "_upstream", "totals")

    def __init__(self) -> None:
        self.totals = Totals()
        c = self.totals.counters
        for family in FAMILIES:
            if family.kind == "counter":
                c[family.name] = {}
            elif family.kind == "histogram":
                self.totals.histograms[family.name] = Histogram(family.buckets)
        self._conns = c["airgap_connections"]
        self._errors = c["airgap_connection_errors"]
        self._bytes = c["airgap_bytes"]
        self._upstream = c["airgap_upstream_failures"]
        self._evals = c["airgap_pac_evaluations"]
        self._dns = c["airgap_dns_lookups"]

    def inc(self, name: str, *key: str, n: float = 1) -> None:
        """Add to a counter by name (for the rarer events); an unknown series is refused."""
        family = BY_NAME[name]
        if not family.allows(key):
            raise ValueError(f"{name}: {key!r} is not one of its label values")
        values = self.totals.counters[name]
        values[key] = values.get(key, 0) + n

    def observe(self, name: str, value: float) -> None:
        self.totals.histograms[name].observe(value)

    # The connection path: fixed label values, no checks.

    def connection_ended(
        self, path: str, decision: str, error_kind: str | None, up: int, down: int,
        duration: float,
    ) -> None:  # fmt: skip
        conns = self._conns
        key = (path, decision)
        conns[key] = conns.get(key, 0) + 1
        if error_kind is not None:
            errors = self._errors
            key = (path, error_kind)
            errors[key] = errors.get(key, 0) + 1
        if up or down:
            self.add_bytes(path, up, down)
        self.totals.histograms["airgap_connection_duration_seconds"].observe(duration)

    def add_bytes(self, path: str, up: int, down: int) -> None:
        b = self._bytes
        b[(path, "up")] = b.get((path, "up"), 0) + up
        b[(path, "down")] = b.get((path, "down"), 0) + down

    def setup_done(self, seconds: float) -> None:
        self.totals.histograms["airgap_setup_seconds"].observe(seconds)

    def upstream_failed(self, route_kind: str) -> None:
        u = self._upstream
        u[(route_kind,)] = u.get((route_kind,), 0) + 1

    def pac_evaluated(self, result: str, seconds: float | None = None) -> None:
        e = self._evals
        e[(result,)] = e.get((result,), 0) + 1
        if seconds is not None:
            self.totals.histograms["airgap_pac_evaluation_seconds"].observe(seconds)

    def dns_lookup(self, result: str) -> None:
        d = self._dns
        d[(result,)] = d.get((result,), 0) + 1

    def snapshot(self, in_flight: Iterable[tuple[str, int, int]] = ()) -> Totals:
        """A copy of the totals, with the bytes of connections still open (path, up, down)
        added: a long transfer shows while it runs, and when it ends its bytes move from
        "in flight" to the counts in one step, so the sum never goes down."""
        copy = Totals()
        copy.add(self.totals)
        b = copy.counters["airgap_bytes"]
        for path, up, down in in_flight:
            b[(path, "up")] = b.get((path, "up"), 0) + up
            b[(path, "down")] = b.get((path, "down"), 0) + down
        return copy


#: This process's counts: each process has one event loop and one of these.
METRICS = ProcessMetrics()


# --------------------------------------------------------------------- rendering


@dataclass(slots=True)
class Gauges:
    """Values that are the state now, not sums over time, from the serving process."""

    active: dict[str, int] = field(default_factory=dict)  # path -> open connections
    pac_state: int | None = None  # 1 in force, 0 failing; None: no PAC in the policy
    pac_stale: int | None = None
    policy_info: tuple[str, str] | None = None  # (config_sha256, pac_sha256)
    workers: int = 0


def collector(read: Callable[[], tuple[Totals, Gauges]]) -> Any:
    """A prometheus-client collector that renders `read()` at every scrape."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self) -> Iterator[Any]:
            totals, gauges = read()
            for family in FAMILIES:
                if family.kind == "counter":
                    metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
                    values = totals.counters.get(family.name, {})
                    for key in sorted(set(values) | set(zero_series(family))):
                        if family.allows(key):
                            metric.add_metric(list(key), values.get(key, 0))
                    yield metric
                elif family.kind == "histogram":
                    hist = totals.histograms.get(family.name) or Histogram(family.buckets)
                    running, buckets = 0, []
                    for bound, n in zip((*family.buckets, float("inf")), hist.counts,
                                        strict=True):  # fmt: skip
                        running += n
                        buckets.append((_le(bound), running))
                    histogram = HistogramMetricFamily(family.name, family.help)
                    histogram.add_metric([], buckets, hist.sum)
                    yield histogram
            active = GaugeMetricFamily(
                "airgap_connections_active", "Connections open now.", labels=["path"]
            )
            for path in PATHS:
                if path in gauges.active:
                    active.add_metric([path], gauges.active[path])
            yield active
            yield GaugeMetricFamily("airgap_workers", "Worker processes running and reporting.",
                                    value=gauges.workers)  # fmt: skip
            if gauges.pac_state is not None:
                yield GaugeMetricFamily(
                    "airgap_pac_state", "1: a PAC script is in force; 0: PAC failing (every "
                    "PAC-decided connection is rejected).", value=gauges.pac_state,
                )  # fmt: skip
                yield GaugeMetricFamily(
                    "airgap_pac_stale", "1 while the last good script is kept under "
                    "--pac-stale-grace after failures.", value=gauges.pac_stale or 0,
                )  # fmt: skip
            info = GaugeMetricFamily(
                "airgap_policy_info", "The policy in force (value 1).",
                labels=["config_sha256", "pac_sha256"],
            )  # fmt: skip
            if gauges.policy_info is not None:
                info.add_metric(list(gauges.policy_info), 1)
            yield info

    return _Collector()


#: The paths whose series are shown from the start (at 0), so `rate()` works at once.
PATHS_SHOWN = ("transparent", "explicit")


def zero_series(family: Family) -> list[Key]:
    """The series of `family` shown at 0 before anything is counted: every combination of
    its label values (only the paths in `PATHS_SHOWN`); none for the shadow policy's, which
    most runs do not have."""
    if family.name == "airgap_shadow_disagreements":
        return []
    keys: list[Key] = [()]
    for label, allowed in zip(family.labels, family.values, strict=True):
        choices = PATHS_SHOWN if label == "path" else allowed
        keys = [(*k, v) for k in keys for v in choices]
    return keys


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
