"""docker/entrypoint.sh for real, in the sidecar namespace: the image's own shell logic.

The image cannot be built here, so its parts are run as the image runs them: the entrypoint
as root applies the rules through `airgap-proxy iptables`, starts the real proxy as uid
10001 with only CAP_NET_ADMIN (setpriv), and must leave egress closed when the proxy dies,
when it is stopped, and when the rules cannot be applied at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import firewall_helpers as h

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e

ENTRYPOINT = h.REPO / "docker" / "entrypoint.sh"
CAP_NET_ADMIN = 1 << 12


def entry_env(workdir: Path, config: Path) -> dict[str, str]:
    return {
        "AIRGAP_BIN": f"{sys.executable} -m proxy.cli",
        "AIRGAP_CONFIG": str(config),
        "AIRGAP_STATE_DIR": str(workdir / "state"),
        "AIRGAP_IPTABLES_ARGS": f"--dns-server {h.DNS_V4} --dns-server {h.DNS_V6}",
        "AIRGAP_PROXY_UID": str(h.PROXY_UID),
        "AIRGAP_PROXY_GID": str(h.PROXY_GID),
    }


def start_entrypoint(workdir: Path, config: Path) -> h.Background:
    cmd = h.in_ns(h.APP, *h.python_readable_by_all(), "sh", str(ENTRYPOINT), "--log-format", "json")
    return h.Background(cmd, env=entry_env(workdir, config))


def healthy(workdir: Path, config: Path) -> bool:
    proc = subprocess.run(
        h.in_ns(h.APP, "sh", str(ENTRYPOINT), "healthcheck"),
        env={**os.environ, **entry_env(workdir, config)},
        capture_output=True,
        timeout=10,
        check=False,
    )
    return proc.returncode == 0


def proxy_pid(entrypoint: h.Background) -> int:
    """The proxy: the entrypoint's only child (setpriv execs into it)."""
    pid = entrypoint.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def client(host: str, port: int) -> dict:
    return h.probe(h.APP, "tcp", host, str(port), uid=h.CLIENT_UID)


def reaches(host: str, port: int) -> bool:
    return client(host, port).get("reply", "").startswith(f"ORIGIN {host} {port} ")


def assert_egress_closed() -> None:
    for host, dns in ((h.ORIGIN_V4, h.DNS_V4), (h.ORIGIN_V6, h.DNS_V6)):
        assert "error" in client(host, 80)
        assert "error" in client(host, 8080)  # reject-all: outside transparentPorts too
        assert "error" in h.probe(h.APP, "udp", dns, "53", uid=h.CLIENT_UID)


def wait_exit(bg: h.Background, timeout: float = 20) -> int:
    try:
        return bg.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"entrypoint still running:\n{bg.text()}") from None


def test_entrypoint_runs_the_proxy_and_a_dead_proxy_leaves_egress_closed(workdir: Path) -> None:
    config = h.write_config(workdir)
    entry = start_entrypoint(workdir, config)
    try:
        h.wait_for(lambda: healthy(workdir, config), 20, "the entrypoint's healthcheck", 0.2)
        for host in (h.ORIGIN_V4, h.ORIGIN_V6):
            assert reaches(host, 80), entry.text()
            assert reaches(host, 8080)
        # the proxy runs as its own uid, with CAP_NET_ADMIN (for SO_MARK) and nothing else
        pid = proxy_pid(entry)
        assert status_field(pid, "Uid").split() == [str(h.PROXY_UID)] * 4
        assert int(status_field(pid, "CapEff"), 16) == CAP_NET_ADMIN
        assert int(status_field(pid, "CapBnd"), 16) == CAP_NET_ADMIN
        assert status_field(pid, "NoNewPrivs") == "1"
        # the leak guard is on by default in the image
        assert "error" in h.probe(h.APP, "udp", h.ORIGIN_V4, str(h.UDP_PORT), uid=h.CLIENT_UID)

        os.kill(pid, signal.SIGKILL)
        assert wait_exit(entry) != 0
        assert "locking down" in entry.text()
        assert not healthy(workdir, config)
        assert_egress_closed()
    finally:
        entry.stop(signal.SIGKILL)


def test_entrypoint_stopped_by_sigterm_exits_cleanly_and_closed(workdir: Path) -> None:
    config = h.write_config(workdir)
    entry = start_entrypoint(workdir, config)
    try:
        h.wait_for(lambda: healthy(workdir, config), 20, "the entrypoint's healthcheck", 0.2)
        assert reaches(h.ORIGIN_V4, 80)
        os.kill(entry.proc.pid, signal.SIGTERM)  # docker stop: to PID 1 only
        assert wait_exit(entry) == 0, entry.text()
        assert_egress_closed()
    finally:
        entry.stop(signal.SIGKILL)


def test_entrypoint_fails_closed_when_the_rules_cannot_be_applied(workdir: Path) -> None:
    config = h.write_config(workdir)
    config.chmod(0o666)  # the policy loader refuses a file others can write
    assert reaches(h.ORIGIN_V4, 8080)  # open before
    entry = start_entrypoint(workdir, config)
    try:
        assert wait_exit(entry) == 1
        text = entry.text()
        assert "applying the rules failed; locking down" in text
        assert "proxy started" not in text
        assert not healthy(workdir, config)
        assert_egress_closed()
    finally:
        entry.stop(signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def test_pac_engine_processes_hold_no_capability(workdir: Path) -> None:
    # The proxy keeps CAP_NET_ADMIN (ambient, so its re-executed workers keep it too); the
    # PAC engines it starts run a script fetched from the network in a C/JS engine. Were
    # they to inherit CAP_NET_ADMIN, one engine exploit could flush the rules or mark its
    # own sockets: every container in the namespace would be out.
    config = dict(h.PROXY_CONFIG)
    config["containersProxy"] = {
        **h.PROXY_CONFIG["containersProxy"],
        "embeddedPac": 'function FindProxyForURL(url, host) { return "DIRECT"; }',
    }
    path = h.write_config(workdir, config)
    entry = start_entrypoint(workdir, path)
    try:
        h.wait_for(lambda: healthy(workdir, path), 20, "the entrypoint's healthcheck", 0.2)
        # decided by the PAC (rejected until each worker has the script): engines run
        h.wait_for(lambda: reaches(h.ORIGIN_V4, 80), 10, "a PAC-decided connection", 0.2)
        proxy = proxy_pid(entry)

        def engines() -> dict[int, dict[str, str]]:
            found = {}
            for pid in _descendants(proxy):
                if "pac.worker" in _cmdline(pid):
                    with contextlib.suppress(OSError, AssertionError):
                        fields = ("CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")
                        found[pid] = {f: status_field(pid, f) for f in fields}
            return found

        def unprivileged() -> bool:
            # An engine process is briefly privileged between its exec and the drop, which
            # comes before it reads anything; a privileged one must not stay so.
            now = engines()
            return bool(now) and all(
                all(int(v[f], 16) == 0 for f in ("CapInh", "CapPrm", "CapEff", "CapAmb"))
                and v["NoNewPrivs"] == "1"
                for v in now.values()
            )

        h.wait_for(unprivileged, 5, "PAC engine processes without capabilities", 0.1)
        # the proxy itself still marks its upstream sockets
        assert int(status_field(proxy, "CapEff"), 16) == CAP_NET_ADMIN
    finally:
        entry.stop(signal.SIGKILL)


@pytest.mark.parametrize("value", ["true", "yes", "on", " 1", "false"])
def test_entrypoint_refuses_a_leak_guard_setting_it_does_not_know(
    workdir: Path, value: str
) -> None:
    # compose turns `AIRGAP_BLOCK_UNREDIRECTED: true` into "true": that must not be read as
    # "off" (UDP, QUIC and the rest would go around the proxy); only "1" and "0" mean
    # anything, the rest stops the sidecar with egress locked down.
    config = h.write_config(workdir)
    assert reaches(h.ORIGIN_V4, 8080)  # open before
    cmd = h.in_ns(h.APP, *h.python_readable_by_all(), "sh", str(ENTRYPOINT))
    entry = h.Background(
        cmd, env={**entry_env(workdir, config), "AIRGAP_BLOCK_UNREDIRECTED": value}
    )
    try:
        assert wait_exit(entry) == 1, entry.text()
        assert "AIRGAP_BLOCK_UNREDIRECTED" in entry.text()
        assert "proxy started" not in entry.text()
        assert not healthy(workdir, config)
        assert_egress_closed()
    finally:
        entry.stop(signal.SIGKILL)
