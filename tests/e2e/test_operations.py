"""End to end: the shadow policy, the bad-proxy list shared by the workers, the audit file.

The real proxy with two workers, as the other end-to-end tests run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e import harness as h
from tests.e2e.test_reload import A, B, allowed, policy, replace

pytestmark = pytest.mark.e2e


def write(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def test_the_shadow_policy_is_audited_where_it_differs_and_never_enforced(
    start_proxy, tmp_path: Path
) -> None:
    shadow = write(tmp_path / "shadow.json", B)
    proxy = start_proxy(A, "--shadow-config", str(shadow))
    assert allowed(h.ORIGIN_A)  # enforced: A allows it (the shadow would not)
    assert not allowed(h.ORIGIN_B)  # enforced: A blocks it (the shadow would not)
    assert not allowed(h.ORIGIN_EVIL)  # both block it
    by_dst = {
        ip: proxy.wait_record(lambda r, ip=ip: r["dst"] == f"{ip}:80")
        for ip in (h.ORIGIN_A, h.ORIGIN_B, h.ORIGIN_EVIL)
    }
    a, b, evil = by_dst[h.ORIGIN_A], by_dst[h.ORIGIN_B], by_dst[h.ORIGIN_EVIL]
    assert a["decision"] == "DIRECT" and a["shadow_decision"] == "REJECT"
    assert "no proxy configured" in a["shadow_reason"]
    assert b["decision"] == "REJECT" and b["shadow_decision"] == "DIRECT"
    assert "exclude entry" in b["shadow_reason"]
    assert evil["decision"] == "REJECT" and "shadow_decision" not in evil
    # It reloads like the main config: now it agrees with the enforced policy.
    replace(shadow, json.dumps(A))
    h.wait_for(lambda: "shadow config reloaded: " in proxy.log_text(), 5, "the shadow reload")
    before = len(proxy.records())
    assert allowed(h.ORIGIN_A)
    record = proxy.wait_record(
        lambda r: r["dst"] == f"{h.ORIGIN_A}:80" and len(proxy.records()) > before
    )
    assert proxy.records()[-1]["decision"] == "DIRECT"
    assert "shadow_decision" not in proxy.records()[-1], record


def test_a_failing_shadow_pac_never_touches_traffic(start_proxy, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{h.free_port()}/proxy.pac"
    shadow = write(tmp_path / "shadow.json", {"containersProxy": {"pac": dead}})
    proxy = start_proxy(A, "--shadow-config", str(shadow))
    for _ in range(4):
        assert allowed(h.ORIGIN_A)
    record = proxy.wait_record(lambda r: r["dst"] == f"{h.ORIGIN_A}:80")
    assert record["decision"] == "DIRECT"
    assert record["shadow_decision"] == "REJECT"
    assert "PAC unavailable" in record["shadow_reason"]


def test_explain_shows_both_decisions(tmp_path: Path) -> None:
    main = write(tmp_path / "a.json", A)
    shadow = write(tmp_path / "b.json", B)
    out = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "explain", "--config", str(main),
         "--shadow-config", str(shadow), f"{h.ORIGIN_A}:443"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    ).stdout  # fmt: skip
    answer = json.loads(out)
    assert answer["action"] == "DIRECT"
    assert answer["shadow"]["action"] == "REJECT"


def test_a_dead_first_proxy_costs_one_connection_not_one_per_worker(start_proxy) -> None:
    dead = f"{h.ORIGIN_BLACKHOLE}:3128"
    script = f'function FindProxyForURL(u, host) {{ return "PROXY {dead}; DIRECT"; }}'
    config = {"containersProxy": {"embeddedPac": script, "transparentPorts": "*"}}
    proxy = start_proxy(config, "--workers", "2", "--connect-timeout", "1")
    h.wait_for(lambda: proxy.log_text().count("PAC script in use") >= 2, 15, "both scripts")
    for _ in range(10):  # the kernel spreads new connections over both workers
        assert allowed(h.ORIGIN_A)
    h.wait_for(lambda: len(proxy.records()) >= 10, 10, "every audit line")
    waited = [r for r in proxy.records() if dead in (r.get("error") or "")]
    assert len(waited) == 1, [r.get("error") for r in proxy.records()]


def test_the_audit_file_gets_json_lines_and_is_reopened_on_sigusr1(
    start_proxy, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    proxy = start_proxy(policy([h.ORIGIN_A]), "--audit-log", str(log), "--log-format", "text")
    assert allowed(h.ORIGIN_A)
    h.wait_for(lambda: log.exists() and log.read_text().count("\n") == 1, 5, "the first line")
    first = json.loads(log.read_text())
    assert first["dst"] == f"{h.ORIGIN_A}:80" and first["decision"] == "DIRECT"
    os.rename(log, tmp_path / "audit.jsonl.1")  # logrotate
    proxy.signal(signal.SIGUSR1)
    h.wait_for(lambda: proxy.log_text().count("audit log reopened") >= 2, 5, "both workers")
    assert allowed(h.ORIGIN_A)
    assert not allowed(h.ORIGIN_B)
    h.wait_for(lambda: log.exists() and log.read_text().count("\n") == 2, 5, "the new lines")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["decision"] for r in lines} == {"DIRECT", "REJECT"}
    assert (tmp_path / "audit.jsonl.1").read_text().count("\n") == 1
    assert proxy.proc.poll() is None
