"""The benchmark rig: namespace set-up, the redirect rule, and every process the suite starts.

Everything here runs inside the private network + mount + PID namespace that `run.py`
re-executes itself into, so addresses, iptables rules, sysctls and the private /etc/hosts
vanish with it, and no process can outlive the run (the namespace's init is the runner).

Only sockets of processes running with group `LOAD_GID` (the load generators: wrk and
`loadgen.py`) are redirected, by `-m owner --gid-owner`: the origins, nginx and the proxies
run as root's group, so their own connections are never looped back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent

#: The group the load generators run under; only its TCP is redirected to a proxy.
LOAD_GID = 4242
CHAIN = "AIRGAP_BENCH"

HTTP_IP = "203.0.113.10"  # nginx (or the Python fallback) on port 80
HTTP_NAME = "origin.bench.example"  # what wrk puts in Host; the proxy's exclude allows it
BULK_IP = "203.0.113.20"
BULK_PORT = 9000  # `DOWN n` -> n bytes, then close
HOLD_PORT = 9001  # sends one byte on accept, then holds the connection open
NET = "203.0.113.0/24"

#: Per-namespace sysctls that keep a connection-rate run from running out of ports or
#: drowning in TIME_WAIT (best effort: a kernel that refuses one still runs the suite).
SYSCTLS = {
    "net.ipv4.ip_local_port_range": "1024 65000",
    "net.ipv4.tcp_tw_reuse": "1",
    "net.core.somaxconn": "8192",
    "net.ipv4.tcp_max_syn_backlog": "8192",
}
#: Loaded only once the nat table exists (conntrack), so set after the chain is made.
CONNTRACK_SYSCTLS = {"net.netfilter.nf_conntrack_tcp_timeout_time_wait": "5"}


class RigError(RuntimeError):
    """The rig itself failed (a tool is missing, a process died): the suite is broken."""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    """Run a short command and return stdout; a failure carries its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def sysctl(name: str, value: str) -> bool:
    """Write one sysctl through /proc/sys; False when this kernel refuses it."""
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def setup_namespace(workdir: Path) -> None:
    """Addresses on lo, sysctls and a private /etc/hosts that names the HTTP origin."""
    if os.environ.get("AIRGAP_BENCH_NS") != "1":
        raise RigError("setup_namespace outside the benchmark namespace would change the host")
    sh("ip", "link", "set", "lo", "up")
    for ip in (HTTP_IP, BULK_IP):
        sh("ip", "addr", "add", f"{ip}/32", "dev", "lo")
    for name, value in SYSCTLS.items():
        sysctl(name, value)
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{HTTP_IP} {HTTP_NAME}\n")
    # The mount namespace is private (unshare's default propagation), so this stays ours.
    sh("mount", "--bind", str(hosts), "/etc/hosts")


class Redirect:
    """The one nat rule that sends the load group's TCP to a proxy port, or nowhere."""

    def __init__(self) -> None:
        self.port: int | None = None

    def install(self) -> None:
        sh("iptables", "-t", "nat", "-N", CHAIN)
        sh("iptables", "-t", "nat", "-A", "OUTPUT", "-j", CHAIN)
        for name, value in CONNTRACK_SYSCTLS.items():
            sysctl(name, value)

    def to(self, port: int | None) -> None:
        """Redirect to `port` (a proxy), or to nothing (baseline: traffic goes direct)."""
        if port == self.port:
            return
        sh("iptables", "-t", "nat", "-F", CHAIN)
        if port is not None:
            sh(
                "iptables", "-t", "nat", "-A", CHAIN, "-p", "tcp", "-d", NET,
                "-m", "owner", "--gid-owner", str(LOAD_GID),
                "-j", "REDIRECT", "--to-ports", str(port),
            )  # fmt: skip
        self.port = port

    def remove(self) -> None:
        sh("iptables", "-t", "nat", "-D", "OUTPUT", "-j", CHAIN, check=False)
        sh("iptables", "-t", "nat", "-F", CHAIN, check=False)
        sh("iptables", "-t", "nat", "-X", CHAIN, check=False)
        self.port = None


# --------------------------------------------------------------------------- CPU placement


@dataclass(frozen=True)
class Placement:
    """Which core the proxy gets and which the load (client + origins) gets.

    The issue's targets are measured with the proxy alone on one core and the load on the
    other; on a one-core machine nothing is pinned (and the report says so).
    """

    proxy_core: int | None
    load_core: int | None

    @classmethod
    def detect(cls) -> Placement:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(cores[0], cores[1])

    def proxy(self) -> list[str]:
        return _taskset(self.proxy_core)

    def load(self) -> list[str]:
        return _taskset(self.load_core)


def _taskset(core: int | None) -> list[str]:
    return [] if core is None else ["taskset", "-c", str(core)]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process the suite started, in its own process group so it is stopped whole."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise RigError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the group, then SIGKILL when it does not go in `grace` seconds."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        else:  # the leader is gone; children it left in the group must go too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


class Processes:
    """Every long-lived process of the run; `stop_all` runs in the runner's `finally`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            with contextlib.suppress(Exception):
                proc.stop()


def listening(port: int, ip: str = "127.0.0.1") -> bool:
    """Whether a TCP socket listens on ip:port, read from /proc (no probe connection,
    which a transparent proxy would log as a refused, un-redirected client)."""
    want_port = f"{port:04X}"
    want_ip = "".join(f"{int(b):02X}" for b in reversed(ip.split(".")))
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        addr, _, lport = local.partition(":")
        if state == "0A" and lport == want_port and addr in (want_ip, "00000000"):
            return True
    return False


def wait_listening(proc: Proc, port: int, ip: str = "127.0.0.1", timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        if listening(port, ip):
            return
        time.sleep(0.05)
    raise RigError(f"{proc.name} does not listen on {ip}:{port} after {timeout}s")


# --------------------------------------------------------------------------- measurements

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (worker processes of a multi-worker proxy)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its live children (all threads).

    Both are reported: on loopback the kernel's TCP work for a packet is mostly done in
    the sender's context, so the system share tells the proxy's Python cost apart from
    the cost of the connections themselves.
    """
    user = system = 0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, field 14 of stat(5)
        system += int(fields[12])  # stime, field 15
    return user / _CLK_TCK, system / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children, in seconds."""
    return sum(cpu_times(pid))


def core_jiffies() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies from /proc/stat (busy = all but idle and iowait)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total = sum(ticks)
        out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return out


def core_busy(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int | None
) -> float | None:
    """Fraction of the time `core` was busy between two `core_jiffies` readings: it tells
    whether the proxy's core (or the load's) was the bottleneck of a run."""
    if core is None or core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return busy / total if total > 0 else None


def machine_ticks() -> tuple[int, int]:
    """(user + nice + system, steal) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return values[0] + values[1] + values[2], values[7]


def namespace_ticks() -> int:
    """Jiffies used by every process of this PID namespace, live or reaped (utime, stime,
    cutime, cstime): the suite's own share of `machine_ticks`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])
    return total


@dataclass
class OtherLoad:
    """How much CPU was used outside the suite's processes during a measurement (cores).

    The machine may be shared (other sessions' tests, CI); a run that had company is
    flagged in the report instead of silently counting as a slow proxy. Kernel threads
    (ksoftirqd, timers) doing the suite's own network work count here too, so this is an
    upper bound of foreign load.
    """

    start: float = 0.0
    machine: tuple[int, int] = (0, 0)
    ours: int = 0

    def begin(self) -> None:
        self.start = time.monotonic()
        self.machine = machine_ticks()
        self.ours = namespace_ticks()

    def end(self) -> dict[str, float]:
        wall = time.monotonic() - self.start
        machine = machine_ticks()
        ours = namespace_ticks()
        if wall <= 0:
            return {}
        other = (machine[0] - self.machine[0]) - (ours - self.ours)
        steal = machine[1] - self.machine[1]
        return {
            "other_load_cores": max(0.0, other / _CLK_TCK / wall),
            "steal_cores": steal / _CLK_TCK / wall,
        }


def rss_kib(pid: int) -> int:
    """Resident set size of a process and its live children, in KiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def python() -> str:
    return sys.executable
