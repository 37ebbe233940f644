"""Real DNS in a `pac-eval` batch: each name looked up once, ahead of need, within the bound."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pac import cli
from pac.lookups import HostPrefetch, Lookups, host_names, mentions_dns

RESOLVING = (
    "function FindProxyForURL(url, host) {\n"
    '  if (isInNet(host, "10.0.0.0", "255.0.0.0")) return "DIRECT";\n'
    '  return dnsResolve(host) ? "PROXY p.example:1" : "PROXY q.example:1";\n}\n'
)


def _batch(tmp_path: Path, script: str, hosts: list[str], capsys: pytest.CaptureFixture) -> str:
    pac = tmp_path / "p.pac"
    pac.write_text(script)
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{h}:443\n" for h in hosts))
    assert cli.main([str(pac), "--urls", str(urls)]) == 0
    return capsys.readouterr().out


def test_a_batch_looks_each_name_up_once_and_gets_the_rounds_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    asked: Counter[str] = Counter()
    lock = threading.Lock()

    def resolver(name: str) -> list[str]:
        with lock:
            asked[name] += 1
        return {"in.example": ["10.1.1.1"], "out.example": ["198.51.100.1"]}.get(name, [])

    monkeypatch.setattr(cli, "_system_resolver", resolver)
    hosts = ["in.example", "out.example", "nx.example"] * 700  # over two chunks
    out = _batch(tmp_path, RESOLVING, hosts, capsys).splitlines()
    assert out == ["DIRECT", "PROXY p.example:1", "PROXY q.example:1"] * 700
    assert asked == {"in.example": 1, "out.example": 1, "nx.example": 1}


def test_a_hung_lookup_costs_its_bound_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    release = threading.Event()

    def hanging(name: str) -> list[str]:
        release.wait(10)  # a resolver that does not answer
        return ["10.1.1.1"]

    monkeypatch.setattr(cli, "_system_resolver", hanging)
    monkeypatch.setattr(cli, "DNS_TIMEOUT", 0.3)
    started = time.monotonic()
    try:
        out = _batch(tmp_path, RESOLVING, ["slow.example"], capsys)
    finally:
        release.set()
    assert out == "PROXY q.example:1\n"  # did not resolve within the bound: fail closed
    assert time.monotonic() - started < 3


def test_lookups_urgent_requests_pass_queued_prefetches() -> None:
    gate = threading.Event()
    order: list[str] = []

    def lookup(name: str) -> list[str]:
        if name == "first.example":
            gate.wait(5)
        order.append(name)
        return ["192.0.2.1"]

    lookups = Lookups(lookup, timeout=5, threads=1)
    lookups.prefetch(["first.example", "a.example", "b.example"])
    result: list[list[str]] = []
    asker = threading.Thread(target=lambda: result.append(lookups.resolve("urgent.example")))
    asker.start()
    gate.set()
    asker.join(5)
    assert result == [["192.0.2.1"]]
    assert order[:2] == ["first.example", "urgent.example"]
    assert lookups.known(["a.example", "b.example"], time.monotonic() + 5) == {
        "a.example": ("192.0.2.1",),
        "b.example": ("192.0.2.1",),
    }


def test_prefetch_follows_what_the_script_reads() -> None:
    assert mentions_dns(RESOLVING) and not mentions_dns('function F(u, h) { return "x"; }')
    assert host_names(["A.example", "a.example", "10.0.0.1", "[2001:db8::1]", "b.example."]) == [
        "a.example",
        "b.example",
    ]
    prefetch = HostPrefetch(RESOLVING)
    assert prefetch.on
    prefetch.observe(["a.example", "b.example", "10.0.0.1"], [[], [], ["10.0.0.1"]])
    assert not prefetch.on  # the script did not read its host: stop looking ahead
    prefetch.observe(["a.example", "b.example"], [["a.example"], []])
    assert prefetch.on
    never = HostPrefetch('function FindProxyForURL(u, h) { return "DIRECT"; }')
    never.observe(["a.example"], [["a.example"]])
    assert not never.on
