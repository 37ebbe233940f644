"""End to end: reloading the policy without cutting a connection, and refusing bad versions.

The real proxy (two workers) with its --config rewritten the ways operators and Kubernetes
do it: SIGHUP after an edit, an editor's replace (noticed by the proxy itself), a ConfigMap
volume's `..data` symlink swap. A 100 MiB download runs across each reload and must arrive
whole; new connections must get the new policy within 2 s. Invalid versions of every kind
leave the policy in force.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.e2e import harness as h

pytestmark = pytest.mark.e2e

MIB = 1 << 20
BIG = 100 * MIB
#: The reload promise: a new policy is in force for new connections within this.
RELOAD_BOUND = 2.0


def policy(direct_ips: list[str], ports: str = "*") -> dict:
    """Only `direct_ips` go DIRECT (exclude by IP); everything else is REJECTed."""
    return {
        "configurationFileVersion": 2,
        "containersProxy": {"mode": "manual", "exclude": direct_ips, "transparentPorts": ports},
    }


A = policy([h.ORIGIN_A])  # allows ORIGIN_A only
B = policy([h.ORIGIN_B])  # allows ORIGIN_B only


def config_path(proxy: h.ProxyProcess) -> Path:
    return Path(proxy.args[proxy.args.index("--config") + 1])


def replace(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a new file and rename it over the old one, as editors and tools do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def allowed(ip: str) -> bool:
    """Does a new HTTP connection to `ip` get through (200 from the origin), or is it
    REJECTed (403)? Anything else fails the test."""
    answer = h.http_get(ip, 80, None)
    if answer.startswith(b"HTTP/1.1 403 "):
        return False
    assert h.origin_of(answer) == f"{ip}:80", answer[:200]
    return True


def wait_policy(ip: str, expect: bool, bound: float = RELOAD_BOUND) -> float:
    """Wait (bounded) until new connections to `ip` are allowed/blocked; the time it took."""
    start = time.monotonic()
    deadline = start + bound
    while allowed(ip) != expect:
        if time.monotonic() > deadline:
            raise AssertionError(f"{ip} still {'blocked' if expect else 'allowed'} after {bound} s")
        time.sleep(0.02)
    return time.monotonic() - start


class Download:
    """A 100 MiB download through the proxy, started, held part-way, then finished."""

    def __init__(self) -> None:
        self.sock = h.client_socket(h.ORIGIN_A, h.BULK_PORT, timeout=60)
        self.sock.sendall(f"DOWN {BIG}\n".encode())
        self.first = b""
        while len(self.first) < MIB:  # flowing: the relay is up and moving bytes
            data = self.sock.recv(MIB - len(self.first))
            assert data, "the download ended early"
            self.first += data

    def finish(self) -> None:
        digest = hashlib.sha256(self.first)
        total = len(self.first)
        with self.sock:
            while data := self.sock.recv(1 << 18):
                digest.update(data)
                total += len(data)
        assert total == BIG
        assert digest.hexdigest() == h.pattern_digest(BIG)


def reloads(proxy: h.ProxyProcess, word: str = "config reloaded: ") -> int:
    return proxy.log_text().count(word)


def refusals(proxy: h.ProxyProcess) -> list[str]:
    return [line for line in proxy.log_text().splitlines() if "config reload refused: " in line]


def configmap(directory: Path, text: str, version: int) -> Path:
    """A ConfigMap volume as the kubelet writes it: the file is a symlink through `..data`,
    itself a symlink to a timestamped directory; an update swaps `..data` atomically."""
    real = directory / f"..2026_12_04_{version:02d}"
    real.mkdir(mode=0o755)
    (real / "admin-settings.json").write_text(text)
    (real / "admin-settings.json").chmod(0o644)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(real.name)
    os.replace(tmp, directory / "..data")
    link = directory / "admin-settings.json"
    if not link.is_symlink():
        link.symlink_to("..data/admin-settings.json")
    return link


@pytest.mark.parametrize(
    ("how", "workers"), [("sighup", 2), ("replace", 2), ("configmap", 2), ("sighup", 1)]
)
def test_a_reload_keeps_an_open_transfer_and_new_connections_get_the_new_policy(
    start_proxy, tmp_path: Path, how: str, workers: int
) -> None:
    """Two workers (the supervisor owns the policy) and one (the process owns it)."""
    count = ("--workers", str(workers))
    if how == "configmap":
        cm = tmp_path / "cm"
        cm.mkdir(mode=0o755)
        path = configmap(cm, json.dumps(A), 1)
        proxy = start_proxy(None, "--config", str(path), *count)
    else:
        proxy = start_proxy(A, *count)
        path = config_path(proxy)
    assert allowed(h.ORIGIN_A) and not allowed(h.ORIGIN_B)
    download = Download()
    if how == "sighup":
        # The signal alone reloads (the file is the same: said so)...
        proxy.signal(signal.SIGHUP)
        h.wait_for(lambda: "config reloaded: unchanged" in proxy.log_text(), 5, "the reload")
        # ...and after an edit in place (which the watch would see too) the new policy.
        path.write_text(json.dumps(B))
        proxy.signal(signal.SIGHUP)
    elif how == "replace":
        replace(path, json.dumps(B))
    else:
        configmap(cm, json.dumps(B), 2)
    took = wait_policy(h.ORIGIN_B, True)
    assert not allowed(h.ORIGIN_A)
    assert took <= RELOAD_BOUND
    download.finish()  # kept its route across the reload, every byte in order
    h.wait_for(lambda: " -> " in proxy.log_text(), 5, "the reload line")
    line = next(x for x in proxy.log_text().splitlines() if "config reloaded: " in x and "->" in x)
    old = hashlib.sha256(json.dumps(A).encode()).hexdigest()[:16]
    new = hashlib.sha256(json.dumps(B).encode()).hexdigest()[:16]
    assert f"sha256 {old} -> {new}" in line
    record = proxy.wait_record(lambda r: r["dst"] == f"{h.ORIGIN_A}:{h.BULK_PORT}")
    assert record["decision"] == "DIRECT" and record["bytes_down"] == BIG
    assert record["error"] is None


def test_invalid_versions_leave_the_policy_in_force_and_the_next_valid_one_is_taken(
    start_proxy,
) -> None:
    proxy = start_proxy(A)
    path = config_path(proxy)
    assert allowed(h.ORIGIN_A)
    steps = [
        (
            "bad JSON",
            lambda: replace(path, '{"containersProxy": {"mode": manual}}'),
            "invalid JSON",
        ),
        (
            "a bad key",
            lambda: replace(path, json.dumps({"containersProxy": {"exclud": []}})),
            "containersProxy.exclud: unknown key",
        ),
        (
            "group-writable",
            lambda: replace(path, json.dumps(B), mode=0o664),
            "writable by group or others",
        ),
        ("deleted", path.unlink, "cannot open config file"),
    ]
    for what, change, message in steps:
        before = len(refusals(proxy))
        change()
        h.wait_for(lambda n=before: len(refusals(proxy)) > n, 5, f"the refusal of {what}")
        new = refusals(proxy)[before:]
        assert len(new) == 1 and message in new[0], (what, new)
        assert "the policy in force" in new[0]
        assert allowed(h.ORIGIN_A) and not allowed(h.ORIGIN_B), what
    # Half-written: the first half of a valid file, in place; then the rest of it.
    text = json.dumps(B)
    with open(path, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text[: len(text) // 2])
        f.flush()
        before = len(refusals(proxy))
        h.wait_for(lambda: len(refusals(proxy)) > before, 5, "the half-written refusal")
        assert allowed(h.ORIGIN_A) and not allowed(h.ORIGIN_B)
        f.write(text[len(text) // 2 :])
    wait_policy(h.ORIGIN_B, True)
    assert not allowed(h.ORIGIN_A)
    assert reloads(proxy) == 1
    assert "Traceback" not in proxy.log_text()


def test_a_restarted_worker_gets_the_policy_in_force_not_the_broken_file(start_proxy) -> None:
    """A worker started after the file broke is handed the version in force."""
    proxy = start_proxy(A)
    path = config_path(proxy)
    replace(path, "{ not json")
    h.wait_for(lambda: refusals(proxy), 5, "the refusal")
    children = Path(f"/proc/{proxy.proc.pid}/task/{proxy.proc.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)  # a worker (a static policy has no engines)
    # Each worker logs one line per listener (two): the restarted one adds two more.
    h.wait_for(lambda: proxy.log_text().count("listening on") >= 6, 15, "the restart")
    for _ in range(8):  # the kernel spreads these over both workers
        assert allowed(h.ORIGIN_A) and not allowed(h.ORIGIN_B)


def test_a_transparent_ports_change_is_in_force_at_once_and_says_to_reapply_rules(
    start_proxy,
) -> None:
    proxy = start_proxy(policy([], ports="80,443"))
    path = config_path(proxy)
    # 8080 is redirected by the test's rule, but outside transparentPorts: DIRECT.
    assert h.origin_of(h.http_get(h.ORIGIN_A, 8080, None)) == f"{h.ORIGIN_A}:8080"
    replace(path, json.dumps(policy([], ports="*")))
    h.wait_for(lambda: reloads(proxy) >= 1, 5, "the reload")
    # Policed now: REJECT, a reset (on loopback it may come before connect() returns).
    try:
        with h.client_socket(h.ORIGIN_A, 8080) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert h.recv_all(sock) == b""
    except (ConnectionResetError, BrokenPipeError):
        pass
    record = proxy.wait_record(
        lambda r: r["dst"] == f"{h.ORIGIN_A}:8080" and r["decision"] == "REJECT"
    )
    assert "no proxy configured" in record["reason"]
    assert "transparentPorts changed from 80,443 to *" in proxy.log_text()
    assert "redirect rules must be re-applied" in proxy.log_text()


def test_a_reload_to_a_dead_pac_server_fails_closed(start_proxy) -> None:
    server = h.PacServer('function FindProxyForURL(u, host) { return "DIRECT"; }').up()
    try:
        config = {"containersProxy": {"mode": "manual", "pac": server.url, "transparentPorts": "*"}}
        proxy = start_proxy(config)
        h.wait_for(
            lambda: proxy.log_text().count("PAC script in use") >= 2, 15, "both workers' script"
        )
        assert allowed(h.ORIGIN_A)
        dead = f"http://127.0.0.1:{h.free_port()}/proxy.pac"
        replace(
            config_path(proxy), json.dumps({"containersProxy": {"mode": "manual", "pac": dead}})
        )
        wait_policy(h.ORIGIN_A, False)
        record = proxy.wait_record(
            lambda r: r["dst"] == f"{h.ORIGIN_A}:80" and r["decision"] == "REJECT"
        )
        assert "PAC unavailable" in record["reason"]
    finally:
        server.close()


def test_an_unchanged_pac_source_stays_in_force_across_a_reload(start_proxy) -> None:
    """Only the ports change: the script in force is kept, no connection is refused."""
    server = h.PacServer('function FindProxyForURL(u, host) { return "DIRECT"; }').up()
    try:
        section = {"mode": "manual", "pac": server.url, "transparentPorts": "80,443"}
        proxy = start_proxy({"containersProxy": section})
        h.wait_for(
            lambda: proxy.log_text().count("PAC script in use") >= 2, 15, "both workers' script"
        )
        stop = threading.Event()
        refused: list[bytes] = []

        def keep_asking() -> None:
            while not stop.is_set():
                answer = h.http_get(h.ORIGIN_A, 80, None)
                if h.origin_of(answer) is None:
                    refused.append(answer[:100])

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            section["transparentPorts"] = "*"
            replace(config_path(proxy), json.dumps({"containersProxy": section}))
            h.wait_for(lambda: reloads(proxy) >= 1, 5, "the reload")
            h.wait_for(lambda: len(proxy.records()) > 20, 10, "connections after it")
        finally:
            stop.set()
            asker.join(10)
        assert refused == []
        assert proxy.log_text().count("PAC script in use") == 2  # loaded once per worker
    finally:
        server.close()


def test_a_file_pac_is_reread_when_it_changes(start_proxy, tmp_path: Path) -> None:
    """Not at the next --pac-refresh (300 s here): when the file changes."""
    pac = tmp_path / "proxy.pac"
    replace(pac, 'function FindProxyForURL(u, host) { return "DIRECT"; }')
    proxy = start_proxy({"containersProxy": {"pac": f"file://{pac}", "transparentPorts": "*"}})
    h.wait_for(lambda: proxy.log_text().count("PAC script in use") >= 2, 15, "both scripts")
    assert allowed(h.ORIGIN_A)
    replace(pac, 'function FindProxyForURL(u, host) { return "PROXY reject.docker.internal:1"; }')
    wait_policy(h.ORIGIN_A, False, bound=RELOAD_BOUND + 3)  # + loading the script in each worker
