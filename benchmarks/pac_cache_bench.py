"""Cached PAC decisions per second inside the proxy (target: >= 200,000/s).

Measures `PacDecider.decide` as a connection calls it, for destinations whose decision is
already cached (the common case: many connections to few names), against a cold evaluation
through the engine worker for reference. Prints a markdown table; `--json FILE` too.

    python3 -m benchmarks.pac_cache_bench [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from pac.sandbox import Limits
from proxy.pac_decider import PacDecider
from proxy.pac_source import PacSnapshot, sha256_text
from proxy.resolver import NameResolver
from rules.model import Destination

CORPORATE = Path(__file__).with_name("corporate.pac")


async def _measure(decisions: int, reps: int, names: int) -> dict[str, float]:
    script = CORPORATE.read_text()
    decider = PacDecider(NameResolver(), Limits(), "pacparser", evaluators=1)
    await decider.set_snapshot(PacSnapshot(script, sha256_text(script)))
    dests = [
        Destination(f"203.0.113.{i % 250 + 1}", 443, f"host{i}.example.com", "10.1.2.3")
        for i in range(names)
    ]
    try:
        cold = []
        for dest in dests:
            started = time.perf_counter()
            decision = await decider.decide(dest)
            cold.append(time.perf_counter() - started)
            assert decision.reason, "every decision has a reason"
        rates = []
        for _ in range(reps):
            started = time.perf_counter()
            for i in range(decisions):
                await decider.decide(dests[i % names])
            rates.append(decisions / (time.perf_counter() - started))
        return {
            "cached_decisions_per_s": statistics.median(rates),
            "cold_decision_ms_p50": statistics.median(cold) * 1000,
            "cache_entries": float(len(decider.cache)),
        }
    finally:
        await decider.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    decisions, reps, names = (50_000, 3, 50) if args.quick else (500_000, 5, 200)
    figures = asyncio.run(_measure(decisions, reps, names))
    print("| figure | value | target |")
    print("| --- | ---: | --- |")
    rate = figures["cached_decisions_per_s"]
    print(f"| cached PAC decisions/s (median of {reps}) | {rate:,.0f} | >= 200,000 |")
    cold = figures["cold_decision_ms_p50"]
    label = "cold PAC decision inside the proxy, p50 (worker hop included)"
    print(f"| {label} | {cold:.2f} ms | reported |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
