"""From per-run measurements to the report: medians, ratios, the issue's targets, markdown.

Kept apart from the runner so the arithmetic can be read (and checked) without a network:
every figure is the median of its repetitions, and every ratio is a ratio of medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: scenario -> target -> list of per-run dicts (metric -> value)
Results = Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]]

BASE, OURS, PEER, SPLICE, LEAN = "baseline", "airgap", "pproxy", "airgap-splice", "lean"
TARGETS = (BASE, OURS, PEER, SPLICE, LEAN)
#: The explicit-proxy columns: ours with `--explicit-listen`, and the forward proxies users
#: would pick instead.
EXPLICIT, TINYPROXY, SQUID = "airgap-explicit", "tinyproxy", "squid"


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a scenario, and the issue's target for it."""

    figure: str
    scenario: str
    metric: str
    digits: int
    target: str = ""
    #: (ours, baseline, peer) medians -> met?; None when it cannot be judged
    check: Callable[[float | None, float | None, float | None], bool | None] | None = None
    #: show ours minus baseline (a latency added) instead of ours / baseline
    added: bool = False


def _ratio_to_peer(limit: float, at_least: bool) -> Callable[..., bool | None]:
    def check(ours: float | None, _base: float | None, peer: float | None) -> bool | None:
        if ours is None or not peer:
            return None
        return ours / peer >= limit if at_least else ours / peer <= limit

    return check


def _at_most(limit: float) -> Callable[..., bool | None]:
    def check(ours: float | None, _base: float | None, _peer: float | None) -> bool | None:
        return None if ours is None else ours <= limit

    return check


def _added_at_most(limit: float) -> Callable[..., bool | None]:
    def check(ours: float | None, base: float | None, _peer: float | None) -> bool | None:
        return None if ours is None or base is None else ours - base <= limit

    return check


def rows(idle_conns: int, conn_rate_conns: int, keepalive_conns: int) -> list[Row]:
    """The table, in the issue's order (with their targets)."""
    return [
        Row("bulk, 1 connection (MiB/s)", "bulk_1", "mib_s", 0,
            ">= 2.5x pproxy", _ratio_to_peer(2.5, True)),
        Row("bulk, 8 connections (MiB/s, total)", "bulk_8", "mib_s", 0),
        Row("proxy CPU-s per GiB, 1 connection", "bulk_1", "cpu_s_per_gib", 3,
            "<= 0.35x pproxy", _ratio_to_peer(0.35, False)),
        Row("proxy CPU-s per GiB, 8 connections", "bulk_8", "cpu_s_per_gib", 3),
        Row(f"new connections/s, `Connection: close`, port 80, {conn_rate_conns} concurrent",
            "conn_rate", "rps", 0, ">= 1.7x pproxy", _ratio_to_peer(1.7, True)),
        Row("  latency p50 at that load (ms)", "conn_rate", "p50_ms", 3),
        Row("  latency p99 at that load (ms)", "conn_rate", "p99_ms", 3),
        Row("proxy CPU-µs per new connection", "conn_rate", "cpu_us_per_req", 0,
            "<= 0.6x pproxy", _ratio_to_peer(0.6, False)),
        Row("latency p50, one new connection at a time (ms)", "latency_1", "p50_ms", 3),
        Row("  added latency p50 over direct (ms)", "latency_1", "p50_ms", 3,
            "<= 0.4 ms", _added_at_most(0.4), added=True),
        Row("  latency p99, one new connection at a time (ms)", "latency_1", "p99_ms", 3),
        Row(f"keep-alive requests/s, {keepalive_conns} connections", "keepalive", "rps", 0,
            ">= 1.3x pproxy", _ratio_to_peer(1.3, True)),
        Row("proxy CPU-µs per keep-alive request", "keepalive", "cpu_us_per_req", 1),
        Row(f"memory per idle relayed connection (KiB, {idle_conns} connections)",
            "memory", "kib_per_conn", 2, "<= 4 KiB", _at_most(4.0)),
        Row("PAC decisions/s, cached", "pac", "cached_per_s", 0,
            ">= 200,000/s", _at_most_inverse(200_000)),
        Row("PAC decisions/s, cold, inside the proxy (pacparser, sandbox hop)", "pac",
            "cold_per_s", 0, "reported (cold cost)"),
        Row("PAC decisions/s, cold, inside the proxy (dukpy, sandbox hop)", "pac",
            "cold_dukpy_per_s", 0),
        Row("PAC evaluations/s in process (pacparser engine, no hop)", "pac",
            "inproc_per_s", 0),
        Row("cold PAC decision inside the proxy, p50 (ms, worker hop included)", "pac",
            "cold_ms_p50", 2),
    ]  # fmt: skip


def _at_most_inverse(floor: float) -> Callable[..., bool | None]:
    def check(ours: float | None, _base: float | None, _peer: float | None) -> bool | None:
        return None if ours is None else ours >= floor

    return check


def median_of(results: Results, scenario: str, target: str, metric: str) -> float | None:
    runs = results.get(scenario, {}).get(target, [])
    values = [run[metric] for run in runs if metric in run and run[metric] is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def summarize(results: Results, table: Sequence[Row]) -> list[dict[str, object]]:
    """Medians per target, ratios and the target verdict, for the JSON file and the table."""
    out = []
    for row in table:
        med = {t: median_of(results, row.scenario, t, row.metric) for t in TARGETS}
        if row.added:
            base = med[BASE]
            med = {
                t: (None if v is None or base is None or t == BASE else v - base)
                for t, v in med.items()
            }
            raw_ours = median_of(results, row.scenario, OURS, row.metric)
            verdict = row.check(raw_ours, base, None) if row.check else None
        else:
            verdict = row.check(med[OURS], med[BASE], med[PEER]) if row.check else None
        out.append(
            {
                "figure": row.figure,
                "scenario": row.scenario,
                "metric": row.metric,
                "digits": row.digits,
                "median": med,
                "ratio_to_baseline": None
                if row.added or med[OURS] is None or not med[BASE]
                else med[OURS] / med[BASE],
                "ratio_to_pproxy": None
                if med[OURS] is None or not med[PEER]
                else med[OURS] / med[PEER],
                "target": row.target,
                "target_met": verdict,
            }
        )
    return out


def markdown(
    summary: Sequence[Mapping[str, object]], with_splice: bool, with_lean: bool = False
) -> str:
    """The table people read: medians, ratios, targets."""
    head = ["figure", "no proxy", "airgap-proxy", "pproxy"]
    if with_splice:
        head.append("airgap --splice")
    if with_lean:
        head.append("lean relay")
    head += ["airgap / no proxy", "airgap / pproxy", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for item in summary:
        med = item["median"]
        digits = int(item["digits"])  # type: ignore[call-overload]
        assert isinstance(med, dict)
        cells = [str(item["figure"]), _fmt(med[BASE], digits), _fmt(med[OURS], digits)]
        cells.append(_fmt(med[PEER], digits))
        if with_splice:
            cells.append(_fmt(med[SPLICE], digits))
        if with_lean:
            cells.append(_fmt(med[LEAN], digits))
        rb, rp = item["ratio_to_baseline"], item["ratio_to_pproxy"]
        cells.append("—" if rb is None else f"{rb:.2f}x")  # type: ignore[str-format]
        cells.append("—" if rp is None else f"{rp:.2f}x")  # type: ignore[str-format]
        cells.append(str(item["target"]) or "")
        met = item["target_met"]
        cells.append("—" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class ExplicitRow:
    """One line of the explicit-proxy table, with the issue's targets as ratios: ours over
    tinyproxy, over Squid, or (bulk) over the transparent path's bulk of the same run."""

    figure: str
    scenario: str
    metric: str
    digits: int
    min_vs_tinyproxy: float | None = None
    min_vs_squid: float | None = None
    min_vs_transparent: float | None = None  # of `bulk_1`, same metric


def explicit_rows(conn_rate_conns: int, keepalive_conns: int) -> list[ExplicitRow]:
    return [
        ExplicitRow(f"CONNECT tunnel set-ups/s (one GET each), {conn_rate_conns} concurrent",
                    "explicit_connect", "rps", 0, min_vs_tinyproxy=1.5, min_vs_squid=1.0),
        ExplicitRow("proxy CPU-µs per tunnel", "explicit_connect", "cpu_us_per_req", 0),
        ExplicitRow(f"keep-alive absolute-form GETs/s, {keepalive_conns} connections",
                    "explicit_keepalive", "rps", 0, min_vs_squid=1.0),
        ExplicitRow("proxy CPU-µs per keep-alive GET", "explicit_keepalive", "cpu_us_per_req", 1),
        ExplicitRow("bulk through one CONNECT tunnel (MiB/s)", "explicit_bulk", "mib_s", 0,
                    min_vs_transparent=0.9),
    ]  # fmt: skip


def summarize_explicit(results: Results, table: Sequence[ExplicitRow]) -> list[dict[str, object]]:
    """Medians per explicit target, the ratios the targets name, and the verdict."""
    out: list[dict[str, object]] = []
    for row in table:
        med = {
            t: median_of(results, row.scenario, t, row.metric) for t in (EXPLICIT, TINYPROXY, SQUID)
        }
        transparent = median_of(results, "bulk_1", OURS, row.metric)
        ours = med[EXPLICIT]

        ratios = {
            "vs_tinyproxy": _ratio(ours, med[TINYPROXY]),
            "vs_squid": _ratio(ours, med[SQUID]),
            "vs_transparent": _ratio(ours, transparent) if row.min_vs_transparent else None,
        }
        limits = {
            "vs_tinyproxy": row.min_vs_tinyproxy,
            "vs_squid": row.min_vs_squid,
            "vs_transparent": row.min_vs_transparent,
        }
        checks = [ratios[k] >= lim for k, lim in limits.items() if lim and ratios[k] is not None]
        judged = all(ratios[k] is not None for k, lim in limits.items() if lim)
        target = ", ".join(
            f">= {lim:g}x {k.removeprefix('vs_')}" for k, lim in limits.items() if lim
        )
        out.append(
            {
                "figure": row.figure,
                "scenario": row.scenario,
                "metric": row.metric,
                "digits": row.digits,
                "median": med,
                "transparent": transparent,
                "ratios": ratios,
                "target": target,
                "target_met": (all(checks) if judged else None) if target else None,
            }
        )
    return out


def _ratio(ours: float | None, other: float | None) -> float | None:
    return None if ours is None or not other else ours / other


def explicit_markdown(summary: Sequence[Mapping[str, object]]) -> str:
    head = ["figure", "airgap-proxy explicit", "tinyproxy", "squid", "ours / tinyproxy",
            "ours / squid", "target", "met"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for item in summary:
        med, ratios = item["median"], item["ratios"]
        assert isinstance(med, dict) and isinstance(ratios, dict)
        digits = int(str(item["digits"]))
        cells = [str(item["figure"])] + [_fmt(med[t], digits) for t in (EXPLICIT, TINYPROXY, SQUID)]
        for key in ("vs_tinyproxy", "vs_squid"):
            value = ratios[key]
            cells.append("—" if value is None else f"{value:.2f}x")
        target = str(item["target"])
        if ratios["vs_transparent"] is not None:
            target += f" (now {ratios['vs_transparent']:.2f}x)"
        cells.append(target)
        met = item["target_met"]
        cells.append("—" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "BASE",
    "EXPLICIT",
    "LEAN",
    "OURS",
    "PEER",
    "SPLICE",
    "SQUID",
    "TARGETS",
    "TINYPROXY",
    "Row",
    "explicit_markdown",
    "explicit_rows",
    "markdown",
    "median_of",
    "rows",
    "summarize",
    "summarize_explicit",
]
