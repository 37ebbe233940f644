"""A worker's report line: whole, at most PIPE_BUF bytes whatever it counted."""

from __future__ import annotations

import itertools
import select

from proxy.control import decode_up
from proxy.metrics import FAMILIES, ProcessMetrics
from proxy.worker_report import MAX_LINE, line


def test_the_largest_report_fits_one_atomic_pipe_write() -> None:
    m = ProcessMetrics()
    for family in FAMILIES:
        if family.kind == "counter":
            for key in itertools.product(*family.values):
                m.totals.counters[family.name][key] = 10**12
    for hist in m.totals.histograms.values():
        hist.counts = [10**12] * len(hist.counts)
        hist.sum = 1e12 / 3
    body = {
        "pid": 4194304,
        "listening": True,
        "pac": {"in_force": False, "sha256": None, "stale": True, "error": "e" * 300},
        "active": {"transparent": 10**6, "explicit": 10**6},
        "totals": m.snapshot().to_json(),
        "bad_proxies": [{"route": f"SOCKS5 [2001:db8::{i:x}]:65535", "seconds_left": 299.9}
                        for i in range(8)],
    }  # fmt: skip
    out = line(body)
    assert MAX_LINE == select.PIPE_BUF and len(out) <= MAX_LINE
    kind, decoded = decode_up(out[:-1])
    assert kind == "report" and decoded["totals"] == body["totals"]
