"""PAC evaluation benchmark: our engines against pacparser's bare `find_proxy`, same run.

    python -m benchmarks.pac_bench [--quick] [--json FILE]

Measures, on a realistic corporate PAC (benchmarks/corporate.pac, 50+ rules):

1. In-process evaluations/s: bare `pacparser.find_proxy` (the baseline: pacparser's own
   helpers, no hermetic DNS, no reads, no bounds) against `PacparserEngine` and
   `DukpyEngine` (our helpers, hermetic DNS, read tracking).
2. Per-decision cost inside the proxy: `AsyncPacSandbox.evaluate` round trips (the worker
   hop included), one at a time, as the proxy calls it.
3. Whole processes: `pac-eval PAC --urls FILE` over tens of thousands of targets against a
   bare pacparser loop over the same targets (start-up included), on corporate.pac and on
   corporate_dns.pac (resolves most hosts), with `--no-dns` and with real DNS, where DNS
   fails at once (a network namespace without interfaces). Goal: ratio <= 1.5.

Every figure is the median of several repetitions; ratios are against the baseline measured
in the same run. Output: a markdown table on stdout, and `--json FILE` for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PAC = Path(__file__).resolve().parent / "corporate.pac"
#: The whole-process comparison runs both: one that resolves little (DNS only for IP
#: literals) and one that resolves most hosts (dnsResolve / isInNet / isResolvable).
PACS = (PAC, Path(__file__).resolve().parent / "corporate_dns.pac")

BARE_LOOP = """
import sys, pacparser
pacparser.init()
pacparser.parse_pac_string(open(sys.argv[1]).read())
out = []
for line in open(sys.argv[2]):
    url, host = line.split()
    out.append(pacparser.find_proxy(url, host))
sys.stdout.write("\\n".join(out) + "\\n")
"""


def targets(n: int) -> list[tuple[str, str]]:
    """A deterministic mix like real egress: names of every kind, IPs, ports 80/443/other."""
    names = [
        "www.example.com",
        "api.github.example",
        "cdn.jsdelivr.example",
        "wiki.corp.example",
        "x.ads.example",
        "portal.supplier-a.example",
        "pypi.example",
        "update3.vendor.example",
        "a.b.s3.eu-west-1.amazonaws.example",
        "mail",
        "deep.a.b.c.d.e.f.example",
        "login.bank.example",
        "build.ci.example",
        "static.news.example",
    ]
    ips = ["10.1.2.3", "172.20.0.9", "100.70.1.1", "203.0.113.50", "192.168.7.7", "198.51.100.4"]
    out = []
    for i in range(n):
        port = (443, 80, 8080, 22, 443, 443, 5432)[i % 7]
        host = f"h{i}.{names[i % len(names)]}" if i % 3 else ips[i % len(ips)]
        if i % 11 == 0:
            host = names[i % len(names)]
        scheme = "https" if port == 443 else "http"
        out.append((f"{scheme}://{host}:{port}", host))
    return out


def rate(fn: Callable[[], None], calls: int, reps: int) -> float:
    """Median calls per second of `fn` (which makes `calls` evaluations) over `reps` runs."""
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(calls / (time.perf_counter() - started))
    return statistics.median(samples)


def in_process(items: list[tuple[str, str]], reps: int) -> dict[str, float]:
    import pacparser

    from pac.engine import load_engine
    from pac.env import PacEnv

    script = PAC.read_text()
    pacparser.init()
    pacparser.parse_pac_string(script)

    def bare() -> None:
        for url, host in items:
            pacparser.find_proxy(url, host)

    out = {"pacparser bare find_proxy (baseline)": rate(bare, len(items), reps)}
    pacparser.cleanup()
    env = PacEnv()
    for name in ("pacparser", "dukpy"):
        engine = load_engine(name, script)

        def ours(engine: Any = engine) -> None:
            for url, host in items:
                engine.evaluate(url, host, env)

        out[f"{name} engine (ours)"] = rate(ours, len(items), reps)
        engine.close()
    return out


def proxy_hop(items: list[tuple[str, str]], reps: int) -> dict[str, float]:
    """Decisions/s through AsyncPacSandbox, one at a time (the proxy's per-decision cost)."""
    from pac.env import PacEnv
    from pac.sandbox import AsyncPacSandbox

    out = {}
    for name in ("pacparser", "dukpy"):

        async def run(name: str = name) -> float:
            async with AsyncPacSandbox(PAC.read_text(), name) as sandbox:
                samples = []
                for _ in range(reps):
                    started = time.perf_counter()
                    for url, host in items:
                        await sandbox.evaluate(url, host, PacEnv(dns={host: "192.0.2.1"}))
                    samples.append(len(items) / (time.perf_counter() - started))
                return statistics.median(samples)

        out[f"{name} via AsyncPacSandbox"] = asyncio.run(run())
    return out


def _netns_prefix() -> tuple[list[str], str]:
    """Run the whole-process comparisons where DNS fails at once, the same for the bare
    loop and pac-eval: a fresh network namespace (no interface up, so every lookup fails
    without waiting). Root uses `unshare -n`, others a user namespace; without either, the
    machine's own DNS is used and the report says so."""
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok == 0:
            return prefix, "in a network namespace without interfaces: every lookup fails at once"
    return [], "with this machine's DNS (no unshare): lookups may be slow, ratios are noisy"


def whole_processes(
    n: int, reps: int, other: Path | None = None
) -> tuple[dict[str, dict[str, float]], str]:
    """Seconds (median) for a whole process over n targets, per PAC: the bare pacparser
    loop against pac-eval with hermetic DNS (--no-dns) and with real DNS. Every command of
    every PAC runs once per repetition, in turn (interleaved), so a loaded machine weighs
    on all of them alike. `other`: a second checkout whose pac-eval runs alongside (A/B)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")
    envs = {"": env}
    if other is not None:
        envs[f" [{other.name}]"] = dict(env, PYTHONPATH=str(other))
    prefix, dns_note = _netns_prefix()
    with tempfile.TemporaryDirectory() as tmp:
        urls = Path(tmp) / "targets.txt"
        urls.write_text("".join(f"{u} {h}\n" for u, h in targets(n)))
        commands: dict[tuple[str, str], list[str]] = {}
        for pac in PACS:
            bare = [sys.executable, "-c", BARE_LOOP, str(pac), str(urls)]
            commands[(pac.name, "bare pacparser loop (baseline)")] = [*prefix, *bare]
            pac_eval = [*prefix, sys.executable, "-m", "pac.cli", str(pac), "--urls", str(urls)]
            pac_eval += ["--raw-url"]
            for tag in envs:
                commands[(pac.name, f"pac-eval --no-dns{tag}")] = [*pac_eval, "--no-dns"]
                commands[(pac.name, f"pac-eval, real DNS{tag}")] = pac_eval
                dukpy = [*pac_eval, "--no-dns", "--engine", "dukpy"]
                commands[(pac.name, f"pac-eval --no-dns --engine dukpy{tag}")] = dukpy
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
        expected: dict[str, str] = {}
        for _ in range(reps):
            for key, cmd in commands.items():
                tag = key[1][key[1].find(" [") :] if " [" in key[1] else ""
                started = time.perf_counter()
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env=envs[tag], check=False
                )
                samples[key].append(time.perf_counter() - started)
                if proc.returncode != 0:
                    raise SystemExit(f"{key} failed ({proc.returncode}): {proc.stderr[-500:]}")
                if expected.setdefault(key[0], proc.stdout) != proc.stdout:
                    raise SystemExit(f"{key}: results differ from the baseline")
        out: dict[str, dict[str, float]] = {}
        for (pac_name, label), values in samples.items():
            out.setdefault(pac_name, {})[label] = statistics.median(values)
        return out, dns_note


def table(title: str, unit: str, rows: dict[str, float]) -> str:
    """Markdown table; the first row is the baseline every ratio divides by."""
    base = next(iter(rows.values()))
    lines = [f"### {title}", "", f"| what | {unit} | ratio to baseline |", "| --- | ---: | ---: |"]
    for label, value in rows.items():
        lines.append(f"| {label} | {value:,.3f} | {value / base:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pac_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in < 30 s")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--processes-only", action="store_true", help="only the whole-process comparison"
    )
    parser.add_argument(
        "--compare-src",
        metavar="DIR",
        type=Path,
        help="also run the pac-eval of another checkout (e.g. an older commit), interleaved",
    )
    args = parser.parse_args(argv)
    os.environ["TZ"] = "UTC"
    time.tzset()
    n_calls, n_hop, n_batch, reps = (2000, 200, 6000, 3) if args.quick else (20000, 2000, 50000, 5)

    inproc: dict[str, float] = {}
    hop: dict[str, float] = {}
    if not args.processes_only:
        inproc = in_process(targets(n_calls), reps)
        hop = proxy_hop(targets(n_hop), reps)
    procs, dns_note = whole_processes(n_batch, reps, args.compare_src)

    print(f"## PAC evaluation ({PAC.name}, median of {reps})\n")
    if not args.processes_only:
        hop_all = {"in-process pacparser engine": inproc["pacparser engine (ours)"], **hop}
        print(table(f"In-process evaluations/s ({n_calls} targets)", "evals/s", inproc))
        print(table(f"Per decision inside the proxy ({n_hop} targets)", "decisions/s", hop_all))
    for pac_name, rows in procs.items():
        title = f"Whole processes, {pac_name}, {n_batch} targets (goal: pac-eval <= 1.5x)"
        print(table(title, "seconds", rows))
    print(f"Whole processes ran {dns_note}; medians of {reps}, interleaved.\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "pac": PAC.name,
                    "reps": reps,
                    "in_process_evals_per_s": inproc,
                    "proxy_decisions_per_s": hop,
                    "whole_process_seconds": procs,
                    "whole_process_dns": dns_note,
                    "targets": {"in_process": n_calls, "proxy": n_hop, "batch": n_batch},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
