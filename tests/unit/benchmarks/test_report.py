"""The benchmark report's arithmetic: medians of repetitions, ratios of medians, verdicts."""

from __future__ import annotations

from benchmarks import report
from benchmarks.report import EXPLICIT, OURS, SQUID, TINYPROXY


def _runs(*values: float, metric: str = "rps") -> list[dict[str, float]]:
    return [{metric: v} for v in values]


def test_explicit_ratios_are_ratios_of_medians_and_judge_each_named_target() -> None:
    results = {
        "explicit_connect": {
            EXPLICIT: _runs(3000, 9000, 6000),  # median 6000
            TINYPROXY: _runs(4000, 3000, 5000),  # median 4000: 1.5x, met exactly
            SQUID: _runs(7000, 6500, 6000),  # median 6500: 0.92x, missed
        },
        "explicit_bulk": {EXPLICIT: _runs(900, metric="mib_s")},
        "bulk_1": {OURS: _runs(1000, 1100, 900, metric="mib_s")},
    }
    rows = report.explicit_rows(32, 64)
    summary = {(s["scenario"], s["metric"]): s for s in report.summarize_explicit(results, rows)}
    connect = summary[("explicit_connect", "rps")]
    assert connect["median"] == {EXPLICIT: 6000, TINYPROXY: 4000, SQUID: 6500}
    assert connect["ratios"]["vs_tinyproxy"] == 1.5
    assert round(connect["ratios"]["vs_squid"], 3) == round(6000 / 6500, 3)
    assert connect["target_met"] is False, "the Squid target is missed"
    bulk = summary[("explicit_bulk", "mib_s")]
    assert bulk["ratios"]["vs_transparent"] == 0.9 and bulk["target_met"] is True
    keepalive = summary[("explicit_keepalive", "rps")]
    assert keepalive["target_met"] is None, "nothing measured: not judged"
    table = report.explicit_markdown(list(summary.values()))
    assert "| 6,000 | 4,000 | 6,500 | 1.50x | 0.92x |" in table
    assert "(now 0.90x)" in table
