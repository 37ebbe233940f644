"""What each metric counts, how reports cross the pipe, and how the fleet sums them."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.fleet import Fleet
from proxy.metrics import (
    FAMILIES,
    Gauges,
    ProcessMetrics,
    Totals,
    collector,
)


def render(totals: Totals, gauges: Gauges | None = None) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(lambda: (totals, gauges or Gauges())))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_connection_ending_counts_its_decision_error_bytes_and_duration() -> None:
    m = ProcessMetrics()
    m.connection_ended("transparent", "DIRECT", None, 100, 250, 0.02)
    m.connection_ended("transparent", "REJECT", "not_redirected", 0, 0, 0.001)
    m.setup_done(0.0007)
    got = render(m.snapshot())
    key = "airgap_connections_total"
    assert got[(key, (("decision", "DIRECT"), ("path", "transparent")))] == 1
    assert got[(key, (("decision", "REJECT"), ("path", "transparent")))] == 1
    assert got[(key, (("decision", "PROXY"), ("path", "transparent")))] == 0  # shown at 0
    errors = "airgap_connection_errors_total"
    assert got[(errors, (("kind", "not_redirected"), ("path", "transparent")))] == 1
    assert got[("airgap_bytes_total", (("direction", "up"), ("path", "transparent")))] == 100
    assert got[("airgap_bytes_total", (("direction", "down"), ("path", "transparent")))] == 250
    assert got[("airgap_connection_duration_seconds_count", ())] == 2
    # Buckets are cumulative (le): 0.0007 is in le=0.001 and every bucket above.
    assert got[("airgap_setup_seconds_bucket", (("le", "0.0005"),))] == 0
    assert got[("airgap_setup_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("airgap_setup_seconds_bucket", (("le", "+Inf"),))] == 1
    assert got[("airgap_setup_seconds_sum", ())] == pytest.approx(0.0007)


def test_in_flight_bytes_show_while_open_and_never_twice() -> None:
    m = ProcessMetrics()
    open_now = m.snapshot([("transparent", 10, 20)]).count("airgap_bytes", direction="up")
    assert open_now == 10
    m.connection_ended("transparent", "DIRECT", None, 15, 20, 1.0)  # it moved 5 more, ended
    assert m.snapshot([]).count("airgap_bytes", direction="up") == 15


def test_unknown_label_values_are_refused_when_counted_and_dropped_when_read() -> None:
    m = ProcessMetrics()
    with pytest.raises(ValueError):
        m.inc("airgap_pac_fetches", "evil.example")
    hostile = {
        "counters": {
            "airgap_connections": [
                ["transparent", "DIRECT", 3],
                ["transparent", "evil.example", 5],  # not a decision
                ["transparent", "DIRECT", -1],  # negative
                ["transparent", "DIRECT", True],  # not a number
            ],
            "airgap_new_series": [["x", 1]],
            "airgap_connections_active": [["transparent", 9]],  # a gauge, not a counter
        },
        "histograms": {
            "airgap_setup_seconds": {"counts": [1, 2], "sum": 0.1},  # wrong bucket count
            "airgap_pac_evaluation_seconds": {"counts": [0] * 12, "sum": 0.5},
        },
    }
    totals = Totals.from_json(json.loads(json.dumps(hostile)))
    assert totals.counters == {"airgap_connections": {("transparent", "DIRECT"): 3}}
    assert list(totals.histograms) == ["airgap_pac_evaluation_seconds"]
    assert Totals.from_json("nonsense").counters == {}


def test_totals_cross_the_pipe_unchanged() -> None:
    m = ProcessMetrics()
    m.connection_ended("transparent", "PROXY", "reset", 1, 2, 3.0)
    m.upstream_failed("SOCKS5")
    m.pac_evaluated("ok", 0.002)
    m.dns_lookup("timeout")
    m.inc("airgap_shadow_disagreements", "DIRECT", "REJECT")
    again = Totals.from_json(json.loads(json.dumps(m.snapshot().to_json())))
    assert render(again) == render(m.snapshot())


def test_every_family_renders_with_only_its_fixed_label_values() -> None:
    got = render(ProcessMetrics().snapshot(), Gauges(active={"transparent": 0}))
    names = {name for name, _ in got}
    for family in FAMILIES:
        if family.name == "airgap_shadow_disagreements":
            continue  # no series until a shadow policy disagrees
        suffix = {"counter": "_total", "histogram": "_count", "gauge": ""}[family.kind]
        assert family.name + suffix in names, family.name
    for _name, labels in got:
        for label, v in labels:
            family_values = {x for f in FAMILIES for ls, vs in [(f.labels, f.values)]
                             for lbl, allowed in zip(ls, vs, strict=True) if lbl == label
                             for x in allowed}  # fmt: skip
            if label != "le":
                assert v in family_values, (label, v)


def test_policy_info_is_one_series_and_pac_state_only_with_a_pac() -> None:
    got = render(Totals(), Gauges(policy_info=("c" * 64, "p" * 64)))
    info = [k for k in got if k[0] == "airgap_policy_info"]
    assert info == [("airgap_policy_info", (("config_sha256", "c" * 64), ("pac_sha256", "p" * 64)))]
    assert not any(k[0] == "airgap_pac_state" for k in got)
    got = render(Totals(), Gauges(pac_state=0, pac_stale=0))
    assert got[("airgap_pac_state", ())] == 0


def _report(m: ProcessMetrics, listening: bool = True) -> dict:
    return json.loads(json.dumps({"listening": listening, "active": {"transparent": 2},
                                  "totals": m.snapshot().to_json()}))  # fmt: skip


def test_the_fleet_sums_workers_and_a_restart_never_goes_backwards() -> None:
    own = ProcessMetrics()
    own.inc("airgap_pac_fetches", "ok")
    fleet = Fleet(2, uses_pac=False, own=own)
    a, b = ProcessMetrics(), ProcessMetrics()
    for _ in range(3):
        a.connection_ended("transparent", "DIRECT", None, 10, 10, 0.1)
    b.connection_ended("transparent", "REJECT", None, 0, 0, 0.1)
    fleet.started(0, 100)
    fleet.started(1, 101)
    fleet.reported(0, 100, _report(a))
    fleet.reported(1, 101, _report(b))
    total = fleet.totals()
    assert total.count("airgap_connections") == 4
    assert total.count("airgap_pac_fetches", result="ok") == 1
    assert fleet.gauges().active == {"transparent": 4}
    # Worker 0 dies and comes back from zero: its last totals are kept.
    fleet.exited(0, 100)
    fleet.started(0, 102)
    fleet.reported(0, 102, _report(ProcessMetrics()))
    assert fleet.totals().count("airgap_connections") == 4
    assert fleet.totals().count("airgap_bytes", direction="up") == 30
    assert fleet.gauges().active == {"transparent": 4}
    # A late line from the dead worker changes nothing.
    fleet.reported(0, 100, _report(a))
    assert fleet.totals().count("airgap_connections") == 4


def test_health_and_readiness() -> None:
    fleet = Fleet(2, uses_pac=True, own=None)
    assert not fleet.health().ok and "worker 0" in fleet.health().reason
    fleet.started(0, 1)
    fleet.started(1, 2)
    assert fleet.health().ok  # just started: alive until it stays silent too long
    ready = fleet.readiness()
    assert not ready.ok and "starting" in ready.reason
    no_pac = {"listening": True, "pac": {"in_force": False, "error": "PAC not loaded yet"}}
    fleet.reported(0, 1, no_pac)
    fleet.reported(1, 2, no_pac)
    ready = fleet.readiness()
    assert not ready.ok and "PAC not loaded yet" in ready.reason
    fine = {"listening": True, "pac": {"in_force": True, "sha256": "ab"}}
    fleet.reported(0, 1, fine)
    fleet.reported(1, 2, fine)
    assert fleet.readiness() == fleet.readiness().__class__(True, "ready")
    stale = {"listening": True, "pac": {"in_force": True, "stale": True, "error": "down"}}
    fleet.reported(1, 2, stale)
    ready = fleet.readiness()
    assert ready.ok and "stale" in ready.reason and "--pac-stale-grace" in ready.reason
    # A worker silent for too long is neither alive nor ready.
    fleet.workers[1].last_report = time.monotonic() - 60
    assert not fleet.health().ok and "worker 1" in fleet.health().reason
    assert not fleet.readiness().ok
    fleet.reported(1, 2, fine)
    fleet.exited(1, 2)
    assert "restarting" in fleet.readiness().reason and not fleet.health().ok
    fleet.started(1, 3)
    fleet.reported(1, 3, fine)
    assert fleet.readiness().ok
    fleet.draining = True
    assert not fleet.readiness().ok and "draining" in fleet.readiness().reason


def test_bad_proxies_are_merged_over_workers() -> None:
    fleet = Fleet(2, uses_pac=False, own=None)
    fleet.started(0, 1)
    fleet.started(1, 2)
    fleet.reported(0, 1, {"bad_proxies": [{"route": "PROXY 10.0.0.1:3128", "seconds_left": 5}]})
    fleet.reported(1, 2, {"bad_proxies": [{"route": "PROXY 10.0.0.1:3128", "seconds_left": 9},
                                          {"route": 7}]})  # fmt: skip
    assert fleet.bad_proxies() == [{"route": "PROXY 10.0.0.1:3128", "seconds_left": 9}]
