"""The benchmark suite: `python3 benchmarks/run.py [--quick] [--json FILE]`, as root.

It re-executes itself in a private network + mount + PID namespace (`unshare`), so the
addresses, the iptables rule, the sysctls and every process it starts die with the run.
There it starts the origins (nginx for HTTP when installed, else a Python fallback; a
threaded Python bulk origin; a uvloop hold origin), airgap-proxy (`--workers 1`) and, when
installed, pproxy (`redir://`, on uvloop) as the peer, and runs every scenario against
each target in turn, repetition by repetition:

- baseline: no redirect rule, the client talks to the origin directly;
- airgap: the load group's TCP to 203.0.113.0/24 is REDIRECTed to airgap-proxy;
- pproxy: the same rule, to pproxy;
- airgap-splice: airgap-proxy `--splice`, bulk only, when the CLI has the flag;
- the explicit (forward) proxy scenarios, no redirect rule: the load talks to a proxy
  listener itself: airgap-proxy `--explicit-listen` (when the CLI has it), tinyproxy and
  Squid (when installed): CONNECT tunnel set-ups/s, keep-alive absolute-form GETs/s, and
  bulk through one CONNECT tunnel (compared with the transparent path's bulk).

The proxies run pinned to one core and the load (client and origins) to the other, as the
issue's targets are measured. It prints a markdown table of medians and ratios on stdout
(progress on stderr) and writes every run's numbers to `--json`. The exit status is 0 when
every baseline and airgap run produced a valid measurement, 1 when one did not (a broken
proxy or rig), 2 for a usage error; slow numbers never fail it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import forward_peers, report, rig
from benchmarks.report import BASE, EXPLICIT, LEAN, OURS, PEER, SPLICE, SQUID, TINYPROXY

GIB = 1 << 30
MIB = 1 << 20
AIRGAP_PORT = 15101
SPLICE_PORT = 15102
PPROXY_PORT = 15103
LEAN_PORT = 15104
EXPLICIT_PORT = 15105
TINYPROXY_PORT = 15106
SQUID_PORT = 15107
NO_ADMIN_PORT = 15108
#: The A/B of the admin endpoint's cost: the same proxy with `--admin-listen none`.
NO_ADMIN = "airgap --admin-listen none"
WARM_CONNS = 10  # memory scenario warm-up
NGINX_TEMPLATE = """\
worker_processes 1;
master_process off;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen {ip}:80 backlog=8192 reuseport;
        server_name _;
        default_type text/plain;
        location / {{ return 200 "hello from the benchmark origin\\n"; }}
    }}
}}
"""


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run of the suite (`--quick` or full)."""

    reps: int
    bulk_1_bytes: int
    bulk_8_bytes: int  # per connection
    wrk_seconds: int
    conn_rate_conns: int
    keepalive_conns: int
    idle_conns: int


FULL = Settings(reps=3, bulk_1_bytes=GIB, bulk_8_bytes=GIB, wrk_seconds=5,
                conn_rate_conns=32, keepalive_conns=64, idle_conns=5000)  # fmt: skip
QUICK = Settings(reps=2, bulk_1_bytes=128 * MIB, bulk_8_bytes=32 * MIB, wrk_seconds=1,
                 conn_rate_conns=32, keepalive_conns=64, idle_conns=500)  # fmt: skip


SCENARIOS = (
    "bulk_1", "bulk_8", "conn_rate", "latency_1", "keepalive", "memory", "metrics_ab", "pac",
    "explicit_connect", "explicit_keepalive", "explicit_bulk",
)  # fmt: skip


class RunError(RuntimeError):
    """One measurement failed or came back invalid (wrong byte count, HTTP errors)."""


@dataclass
class Target:
    """Something the load can go through: nothing (baseline) or a proxy on a port."""

    name: str
    port: int | None
    start: Callable[[], rig.Proc] | None = None
    proc: rig.Proc | None = None
    restarts: int = 0
    #: False for an explicit proxy: the load connects to it itself, no redirect rule.
    redirected: bool = True

    def ensure_running(self) -> None:
        if self.start is None:
            return
        if self.proc is None or not self.proc.alive():
            if self.proc is not None:
                self.restarts += 1
            self.proc = self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class Suite:
    settings: Settings
    workdir: Path
    procs: rig.Processes
    redirect: rig.Redirect
    placement: rig.Placement
    airgap_args: list[str] = field(default_factory=list)
    airgap_src: Path = rig.REPO  # where `python3 -m proxy.cli` runs from
    results: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    explicit_summary: list[dict[str, object]] = field(default_factory=list)

    # ----------------------------------------------------------------- processes

    def start_origins(self, choice: str = "auto") -> None:
        """nginx for HTTP when it is installed (a C origin: the proxy is what is measured)."""
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if choice == "nginx" and nginx is None:
            raise rig.RigError(
                "--origin nginx: nginx is not installed (apt-get install nginx-light)"
            )
        if choice == "python":
            nginx = None
        origins_cmd = [*self.placement.load(), rig.python(), str(rig.BENCH_DIR / "origins.py")]
        if nginx is None:
            origins_cmd.append("--http")
            self.info["http_origin"] = (
                "Python (uvloop)" if choice == "python" else "Python (nginx is not installed)"
            )
        origins = self.procs.start("origins", origins_cmd, stdout_pipe=True)
        assert origins.popen.stdout is not None
        line = _readline(origins.popen.stdout, 20)
        if line.strip() != "READY":
            raise rig.RigError(f"origins did not start: {line!r}\n{origins.log_tail()}")
        if nginx is not None:
            conf = self.workdir / "nginx.conf"
            conf.write_text(NGINX_TEMPLATE.format(workdir=self.workdir, ip=rig.HTTP_IP))
            version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
            self.info["http_origin"] = version.strip().replace("nginx version: ", "")
            proc = self.procs.start(
                "nginx", [*self.placement.load(), nginx, "-c", str(conf), "-e", "stderr"]
            )
            rig.wait_listening(proc, 80, rig.HTTP_IP)

    def airgap_cmd(self, port: int, *extra: str) -> list[str]:
        config = self.workdir / "admin-settings.json"
        if not config.exists():
            config.write_text(
                json.dumps(
                    {
                        "configurationFileVersion": 2,
                        "containersProxy": {
                            "locked": True,
                            "mode": "manual",
                            "http": "",
                            "https": "",
                            "exclude": rig.HTTP_NAME,
                            "transparentPorts": "80,443",
                        },
                    }
                )
            )
            config.chmod(0o600)
        return [
            *self.placement.proxy(), rig.python(), "-m", "proxy.cli", "run",
            "--config", str(config), "--listen", f"127.0.0.1:{port}", "--workers", "1",
            "--log-format", "json", "--log-level", "warning", *self.airgap_args, *extra,
        ]  # fmt: skip

    def start_airgap(self, name: str, port: int, *extra: str) -> rig.Proc:
        if "--admin-listen" not in extra and "--admin-listen" in airgap_help(self.airgap_src):
            # Each proxy its own admin port: the default one is taken by the first.
            extra = (*extra, "--admin-listen", f"127.0.0.1:{port + 100}")
        proc = self.procs.start(name, self.airgap_cmd(port, *extra), cwd=self.airgap_src)
        rig.wait_listening(proc, port)
        return proc

    def start_airgap_explicit(self) -> rig.Proc:
        """Ours as an explicit proxy only: the same policy, plus the bulk origin's address
        (an explicit proxy decides every port, the transparent one only transparentPorts)."""
        config = self.workdir / "admin-settings-explicit.json"
        config.write_text(
            json.dumps(
                {
                    "configurationFileVersion": 2,
                    "containersProxy": {
                        "locked": True, "mode": "manual", "http": "", "https": "",
                        "exclude": [rig.HTTP_NAME, rig.BULK_IP], "transparentPorts": "80,443",
                    },
                }
            )
        )  # fmt: skip
        config.chmod(0o600)
        cmd = [
            *self.placement.proxy(), rig.python(), "-m", "proxy.cli", "run",
            "--config", str(config), "--listen", "none",
            "--explicit-listen", f"127.0.0.1:{EXPLICIT_PORT}", "--workers", "1",
            "--log-format", "json", "--log-level", "warning", *self.airgap_args,
        ]  # fmt: skip
        if "--admin-listen" in airgap_help(self.airgap_src):  # one admin port per proxy
            cmd += ["--admin-listen", f"127.0.0.1:{EXPLICIT_PORT + 100}"]
        proc = self.procs.start("airgap-explicit", cmd, cwd=self.airgap_src)
        rig.wait_listening(proc, EXPLICIT_PORT)
        return proc

    def start_pproxy(self) -> rig.Proc:
        cmd = [
            *self.placement.proxy(), rig.python(), str(rig.BENCH_DIR / "pproxy_uvloop.py"),
            "-l", f"redir://127.0.0.1:{PPROXY_PORT}",
        ]  # fmt: skip
        proc = self.procs.start("pproxy", cmd)
        rig.wait_listening(proc, PPROXY_PORT)
        return proc

    def start_lean(self) -> rig.Proc:
        cmd = [
            *self.placement.proxy(), rig.python(), str(rig.BENCH_DIR / "lean_relay.py"),
            "127.0.0.1", str(LEAN_PORT),
        ]  # fmt: skip
        proc = self.procs.start("lean", cmd)
        rig.wait_listening(proc, LEAN_PORT)
        return proc

    def restart(self, target: Target) -> None:
        """A fresh proxy process (the memory scenario measures growth from a clean heap)."""
        if target.proc is not None:
            self.procs.stop(target.proc)
            target.proc = None
        target.ensure_running()

    # ----------------------------------------------------------------- one measurement

    def _load_env(self) -> dict[str, Any]:
        """subprocess arguments that put a load process in the redirected group."""
        return {"group": rig.LOAD_GID, "extra_groups": []}

    def _cpu(self, target: Target) -> tuple[float, float] | None:
        return rig.cpu_times(target.pid) if target.pid is not None else None

    @staticmethod
    def _cpu_used(
        before: tuple[float, float] | None, after: tuple[float, float] | None
    ) -> dict[str, float]:
        """CPU the proxy spent between two readings: total, user and system seconds."""
        if before is None or after is None:
            return {}
        user, system = after[0] - before[0], after[1] - before[1]
        return {"cpu_s": user + system, "cpu_user_s": user, "cpu_sys_s": system}

    def bulk(
        self, target: Target, conns: int, nbytes: int, via_proxy: bool = False
    ) -> dict[str, float]:
        """Download `nbytes` on each of `conns` connections; MiB/s and proxy CPU per GiB.
        `via_proxy`: through a CONNECT tunnel of the target (an explicit proxy)."""
        cmd = [
            *self.placement.load(), rig.python(), str(rig.BENCH_DIR / "loadgen.py"), "bulk",
            "--conns", str(conns), "--bytes", str(nbytes),
        ]  # fmt: skip
        if via_proxy:
            cmd += ["--via", f"127.0.0.1:{target.port}"]
        timeout = 60 + conns * nbytes / (20 * MIB)  # a floor of 20 MiB/s, or it is broken
        cpu0 = self._cpu(target)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, **self._load_env()
        )
        cpu1 = self._cpu(target)
        if proc.returncode != 0:
            raise RunError(f"bulk load failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if not out["ok"] or out["bytes"] != conns * nbytes:
            raise RunError(f"bulk: {out['bytes']} bytes arrived of {conns * nbytes}")
        result = {"mib_s": out["bytes"] / MIB / out["seconds"], "seconds": out["seconds"]}
        result.update(self._cpu_used(cpu0, cpu1))
        if "cpu_s" in result:
            result["cpu_s_per_gib"] = result["cpu_s"] / (out["bytes"] / GIB)
        return result

    def wrk(self, target: Target, conns: int, close: bool) -> dict[str, float]:
        """wrk against the HTTP origin by name (so the proxy sniffs Host and decides)."""
        seconds = self.settings.wrk_seconds
        cmd = [
            *self.placement.load(), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
            "--timeout", "5s",
        ]  # fmt: skip
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append(f"http://{rig.HTTP_NAME}/")
        cpu0 = self._cpu(target)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 30, **self._load_env()
        )
        cpu1 = self._cpu(target)
        if proc.returncode != 0:
            raise RunError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        result = parse_wrk(proc.stdout)
        if result["requests"] == 0:
            raise RunError(f"wrk made no request:\n{proc.stdout}")
        bad = result["errors"] + result["non_2xx"]
        if result["non_2xx"] > 0 or bad > 0.01 * result["requests"]:
            raise RunError(
                f"wrk: {result['non_2xx']:.0f} non-2xx and {result['errors']:.0f} socket "
                f"errors in {result['requests']:.0f} requests:\n{proc.stdout}"
            )
        result.update(self._cpu_used(cpu0, cpu1))
        if "cpu_s" in result:
            result["cpu_us_per_req"] = result["cpu_s"] * 1e6 / result["requests"]
            result["cpu_user_us_per_req"] = result["cpu_user_s"] * 1e6 / result["requests"]
        return result

    def tunnels(self, target: Target, conns: int) -> dict[str, float]:
        """CONNECT tunnel set-ups per second through an explicit proxy (one GET each)."""
        assert target.port is not None
        seconds = self.settings.wrk_seconds
        cmd = [
            *self.placement.load(), rig.python(), str(rig.BENCH_DIR / "loadgen.py"), "connect",
            "--proxy", f"127.0.0.1:{target.port}", "--conns", str(conns),
            "--seconds", str(seconds),
        ]  # fmt: skip
        cpu0 = self._cpu(target)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 40, **self._load_env()
        )
        cpu1 = self._cpu(target)
        if proc.returncode != 0:
            raise RunError(f"connect load failed ({proc.returncode}): {proc.stderr[-500:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if out["tunnels"] == 0 or out["errors"] > 0.01 * out["tunnels"]:
            raise RunError(
                f"connect: {out['tunnels']} tunnels, {out['errors']} errors: {out['first_errors']}"
            )
        result = {"rps": out["tunnels"] / out["seconds"], "errors": float(out["errors"])}
        result.update(self._cpu_used(cpu0, cpu1))
        if "cpu_s" in result:
            result["cpu_us_per_req"] = result["cpu_s"] * 1e6 / out["tunnels"]
        return result

    def wrk_via(self, target: Target, conns: int) -> dict[str, float]:
        """wrk's keep-alive GETs in absolute form, sent to an explicit proxy's listener."""
        assert target.port is not None
        seconds = self.settings.wrk_seconds
        cmd = [
            *self.placement.load(), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
            "--timeout", "5s", "-s", str(rig.BENCH_DIR / "absolute_get.lua"),
            f"http://127.0.0.1:{target.port}/",
        ]  # fmt: skip
        cpu0 = self._cpu(target)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 30, **self._load_env()
        )
        cpu1 = self._cpu(target)
        if proc.returncode != 0:
            raise RunError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        result = parse_wrk(proc.stdout)
        if result["requests"] == 0 or result["non_2xx"] > 0:
            raise RunError(f"wrk through the proxy:\n{proc.stdout}")
        result.update(self._cpu_used(cpu0, cpu1))
        if "cpu_s" in result:
            result["cpu_us_per_req"] = result["cpu_s"] * 1e6 / result["requests"]
        return result

    def hold(self, target: Target, conns: int) -> dict[str, float]:
        """RSS growth of a fresh proxy per idle relayed connection, `conns` at once."""
        self.restart(target)
        assert target.pid is not None
        # Warm the code paths with a few connections only: what they free is reused by the
        # measured ones, so a big warm-up would hide that much growth (100 of 500 did: 20 %).
        self._hold_once(target, WARM_CONNS, measure=False)
        time.sleep(0.3)
        rss0 = rig.rss_kib(target.pid)
        rss1 = self._hold_once(target, conns, measure=True)
        return {
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "kib_per_conn": (rss1 - rss0) / conns,
        }

    def _hold_once(self, target: Target, conns: int, measure: bool) -> float:
        assert target.pid is not None
        cmd = [
            *self.placement.load(), rig.python(), str(rig.BENCH_DIR / "loadgen.py"), "hold",
            "--conns", str(conns), "--max-seconds", "120",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, **self._load_env(),
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdin is not None
            line = _readline(proc.stdout, 100)
            if not line.startswith("READY"):
                err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                raise RunError(f"hold: {conns} connections did not come up: {line!r} {err}")
            rss = 0.0
            if measure:
                time.sleep(1.0)  # let every relay settle into its idle state
                rss = float(rig.rss_kib(target.pid))
                if target.proc is not None:
                    target.proc.check_alive()
            proc.stdin.write("close\n")
            proc.stdin.flush()
            proc.wait(30)
            return rss
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    # ----------------------------------------------------------------- scenarios

    def scenario(
        self,
        name: str,
        targets: list[Target],
        measure: Callable[[Target], dict[str, float]],
        alternate: bool = False,
    ) -> None:
        """Each repetition runs every target once, in turn (baseline first), so slow drift
        of the machine spreads over all targets instead of biasing one. `alternate`: every
        other repetition in the reverse order (an A/B, where going first could be an edge)."""
        per_target = self.results.setdefault(name, {})
        for rep in range(self.settings.reps):
            for target in targets[::-1] if alternate and rep % 2 else targets:
                label = f"{name} [{target.name}] rep {rep + 1}/{self.settings.reps}"
                try:
                    target.ensure_running()
                    self.redirect.to(target.port if target.redirected else None)
                    cores0 = rig.core_jiffies()
                    other = rig.OtherLoad()
                    other.begin()
                    result = measure(target)
                    result.update(other.end())
                    cores1 = rig.core_jiffies()
                    if target.proc is not None:
                        target.proc.check_alive()
                    for role, core in (
                        ("proxy_core_busy", self.placement.proxy_core),
                        ("load_core_busy", self.placement.load_core),
                    ):
                        busy = rig.core_busy(cores0, cores1, core)
                        if busy is not None:
                            result[role] = busy
                except (RunError, rig.RigError, subprocess.TimeoutExpired, OSError) as exc:
                    log(f"{label}: ERROR {exc}")
                    self.errors.append({"run": label, "target": target.name, "error": str(exc)})
                    continue
                finally:
                    self.redirect.to(None)
                per_target.setdefault(target.name, []).append(result)
                log(f"{label}: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, latency percentiles (ms) and error counts from wrk's `--latency` output."""
    out: dict[str, float] = {"errors": 0.0, "non_2xx": 0.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    out["requests"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
            out[key] = float(m.group(1)) * scale
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = float(sum(int(x) for x in m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non_2xx"] = float(m.group(1))
    return out


def _readline(stream: Any, timeout: float) -> str:
    """One line from a child's stdout, or "" when none comes within `timeout` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return ""
    line = stream.readline()
    return line.decode() if isinstance(line, bytes) else line


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- PAC


def pac_results(quick: bool, workdir: Path) -> tuple[dict[str, float] | None, str, object]:
    """PAC figures from `pac_bench.py` and `pac_cache_bench.py` (another engineer's).

    Returns (figures, a sentence for the report, their whole JSON). Their JSON names are
    mapped here, in one place: cold decisions inside the proxy are pac_bench's
    `proxy_decisions_per_s` (AsyncPacSandbox round trips, one at a time, every target
    distinct), in-process evaluations its `in_process_evals_per_s`; cached decisions and
    the cold decision's p50 come from pac_cache_bench (`PacDecider.decide`).
    """
    found: dict[str, float] = {}
    raw: dict[str, object] = {}
    notes: list[str] = []
    for name in ("pac_bench", "pac_cache_bench"):
        if not (rig.BENCH_DIR / f"{name}.py").exists():
            notes.append(f"{name}.py: not available yet")
            continue
        out_file = workdir / f"{name}.json"
        cmd = [*rig.Placement.detect().proxy(), rig.python(), "-m", f"benchmarks.{name}"]
        cmd += ["--json", str(out_file)] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=rig.REPO)
        except subprocess.TimeoutExpired:
            notes.append(f"{name}.py timed out")
            continue
        if proc.returncode != 0 or not out_file.exists():
            notes.append(f"{name}.py failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        data = json.loads(out_file.read_text())
        raw[name] = data
        notes.append(f"benchmarks/{name}.py")
        if not isinstance(data, dict):
            continue
        for key, value in data.get("proxy_decisions_per_s", {}).items():
            engine = "dukpy" if "dukpy" in key else "pacparser"
            found["cold_per_s" if engine == "pacparser" else "cold_dukpy_per_s"] = float(value)
        for key, value in data.get("in_process_evals_per_s", {}).items():
            if "pacparser engine" in key:
                found["inproc_per_s"] = float(value)
        if "cold_decision_ms_p50" in data:
            found["cold_ms_p50"] = float(data["cold_decision_ms_p50"])
        _find_rates(data, found)
    if not found:
        return None, "; ".join(notes) or "no PAC figures", raw or None
    return found, "; ".join(notes), raw


def _find_rates(data: object, found: dict[str, float], path: str = "") -> None:
    """A `...cached...` decisions-per-second figure anywhere in pac_bench's JSON."""
    if isinstance(data, dict):
        for key, value in data.items():
            _find_rates(value, found, f"{path}.{key}".lower())
    elif isinstance(data, int | float) and "cached" in path and "per_s" in path:
        found.setdefault("cached_per_s", float(data))


# --------------------------------------------------------------------------- the run


def machine_info(src: Path) -> dict[str, Any]:
    """What the numbers were measured on (the README's table names the machine)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions: dict[str, str] = {"python": platform.python_version()}
    for module in ("uvloop", "pproxy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[module] = version(module)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        versions["wrk"] = (wrk.stdout or wrk.stderr).split(" [")[0].strip()
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "versions": versions,
        "commit": commit,
    }


def run_suite(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else FULL
    if args.reps:
        settings = Settings(**{**asdict(settings), "reps": args.reps})
    if args.idle_conns:
        settings = Settings(**{**asdict(settings), "idle_conns": args.idle_conns})
    if args.wrk_seconds:
        settings = Settings(**{**asdict(settings), "wrk_seconds": args.wrk_seconds})
    for tool in ("wrk", "iptables", "ip"):
        if shutil.which(tool) is None:
            log(f"{tool} is not installed (apt-get install wrk iptables iproute2)")
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="airgap-bench-"))
    procs = rig.Processes(workdir)
    redirect = rig.Redirect()
    placement = rig.Placement.detect()
    suite = Suite(settings, workdir, procs, redirect, placement, airgap_args=args.airgap_arg)
    suite.airgap_src = Path(args.airgap_src).resolve() if args.airgap_src else rig.REPO
    started = time.monotonic()
    status = 1
    try:
        rig.setup_namespace(workdir)
        redirect.install()
        suite.info.update(machine_info(suite.airgap_src))
        suite.info["airgap_src"] = str(suite.airgap_src)
        suite.info["placement"] = (
            f"proxy on CPU {placement.proxy_core}, load (client + origins) on CPU "
            f"{placement.load_core}"
            if placement.proxy_core is not None
            else "not pinned (fewer than 2 CPUs)"
        )
        log(f"workdir {workdir}; {suite.info['placement']}")
        suite.start_origins(args.origin)
        log(f"HTTP origin: {suite.info['http_origin']}")

        base = Target(BASE, None)
        ours = Target(OURS, AIRGAP_PORT, lambda: suite.start_airgap("airgap", AIRGAP_PORT))
        targets = [base, ours]
        if importlib_available("pproxy") and not args.no_pproxy:
            targets.append(Target(PEER, PPROXY_PORT, suite.start_pproxy))
        else:
            suite.info["pproxy"] = "not installed: no peer column"
        if args.lean:
            targets.append(Target(LEAN, LEAN_PORT, suite.start_lean))
        bulk_targets = list(targets)
        if "--splice" in airgap_help(suite.airgap_src):
            bulk_targets.append(
                Target(
                    SPLICE,
                    SPLICE_PORT,
                    lambda: suite.start_airgap("airgap-splice", SPLICE_PORT, "--splice"),
                )
            )
        explicit = explicit_targets(suite, args)
        for target in bulk_targets:
            target.ensure_running()

        # Warm-up (not recorded): first connections, name lookups, page faults.
        for target in bulk_targets:
            redirect.to(target.port)
            try:
                suite.bulk(target, 1, 16 * MIB)
                if target in targets:
                    suite.wrk(target, 8, close=True)
            except (RunError, subprocess.TimeoutExpired) as exc:
                log(f"warm-up [{target.name}]: {exc}")
            finally:
                redirect.to(None)

        s = settings
        scenarios: list[tuple[str, list[Target], Callable[[Target], dict[str, float]]]] = [
            ("bulk_1", bulk_targets, lambda t: suite.bulk(t, 1, s.bulk_1_bytes)),
            ("bulk_8", bulk_targets, lambda t: suite.bulk(t, 8, s.bulk_8_bytes)),
            ("conn_rate", targets, lambda t: suite.wrk(t, s.conn_rate_conns, True)),
            ("latency_1", targets, lambda t: suite.wrk(t, 1, True)),
            ("keepalive", targets, lambda t: suite.wrk(t, s.keepalive_conns, False)),
            ("memory", targets[1:], lambda t: suite.hold(t, s.idle_conns)),
            ("explicit_connect", explicit, lambda t: suite.tunnels(t, s.conn_rate_conns)),
            ("explicit_keepalive", explicit, lambda t: suite.wrk_via(t, s.keepalive_conns)),
            ("explicit_bulk", explicit, lambda t: suite.bulk(t, 1, s.bulk_1_bytes, True)),
        ]
        if "--admin-listen" in airgap_help(suite.airgap_src):
            # The connection rate with the admin endpoint and metrics on (the default, as
            # `ours` runs) against the same proxy with them off, interleaved rep by rep.
            off = Target(
                NO_ADMIN,
                NO_ADMIN_PORT,
                lambda: suite.start_airgap("airgap-no-admin", NO_ADMIN_PORT, "--admin-listen",
                                           "none"),
            )  # fmt: skip
            if not args.only or "metrics_ab" in args.only:
                off.ensure_running()  # and warmed up like the others (not recorded)
                redirect.to(off.port)
                try:
                    suite.wrk(off, 8, close=True)
                except (RunError, subprocess.TimeoutExpired) as exc:
                    log(f"warm-up [{off.name}]: {exc}")
                finally:
                    redirect.to(None)
            scenarios.append(
                ("metrics_ab", [ours, off], lambda t: suite.wrk(t, s.conn_rate_conns, True))
            )
        for name, scenario_targets, measure in scenarios:
            if not args.only or name in args.only:
                suite.scenario(name, scenario_targets, measure, alternate=name == "metrics_ab")
        suite.info["metrics_ab"] = metrics_ab(suite.results.get("metrics_ab", {}))
        if suite.info["metrics_ab"]:
            log(f"metrics A/B: {suite.info['metrics_ab']}")
        for target in bulk_targets + explicit:
            if target.restarts:
                suite.errors.append(
                    {"run": "all", "target": target.name, "error": f"restarted {target.restarts}x"}
                )

        suite.info["pac"] = "not run (--only)"
        if not args.only or "pac" in args.only:
            pac, pac_source, pac_raw = pac_results(args.quick, workdir)
            suite.info["pac"] = pac_source
            suite.info["pac_bench"] = pac_raw
            if pac is not None:
                suite.results["pac"] = {OURS: [pac]}
            log(f"PAC: {pac_source}")

        table = report.rows(s.idle_conns, s.conn_rate_conns, s.keepalive_conns)
        forward = report.explicit_rows(s.conn_rate_conns, s.keepalive_conns)
        if args.only:  # rows of scenarios that did not run would only be dashes
            table = [row for row in table if row.scenario in args.only]
            forward = [row for row in forward if row.scenario in args.only]
        summary = report.summarize(suite.results, table)
        suite.explicit_summary = report.summarize_explicit(suite.results, forward)
        with_splice = SPLICE in suite.results.get("bulk_1", {})
        with_lean = any(LEAN in per_target for per_target in suite.results.values())
        print(render(suite, summary, with_splice, with_lean, time.monotonic() - started))
        fatal = [e for e in suite.errors if e["target"] in (BASE, OURS, EXPLICIT)]
        status = 1 if fatal else 0
        if args.json:
            payload = {
                "quick": args.quick,
                "settings": asdict(settings),
                "info": suite.info,
                "summary": summary,
                "explicit_summary": suite.explicit_summary,
                "runs": suite.results,
                "errors": suite.errors,
                "seconds": round(time.monotonic() - started, 1),
                "status": status,
            }
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        return status
    except (rig.RigError, subprocess.SubprocessError, OSError) as exc:
        log(f"the suite itself failed: {exc}")
        traceback.print_exc()
        return 1
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            redirect.remove()
        if status == 0 and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")


def metrics_ab(runs: dict[str, list[dict[str, float]]]) -> str:
    """The A/B line: connection rate and CPU per connection, metrics on vs off."""
    on, off = runs.get(OURS, []), runs.get(NO_ADMIN, [])
    if not on or not off:
        return ""
    rate_on = statistics.median(r["rps"] for r in on)
    rate_off = statistics.median(r["rps"] for r in off)
    text = (
        f"connection rate with the admin endpoint and metrics on {rate_on:,.0f}/s, with "
        f"--admin-listen none {rate_off:,.0f}/s: {rate_on / rate_off:.3f}x "
        f"(target >= 0.97x; medians of {len(on)} interleaved runs each, the order alternating)"
    )
    cpu_on = [r["cpu_us_per_req"] for r in on if "cpu_us_per_req" in r]
    cpu_off = [r["cpu_us_per_req"] for r in off if "cpu_us_per_req" in r]
    if cpu_on and cpu_off:
        text += (
            f"; proxy CPU per connection {statistics.median(cpu_on):.0f} vs "
            f"{statistics.median(cpu_off):.0f} us"
        )
    return text


def render(
    suite: Suite, summary: list[dict[str, object]], with_splice: bool, with_lean: bool, secs: float
) -> str:
    info = suite.info
    s = suite.settings
    lines = [
        f"## airgap-proxy benchmarks ({'quick' if s.reps < 3 else 'full'} run, "
        f"{s.reps} repetitions, medians)",
        "",
        f"Machine: {info.get('cpu')}, {info.get('cpus')} CPUs, {info.get('memory_gib')} GiB, "
        f"Linux {info.get('kernel')}; {info.get('placement')}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in info.get('versions', {}).items())}; "
        f"HTTP origin: {info.get('http_origin')}; commit {info.get('commit')}.",
        f"Sizes: bulk {s.bulk_1_bytes // MIB} MiB on 1 connection, {s.bulk_8_bytes // MIB} MiB "
        f"on each of 8; wrk {s.wrk_seconds} s per run; {s.idle_conns} idle connections.",
        f"PAC: {info.get('pac')}." + (f" Peer: {info['pproxy']}." if "pproxy" in info else ""),
        "",
        report.markdown(summary, with_splice, with_lean),
    ]
    if info.get("metrics_ab"):
        lines += ["", f"Metrics A/B: {info['metrics_ab']}."]
    if suite.explicit_summary:
        lines += [
            "",
            f"Explicit proxy (no redirect; the load talks to each proxy's listener): "
            f"{info.get('explicit_peers', '')}.",
            "",
            report.explicit_markdown(suite.explicit_summary),
        ]
    lines += ["", f"Suite time: {secs:.0f} s."]
    others = [
        run["other_load_cores"]
        for per_target in suite.results.values()
        for runs in per_target.values()
        for run in runs
        if "other_load_cores" in run
    ]
    if others and max(others) > 0.1:
        lines += [
            "",
            f"Note: CPU used outside the suite's processes during runs: up to "
            f"{max(others):.2f} cores (median {statistics.median(others):.2f}). It counts other "
            "users of the machine and also kernel threads doing the suite's own network work "
            "(about 0.6 cores in 5-s no-proxy connection-rate runs), so it is an upper bound of "
            "foreign load; see `other_load_cores` per run in the JSON file.",
        ]
    if suite.errors:
        lines += ["", "Errors:"] + [f"- {e['run']}: {e['error'][:300]}" for e in suite.errors]
    return "\n".join(lines)


def explicit_targets(suite: Suite, args: argparse.Namespace) -> list[Target]:
    """Ours with `--explicit-listen` (when this checkout has it), tinyproxy and Squid (when
    installed), unless `--only` leaves every explicit scenario out."""
    if args.only and not any(name.startswith("explicit_") for name in args.only):
        return []
    out: list[Target] = []
    seen: list[str] = []
    if "--explicit-listen" in airgap_help(suite.airgap_src):
        out.append(Target(EXPLICIT, EXPLICIT_PORT, suite.start_airgap_explicit, redirected=False))
    else:
        seen.append("airgap-proxy has no --explicit-listen in this checkout")
    w, p, d = suite.workdir, suite.procs, suite.placement
    tinyproxy = forward_peers.tinyproxy_binary()
    if tinyproxy is not None:
        start_tp = lambda: forward_peers.start_tinyproxy(p, d, w, TINYPROXY_PORT)  # noqa: E731
        out.append(Target(TINYPROXY, TINYPROXY_PORT, start_tp, redirected=False))
        seen.append(forward_peers.version(tinyproxy))
    squid = forward_peers.squid_binary()
    if squid is not None:
        start_squid = lambda: forward_peers.start_squid(p, d, w, SQUID_PORT)  # noqa: E731
        out.append(Target(SQUID, SQUID_PORT, start_squid, redirected=False))
        seen.append(forward_peers.version(squid))
    suite.info["explicit_peers"] = "; ".join(seen)
    return out


def importlib_available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@functools.cache
def airgap_help(src: Path) -> str:
    proc = subprocess.run(
        [rig.python(), "-m", "proxy.cli", "run", "--help"],
        capture_output=True, text=True, cwd=src, timeout=30,
    )  # fmt: skip
    return proc.stdout


def reexec_in_namespace(argv: list[str]) -> int:
    """Run this file again in fresh network, mount and PID namespaces (`unshare`).

    The runner becomes the namespace's init: when it exits, for any reason, the kernel
    kills every process left in the namespace, and the addresses and rules vanish.
    """
    if shutil.which("unshare") is None:
        log("unshare (util-linux) is not installed")
        return 1
    cmd = [
        "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
        "--", rig.python(), str(Path(__file__).resolve()), *argv,
    ]  # fmt: skip
    env = {**os.environ, "AIRGAP_BENCH_NS": "1"}
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions (CI)")
    parser.add_argument("--json", metavar="FILE", help="write every run's numbers here")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3; quick 2)")
    parser.add_argument("--idle-conns", type=int, default=0, help="memory scenario size")
    parser.add_argument("--wrk-seconds", type=int, default=0, help="per wrk run (5; quick 1)")
    parser.add_argument(
        "--only", action="append", default=[], choices=SCENARIOS, metavar="SCENARIO",
        help=f"run only these scenarios (repeatable): {', '.join(SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument("--no-pproxy", action="store_true", help="skip the peer")
    parser.add_argument(
        "--origin", choices=("auto", "nginx", "python"), default="auto",
        help="HTTP origin: nginx when installed (auto), or the Python fallback",
    )  # fmt: skip
    parser.add_argument(
        "--lean", action="store_true",
        help="also measure benchmarks/lean_relay.py (the floor of a Python relay, no features)",
    )  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and configs")
    parser.add_argument(
        "--airgap-src", metavar="DIR",
        help="run airgap-proxy from this checkout (e.g. to compare commits; default: this one)",
    )  # fmt: skip
    parser.add_argument(
        "--airgap-arg", action="append", default=[], metavar="ARG",
        help="extra argument for `airgap-proxy run` (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/run.py: run as root (namespaces, iptables)", file=sys.stderr)
        return 2
    if os.environ.get("AIRGAP_BENCH_NS") != "1":
        return reexec_in_namespace(argv)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
