"""End to end: what the proxy must survive as an operator's load test drives it (the soak
of `benchmarks/soak.py` in small): a worker killed under a PAC policy, hostile bytes on the
real listener."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import in_use, pac_config, wait_script
from tests.e2e.test_upstreams_and_limits import _children
from tests.fuzz.network import fuzz_listener

pytestmark = pytest.mark.e2e

#: Slow to load on purpose (a loop at the top level, well inside the load bound): a worker
#: that listened before its script was in force would reject for that long.
SLOW_LOADING = """
var warmup = 0;
for (var i = 0; i < 3000000; i++) { warmup += i % 7; }
function FindProxyForURL(url, host) {
  if (host == "allowed.example") return "DIRECT";
  return "PROXY reject.docker.internal:80";
}
"""


def _probe() -> str | None:
    """Where a TLS connection to the allowed name went ("reset" when it was reset: what a
    TLS client gets for a REJECT before its hello is answered)."""
    try:
        return h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
    except ConnectionResetError:
        return "reset"


def test_a_restarted_pac_worker_takes_no_connection_before_its_script_is_in_force(
    start_proxy,
) -> None:
    proxy = start_proxy(
        pac_config(embedded=SLOW_LOADING), "--workers", "2", "--pac-eval-timeout", "20"
    )
    assert proxy.proc is not None
    wait_script(proxy)
    victim = _children(proxy.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    # Reaped, so its sockets are closed (an empty /proc cmdline comes earlier, while the
    # dying process still holds its listener, and a connection queued there is reset).
    h.wait_for(lambda: "restarting it" in proxy.log_text(), what="the supervisor to reap it")
    # From now on every connection goes to the survivor or to the replacement: all of them
    # must be relayed, through the restart and for a while after the replacement's script.
    answers, after_script = [], 0
    deadline = time.monotonic() + 120
    while after_script < 100 and time.monotonic() < deadline:
        answers.append(_probe())
        if in_use(proxy) > proxy.workers:
            after_script += 1
    assert after_script == 100, "the replacement never loaded its script"
    assert set(answers) == {f"{h.ORIGIN_A}:443"}, answers
    assert "PAC not loaded yet" not in proxy.log_text()
    replacement = [p for p in _children(proxy.proc.pid) if p != victim]
    assert len(replacement) == 2


#: Names go DIRECT only under allowed.example; every other connection is REJECTed.
ONLY_ALLOWED = {
    "configurationFileVersion": 2,
    "containersProxy": {"mode": "manual", "exclude": ["allowed.example"], "transparentPorts": "*"},
}


def test_fuzzed_hellos_and_heads_through_the_listener_open_no_way_through(
    start_proxy, origins
) -> None:
    """Mutated ClientHellos and request heads, addressed to a host no rule allows: none
    reaches it, the allowed origin is reached at most as often as an input names it (by the
    proxy's own sniffer), none hangs, and the proxy answers a probe right after."""
    proxy = start_proxy(ONLY_ALLOWED, "--workers", "2", "--peek-timeout", "2")
    before = Counter(origins.hits)
    result = fuzz_listener(
        lambda port: h.client_socket(h.ORIGIN_EVIL, port), "allowed.example", 1500, 90
    )
    hits = Counter(origins.hits) - before
    assert result.inputs == 1500, result
    assert result.allowed_names > 0, "no input named the allowed host: the oracle was idle"
    assert "hang" not in result.outcomes, result
    assert not any(ip == h.ORIGIN_EVIL for ip, _ in hits), hits
    allowed = sum(n for (ip, _), n in hits.items() if ip == h.ORIGIN_A)
    assert allowed <= result.allowed_names, (hits, result)
    assert proxy.proc is not None and proxy.proc.poll() is None
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
