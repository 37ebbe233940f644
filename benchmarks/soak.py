"""Soak: bounded mixed load against `airgap-proxy run --workers 2`, with faults injected.

    sudo python3 benchmarks/soak.py --quick        # under 3 minutes (what CI runs)
    sudo nice python3 benchmarks/soak.py           # the full run (about 8 minutes)

It re-executes itself in fresh network, mount and PID namespaces (nothing outlives it) and
builds the end-to-end tests' rig there (`tests/e2e/harness.py`): origins on test addresses,
a real tinyproxy as the upstream, a PAC server. Client threads drive short HTTP, TLS and
plain TCP connections whose right outcome is known (which origin answers, or a REJECT),
with idle connections and bulk transfers alongside. Phases:

1. static policy, no faults: the resource figures (RSS and descriptors of the whole
   process tree, sampled) and their growth per 10,000 connections after warm-up;
2. PAC policy with faults: tinyproxy killed and restarted, the PAC server stopped and
   started, a worker SIGKILLed; each recovery is timed (until the first right answer);
3. a low descriptor limit (`prlimit --nofile`) and more idle connections than it holds:
   the excess must be reset quickly, and the proxy must answer once they are gone;
4. network fuzz: mutated hellos and heads through the listener (`tests/fuzz/network.py`).

It fails (exit 1) only on a wrong outcome (an origin that should not have answered, or a
REJECT outside a fault's window), a dead proxy, a hang (no answer within 20 s), or growth
over the bounds below (README, "Reliability"); every figure goes to the log (and --json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e import harness as h  # noqa: E402
from tests.fuzz.network import fuzz_listener  # noqa: E402

#: RSS growth of the proxy's processes per 10,000 connections after warm-up, at most.
RSS_BOUND_MIB_PER_10K = 2.0
#: Fewer connections than this after warm-up say nothing about growth (not judged).
MIN_JUDGED = 5000
#: Descriptors of the proxy's processes after the load ended, over those before it, at most.
FD_BOUND = 16
#: An answer slower than this is a hang (connect timeout 10 s, peek 2 s, plus slack).
HANG = 20.0
#: A fault that has not recovered after this long fails the run.
RECOVERY_BOUND = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    clients: int
    static_seconds: float
    pac_seconds: float
    upstream_kills: int
    pac_outages: int
    worker_kills: int
    outage_seconds: float
    idle: int
    bulk_bytes: int
    bulk_every: float
    fd_limit: int
    fd_idle: int
    fuzz_inputs: int
    fuzz_seconds: float


QUICK = Plan(8, 25, 45, 1, 1, 1, 2.0, 50, 8 << 20, 5.0, 256, 400, 3000, 25)
FULL = Plan(16, 110, 110, 5, 5, 3, 3.0, 200, 50 << 20, 10.0, 256, 400, 100_000, 300)


def log(message: str) -> None:
    print(f"soak: {message}", flush=True)


# ----------------------------------------------------------------------------- the rig


class Tinyproxy:
    """The upstream: one tinyproxy on a fixed port, which a fault can kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = h.free_port()
        self.conf = workdir / "tinyproxy.conf"
        self.conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n"
            "MaxClients 400\nLogLevel Warning\nUser nobody\nGroup nogroup\n"
            "DisableViaHeader Yes\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(self.conf)])
        h.wait_listening("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


class LimitedProxy(h.ProxyProcess):
    """The proxy under `prlimit --nofile`: the limit is in force before it computes its
    `--max-connections` default from it."""

    def __init__(self, limit: int, config: dict[str, Any], *extra: str) -> None:
        super().__init__(config, *extra)
        self.limit = limit

    def start(self) -> LimitedProxy:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *("prlimit", f"--nofile={self.limit}:{self.limit}", "--"),
                *(sys.executable, "-m", "proxy.cli", "run", *self.args),
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        h.wait_for(lambda: "listening on" in self.log_text(), what="the limited proxy")
        return self


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (workers, their PAC engine processes)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        out += frontier
    return out


def workers(proxy: h.ProxyProcess) -> list[int]:
    assert proxy.proc is not None
    return [p for p in tree(proxy.proc.pid)[1:] if "proxy.cli" in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def usage(pid: int) -> tuple[int, int]:
    """(RSS KiB, open descriptors) summed over the process tree of `pid`."""
    rss = fds = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, AssertionError):
            rss += h.rss_kib(p)
            fds += len(os.listdir(f"/proc/{p}/fd"))
    return rss, fds


# ----------------------------------------------------------------------------- the load

REJECTED = "rejected"
HELLOS: dict[str, bytes] = {}


def _connect(ip: str, port: int) -> socket.socket:
    return h.client_socket(ip, port, timeout=HANG)


def tls_op(name: str, ip: str) -> str:
    hello = HELLOS.get(name) or HELLOS.setdefault(name, h.client_hello(name))
    with _connect(ip, 443) as sock:
        sock.sendall(hello)
        return h.origin_of(h.recv_all(sock)) or REJECTED


def http_op(name: str, ip: str) -> str:
    with _connect(ip, 80) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        return h.origin_of(h.recv_all(sock)) or REJECTED


def echo_op(ip: str) -> str:
    """Plain TCP, no name: the echo comes back (no half-close: tinyproxy ends the whole
    tunnel on one)."""
    with _connect(ip, h.ECHO_PORT) as sock:
        sock.sendall(b"ping\n")
        got = b""
        while len(got) < 5 and (chunk := sock.recv(5 - len(got))):
            got += chunk
        return "echo" if got == b"ping\n" else REJECTED


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    run: Callable[[], str]
    expected: frozenset[str]
    #: Fault kinds whose window excuses a REJECT of this operation.
    depends: frozenset[str]


A, B, C = h.ORIGIN_A, h.ORIGIN_B, h.ORIGIN_C
TLS_ALLOWED = Op("tls allowed (DIRECT)", lambda: tls_op("allowed.example", A),
                 frozenset({f"{A}:443"}), frozenset({"pac", "worker"}))  # fmt: skip
TLS_VIA_UPSTREAM = Op("tls rr via tinyproxy", lambda: tls_op("rr.example", B),
                      frozenset({f"{B}:443", f"{C}:443"}),
                      frozenset({"pac", "worker", "upstream"}))  # fmt: skip
OPS = (
    TLS_ALLOWED,
    Op("http allowed (DIRECT)", lambda: http_op("allowed.example", A), frozenset({f"{A}:80"}),
       frozenset({"pac", "worker"})),
    TLS_VIA_UPSTREAM,
    Op("tcp by IP via tinyproxy", lambda: echo_op(C), frozenset({"echo"}),
       frozenset({"pac", "worker", "upstream"})),
    Op("http evil (REJECT)", lambda: http_op("evil.example", h.ORIGIN_EVIL),
       frozenset({REJECTED}), frozenset()),
)  # fmt: skip
#: Under the PAC, port 443 to evil.example is refused too (the static policy sends it to
#: the upstream, like every other name it does not exclude).
PAC_OPS = (
    *OPS,
    Op("tls evil (REJECT)", lambda: tls_op("evil.example", h.ORIGIN_EVIL),
       frozenset({REJECTED}), frozenset()),
)  # fmt: skip


def static_config(upstream: Tinyproxy) -> dict[str, Any]:
    """Names under allowed.example and ORIGIN_A's address DIRECT, the rest of port 443 and
    every other port through tinyproxy, the rest of port 80 REJECT."""
    return {
        "configurationFileVersion": 2,
        "containersProxy": {
            "mode": "manual",
            "http": "",
            "https": f"http://127.0.0.1:{upstream.port}",
            "exclude": ["allowed.example", f"{A}/32"],
            "transparentPorts": "*",
        },
    }


def pac_script(upstream: Tinyproxy) -> str:
    """The same decisions as `static_config`, by a PAC."""
    via = f"PROXY 127.0.0.1:{upstream.port}"
    return f"""
function FindProxyForURL(url, host) {{
  if (dnsDomainIs(host, ".allowed.example") || host == "allowed.example") return "DIRECT";
  if (host == "{A}") return "DIRECT";
  if (host == "evil.example") return "PROXY reject.docker.internal:80";
  return "{via}";
}}
"""


@dataclass(slots=True)
class Tally:
    attempted: int = 0
    completed: int = 0
    wrong: int = 0
    hangs: int = 0
    excused: int = 0
    examples: list[str] = field(default_factory=list)
    by_op: Counter[str] = field(default_factory=Counter)


class Windows:
    """Time windows of faults (from injection to recovery plus a grace), by kind."""

    GRACE = 1.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, float, float | None]] = []

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        with self.lock:
            index = len(self.spans)
            self.spans.append((kind, time.monotonic(), None))
        try:
            yield
        finally:
            with self.lock:
                self.spans[index] = (kind, self.spans[index][1], time.monotonic() + self.GRACE)

    def excuses(self, depends: frozenset[str], start: float, end: float) -> bool:
        with self.lock:
            return any(
                kind in depends and begin <= end and (until is None or until >= start)
                for kind, begin, until in self.spans
            )


class Load:
    """Client threads running OPS round-robin until stopped, tallying outcomes."""

    def __init__(self, clients: int, windows: Windows, ops: tuple[Op, ...]) -> None:
        self.ops = ops
        self.tally = Tally()
        self.windows = windows
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HANG + 10)

    def _client(self, index: int) -> None:
        i = index
        while not self.stop.is_set():
            op = self.ops[i % len(self.ops)]
            i += 1
            start = time.monotonic()
            try:
                outcome = op.run()
            except TimeoutError:
                outcome = "hang"
            except OSError:
                outcome = REJECTED  # reset, refused: what a REJECT before any answer is
            end = time.monotonic()
            self._count(op, outcome, start, end)

    def _count(self, op: Op, outcome: str, start: float, end: float) -> None:
        with self.lock:
            t = self.tally
            t.attempted += 1
            t.by_op[op.name] += 1
            if outcome == "hang":
                t.hangs += 1
                t.examples.append(f"{op.name}: no answer in {HANG:g} s")
            elif outcome in op.expected:
                t.completed += 1
            elif outcome == REJECTED and self.windows.excuses(op.depends, start, end):
                t.excused += 1
            else:
                t.wrong += 1
                if len(t.examples) < 10:
                    t.examples.append(f"{op.name}: got {outcome}, expected {sorted(op.expected)}")

    def completed(self) -> int:
        with self.lock:
            return self.tally.completed + self.tally.excused


class Sampler:
    """RSS and descriptors of the proxy's process tree every half second, with the number
    of connections completed so far."""

    def __init__(self, pid: int, load: Load) -> None:
        self.pid, self.load = pid, load
        self.samples: list[tuple[float, int, int, int]] = []  # (t, done, rss KiB, fds)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def sample(self) -> tuple[float, int, int, int]:
        rss, fds = usage(self.pid)
        point = (time.monotonic(), self.load.completed(), rss, fds)
        self.samples.append(point)
        return point

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)

    def slope(self, since: float) -> float:
        """KiB of RSS per connection: the least-squares slope over the samples from `since`
        (one sample is noise: the allocator grows and returns memory in steps)."""
        points = [(s[1], s[2]) for s in self.samples if s[0] >= since]
        n = len(points)
        mean_x = sum(x for x, _ in points) / n
        mean_y = sum(y for _, y in points) / n
        var = sum((x - mean_x) ** 2 for x, _ in points)
        if var == 0:
            return 0.0
        return sum((x - mean_x) * (y - mean_y) for x, y in points) / var

    def figures(self) -> dict[str, float]:
        """Start (after a warm-up of a quarter of the connections), peak and end."""
        total = self.samples[-1][1]
        warm = next(s for s in self.samples if s[1] >= total // 4)
        end = self.samples[-1]
        connections = max(end[1] - warm[1], 1)
        return {
            "rss_start_mib": round(warm[2] / 1024, 2),
            "rss_peak_mib": round(max(s[2] for s in self.samples) / 1024, 2),
            "rss_end_mib": round(end[2] / 1024, 2),
            "rss_growth_mib_per_10k": round(self.slope(warm[0]) / 1024 * 10_000, 3),
            "fds_start": warm[3],
            "fds_peak": max(s[3] for s in self.samples),
            "fds_end": end[3],
            "connections_after_warmup": connections,
        }


# ----------------------------------------------------------------------------- alongside


class Idle:
    """Idle connections held open through a phase (DIRECT to the echo port by address);
    at the end each must still echo."""

    def __init__(self, count: int) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = _connect(A, h.ECHO_PORT)
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise RuntimeError("an idle connection did not echo")
            self.socks.append(sock)

    def close(self) -> int:
        """Close them all; returns how many still echoed."""
        alive = 0
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"y")
                alive += sock.recv(1) == b"y"
            sock.close()
        return alive


class Bulk:
    """Downloads of `size` bytes alongside the load, one every `every` seconds (paced: the
    client's digest and the origin share this process's interpreter with the load), each
    checked by digest."""

    def __init__(self, size: int, every: float) -> None:
        self.size, self.every = size, every
        self.digest = h.pattern_digest(size)
        self.done = self.bad = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Bulk:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(HANG * 3)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with h.client_socket(A, h.BULK_PORT, timeout=HANG) as sock:
                    sock.sendall(f"DOWN {self.size}\n".encode())
                    got = h.recv_digest(sock)
            except OSError:
                got = (0, "")
            if got == (self.size, self.digest):
                self.done += 1
            else:
                self.bad += 1
            self.stop.wait(self.every)


# ----------------------------------------------------------------------------- phases


def first_success(op: Op, bound: float = RECOVERY_BOUND) -> float:
    """Seconds until `op` gives a right answer (polling it), or raise after `bound`."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        with contextlib.suppress(OSError):
            if op.run() in op.expected:
                return time.monotonic() - start
    raise RuntimeError(f"{op.name}: no right answer within {bound:g} s")


@dataclass(slots=True)
class Report:
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def check_alive(proxy: h.ProxyProcess, phase: str, report: Report, count: int = 2) -> None:
    assert proxy.proc is not None
    if proxy.proc.poll() is not None:
        report.failures.append(f"{phase}: the proxy exited ({proxy.proc.returncode})")
    elif len(workers(proxy)) != count:
        report.failures.append(f"{phase}: {len(workers(proxy))} workers, not {count}")


def tally_figures(tally: Tally, seconds: float) -> dict[str, Any]:
    return {
        "attempted": tally.attempted,
        "completed": tally.completed,
        "excused_by_faults": tally.excused,
        "wrong": tally.wrong,
        "hangs": tally.hangs,
        "per_second": round(tally.attempted / seconds, 1),
        "examples": tally.examples,
    }


def judge(name: str, tally: Tally, report: Report) -> None:
    if tally.wrong or tally.hangs:
        report.failures.append(f"{name}: {tally.wrong} wrong, {tally.hangs} hangs")
        report.failures += [f"{name}: {e}" for e in tally.examples]


def static_phase(plan: Plan, upstream: Tinyproxy, report: Report) -> None:
    proxy = h.ProxyProcess(static_config(upstream), "--workers", "2").start()
    assert proxy.proc is not None
    pid = proxy.proc.pid
    try:
        with h.redirect_to(proxy.port):
            idle = Idle(plan.idle)
            start = time.monotonic()
            with (
                Load(plan.clients, Windows(), OPS) as load,
                Sampler(pid, load) as sampler,
                Bulk(plan.bulk_bytes, plan.bulk_every) as bulk,
            ):
                threading.Event().wait(plan.static_seconds)  # the phase's length
            seconds = time.monotonic() - start
            alive = idle.close()
            # The proxy closes its side of each relay once it sees the close: wait for it.
            settled = lambda: usage(pid)[1] <= sampler.samples[0][3] + FD_BOUND  # noqa: E731
            with contextlib.suppress(AssertionError):
                h.wait_for(settled, timeout=10, what="descriptors back")
            sampler.sample()
            check_alive(proxy, "static", report)
    finally:
        proxy.stop()
    figures = {**tally_figures(load.tally, seconds), **sampler.figures()}
    figures |= {"idle_alive": f"{alive}/{plan.idle}", "bulk_ok": bulk.done,
                "bulk_bad": bulk.bad, "bulk_bytes": plan.bulk_bytes}  # fmt: skip
    report.phases["static"] = figures
    judge("static", load.tally, report)
    judged = figures["connections_after_warmup"] >= MIN_JUDGED
    figures["rss_growth_judged"] = judged
    if judged and figures["rss_growth_mib_per_10k"] > RSS_BOUND_MIB_PER_10K:
        report.failures.append(f"static: RSS growth over {RSS_BOUND_MIB_PER_10K} MiB per 10k")
    if figures["fds_end"] > sampler.samples[0][3] + FD_BOUND:
        report.failures.append(f"static: descriptors not back within {FD_BOUND} after the load")
    if alive != plan.idle:
        report.failures.append(f"static: {plan.idle - alive} idle connections lost")
    if bulk.bad:
        report.failures.append(f"static: {bulk.bad} bulk transfers wrong")


def pac_phase(plan: Plan, upstream: Tinyproxy, report: Report) -> None:
    server = h.PacServer(pac_script(upstream)).up()
    config = {
        "configurationFileVersion": 2,
        "containersProxy": {"mode": "manual", "pac": server.url, "transparentPorts": "*"},
    }
    fast = ("--pac-refresh", "1", "--pac-retry-max", "1", "--bad-proxy-ttl", "1")
    proxy = h.ProxyProcess(config, "--workers", "2", *fast).start()
    assert proxy.proc is not None
    in_use = lambda: proxy.log_text().count("PAC script in use")  # noqa: E731
    h.wait_for(lambda: in_use() >= 2, what="both workers' PAC script")
    windows = Windows()
    interleaved = interleave(plan)
    gap = plan.pac_seconds / (len(interleaved) + 1)
    with h.redirect_to(proxy.port):
        start = time.monotonic()
        with Load(plan.clients, windows, PAC_OPS) as load, Sampler(proxy.proc.pid, load) as sampler:
            for n, kind in enumerate(interleaved, 1):
                threading.Event().wait(max(0.0, start + n * gap - time.monotonic()))
                try:
                    report.faults.append(inject(kind, plan, upstream, server, proxy, windows))
                except (RuntimeError, AssertionError) as exc:
                    report.failures.append(f"pac: fault {kind}: {exc}")
            threading.Event().wait(max(0.0, start + plan.pac_seconds - time.monotonic()))
        seconds = time.monotonic() - start
    check_alive(proxy, "pac", report)
    figures = {**tally_figures(load.tally, seconds), **sampler.figures()}
    figures["PAC not loaded yet"] = proxy.log_text().count("PAC not loaded yet")
    report.phases["pac"] = figures
    judge("pac", load.tally, report)
    proxy.stop()
    server.close()


def interleave(plan: Plan) -> list[str]:
    """The faults of the PAC phase, one of each kind in turn."""
    left = {"upstream": plan.upstream_kills, "pac": plan.pac_outages, "worker": plan.worker_kills}
    out: list[str] = []
    while any(left.values()):
        for kind, n in left.items():
            if n:
                out.append(kind)
                left[kind] = n - 1
    return out


def inject(
    kind: str,
    plan: Plan,
    upstream: Tinyproxy,
    server: h.PacServer,
    proxy: h.ProxyProcess,
    windows: Windows,
) -> dict[str, Any]:
    """One fault, held for `plan.outage_seconds` (a worker kill: until it is back), and the
    time from its end to the first right answer of an operation that depends on it."""
    probe = TLS_VIA_UPSTREAM if kind == "upstream" else TLS_ALLOWED
    with windows.fault(kind):
        if kind == "upstream":
            upstream.kill()
            threading.Event().wait(plan.outage_seconds)
            upstream.start()
            recovery = first_success(probe)
        elif kind == "pac":
            server.down()
            before = proxy.log_text().count("PAC unavailable")
            threading.Event().wait(plan.outage_seconds)
            noticed = proxy.log_text().count("PAC unavailable") > before
            server.up()
            recovery = first_success(probe)
        else:
            swaps = proxy.log_text().count("PAC script in use")
            victim = workers(proxy)[0]
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            h.wait_for(
                lambda: proxy.log_text().count("PAC script in use") > swaps,
                timeout=RECOVERY_BOUND,
                what="the replacement worker's script",
            )
            recovery = time.monotonic() - killed
    result: dict[str, Any] = {"fault": kind, "recovery_s": round(recovery, 3)}
    if kind == "pac":
        result["outage_noticed"] = noticed
    log(f"fault {kind}: recovered in {recovery:.2f} s")
    return result


def fd_phase(plan: Plan, upstream: Tinyproxy, report: Report) -> None:
    proxy = LimitedProxy(plan.fd_limit, static_config(upstream), "--workers", "2").start()
    with h.redirect_to(proxy.port):
        served: list[socket.socket] = []
        reset_latency: list[float] = []
        for _ in range(plan.fd_idle):
            start = time.monotonic()
            sock: socket.socket | None = None
            try:
                sock = h.client_socket(A, h.ECHO_PORT, timeout=HANG)
                sock.sendall(b"x")
                ok = sock.recv(1) == b"x"
            except OSError:  # reset, even before connect() returned: the refusal
                ok = False
            if ok and sock is not None:
                served.append(sock)
            else:
                reset_latency.append(time.monotonic() - start)
                if sock is not None:
                    sock.close()
        for sock in served:
            sock.close()
        recovery = first_success(TLS_ALLOWED)
        check_alive(proxy, "fdlimit", report)
    proxy.stop()
    figures = {
        "fd_limit": plan.fd_limit,
        "idle_attempted": plan.fd_idle,
        "idle_served": len(served),
        "excess_reset": len(reset_latency),
        "reset_latency_max_ms": round(1000 * max(reset_latency, default=0), 1),
        "probe_after_s": round(recovery, 3),
    }
    report.phases["fdlimit"] = figures
    if not reset_latency:
        report.failures.append("fdlimit: no connection was over the limit (nothing tested)")
    if max(reset_latency, default=0) > HANG / 2:
        report.failures.append("fdlimit: an excess connection waited instead of being reset")


def fuzz_phase(plan: Plan, report: Report, origins: h.Origins) -> None:
    config = {
        "configurationFileVersion": 2,
        "containersProxy": {"mode": "manual", "exclude": ["allowed.example"],
                            "transparentPorts": "*"},
    }  # fmt: skip
    proxy = h.ProxyProcess(config, "--workers", "2").start()
    with h.redirect_to(proxy.port):
        before = Counter(origins.hits)
        start = time.monotonic()
        result = fuzz_listener(
            lambda port: h.client_socket(h.ORIGIN_EVIL, port, timeout=HANG),
            "allowed.example",
            plan.fuzz_inputs,
            plan.fuzz_seconds,
            concurrency=plan.clients,
        )
        seconds = time.monotonic() - start
        hits = Counter(origins.hits) - before
        try:
            probe = first_success(TLS_ALLOWED, 10)
        except RuntimeError as exc:
            report.failures.append(f"fuzz: {exc}")
            probe = -1.0
        check_alive(proxy, "fuzz", report)
    proxy.stop()
    forbidden = sum(n for (ip, _), n in hits.items() if ip == h.ORIGIN_EVIL)
    allowed = sum(n for (ip, _), n in hits.items() if ip == A)
    report.phases["fuzz"] = {
        "inputs": result.inputs,
        "per_second": round(result.inputs / seconds, 1),
        "outcomes": dict(result.outcomes),
        "allowed_names": result.allowed_names,
        "allowed_hits": allowed,
        "forbidden_hits": forbidden,
        "slowest_s": round(result.slowest, 3),
        "probe_after_s": round(probe, 3),
    }
    if forbidden or allowed > result.allowed_names:
        report.failures.append(f"fuzz: a way through ({forbidden} forbidden, {allowed} allowed)")
    if result.outcomes.get("hang"):
        report.failures.append(f"fuzz: {result.outcomes['hang']} inputs hung")


def run(plan: Plan, json_path: str | None) -> int:
    h.setup_network()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"airgap-soak-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    origins = h.Origins()
    origins.start()
    upstream = Tinyproxy(workdir)
    upstream.start()
    report = Report()
    began = time.monotonic()
    try:
        for name, phase in (
            ("static", lambda: static_phase(plan, upstream, report)),
            ("pac", lambda: pac_phase(plan, upstream, report)),
            ("fdlimit", lambda: fd_phase(plan, upstream, report)),
            ("fuzz", lambda: fuzz_phase(plan, report, origins)),
        ):
            log(f"phase {name}")
            try:
                phase()
            except (RuntimeError, AssertionError, OSError) as exc:
                report.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            log(f"{name}: {json.dumps(report.phases.get(name, {}))}")
    finally:
        upstream.stop()
        origins.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began
    log(f"faults: {json.dumps(report.faults)}")
    log(f"took {total:.0f} s")
    if json_path:
        Path(json_path).write_text(json.dumps({"plan": asdict(plan), **asdict(report)}, indent=1))
    for failure in report.failures:
        log(f"FAIL {failure}")
    log("passed" if not report.failures else f"{len(report.failures)} failures")
    return 1 if report.failures else 0


def reexec_in_namespace(argv: list[str]) -> int:
    """Run this file again in fresh network, mount and PID namespaces: when it exits, the
    kernel kills every process left in them, and the addresses and rules vanish."""
    cmd = [
        "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
        "--", sys.executable, str(Path(__file__).resolve()), *argv,
    ]  # fmt: skip
    env = {**os.environ, "AIRGAP_SOAK_NS": "1", "AIRGAP_PRIVATE_NETNS": "1"}
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="benchmarks/soak.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the CI form: under 3 minutes")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/soak.py: run as root (namespaces, iptables)", file=sys.stderr)
        return 2
    for tool in ("unshare", "prlimit", "tinyproxy", "iptables"):
        if shutil.which(tool) is None:
            print(f"benchmarks/soak.py: {tool} is not installed", file=sys.stderr)
            return 2
    if os.environ.get("AIRGAP_SOAK_NS") != "1":
        return reexec_in_namespace(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    return run(QUICK if args.quick else FULL, args.json)


if __name__ == "__main__":
    sys.exit(main())
