"""End to end: one client's expensive PAC names cannot stall another client's decisions.

Two clients are told apart by their source address (the container's IP in production):
here two test addresses on lo, bound before connecting.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import pac_config, wait_script
from tests.e2e.test_transparent_proxy import is_tls_access_denied

pytestmark = pytest.mark.e2e

ATTACKER = h.ORIGIN_EVIL  # 203.0.113.66
VICTIM = h.ORIGIN_B  # 203.0.113.11
BOUND = 1.0  # --pac-eval-timeout

# Names under spin.example never finish evaluating; the glob is the one whose regex
# backtracked for hours on `a.a.a...b` in Chromium's shExpMatch.
SCRIPT = """
function FindProxyForURL(url, host) {
  if (dnsDomainIs(host, ".spin.example")) { while (true) {} }
  if (shExpMatch(host, "*.*.*.*.*.*.*.*.corp.example")) return "DIRECT";
  if (dnsDomainIs(host, "allowed.example")) return "DIRECT";
  return "PROXY reject.docker.internal:1";
}
"""


def client_from(source: str, ip: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A redirected client connection with the source address `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, h.CLIENT_MARK)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((ip, port))
    return sock


def ask_and_leave(source: str, host: str) -> None:
    """An HTTP request for `host`, then close at once (the FIN comes with the request)."""
    with client_from(source, h.ORIGIN_A, 80) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def tls_from(source: str, name: str) -> tuple[bytes, float]:
    """A ClientHello for `name` to ORIGIN_A:443: the answer, and how long it took."""
    started = time.monotonic()
    with client_from(source, h.ORIGIN_A, 443) as sock:
        sock.sendall(h.client_hello(name))
        answer = h.recv_all(sock)
    return answer, time.monotonic() - started


def test_hostile_names_of_one_client_do_not_delay_another_clients_fresh_name(
    start_proxy,
) -> None:
    proxy = start_proxy(
        pac_config(embedded=SCRIPT), "--workers", "1", "--pac-eval-timeout", str(BOUND)
    )
    wait_script(proxy)
    # Both engines of the worker started (the second one starts on first use).
    for name in ("w0.example", "w1.example"):
        answer, _ = tls_from(VICTIM, name)
        assert is_tls_access_denied(answer)
    # The attack: many connections with fresh endless names, each closing at once.
    for i in range(12):
        ask_and_leave(ATTACKER, f"n{i}.spin.example")
    h.wait_for(
        lambda: "timeout" in proxy.log_text(), timeout=10, what="a hostile evaluation to time out"
    )
    # A fresh name from another client: decided within one evaluation bound (it would
    # wait for the hostile evaluations before it, about 1.25 s each, on a shared queue).
    answer, seconds = tls_from(VICTIM, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    assert seconds < BOUND, f"the other client's fresh name took {seconds:.2f} s"
    # The attacker's name that already timed out is refused at once, without an engine.
    started = time.monotonic()
    with client_from(ATTACKER, h.ORIGIN_A, 80) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: n0.spin.example\r\n\r\n")
        answer = h.recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert time.monotonic() - started < BOUND / 2
    record = proxy.wait_record(
        lambda r: r.get("hostname") == "n0.spin.example" and "failure cache" in r["reason"]
    )
    assert record["decision"] == "REJECT" and record["client"].startswith(ATTACKER)


def test_the_glob_that_backtracked_is_decided_at_once(start_proxy) -> None:
    """The 81-character `a.a.a...b` against eight `*`: a plain answer, well inside the bound."""
    proxy = start_proxy(pac_config(embedded=SCRIPT), "--workers", "1")
    wait_script(proxy)
    name = "a." * 40 + "b"
    answer, seconds = tls_from(ATTACKER, name)
    assert is_tls_access_denied(answer)  # not the glob: the script's final REJECT
    assert seconds < 0.5
    record = proxy.wait_record(lambda r: r.get("hostname") == name)
    assert "reject.docker.internal" in record["reason"]


def test_connections_reset_while_waiting_for_their_decision_are_never_evaluated(
    start_proxy,
) -> None:
    """A client that resets its connection (or is lost) before its evaluation starts is
    dropped from the queue: its next fresh name does not wait behind the ones it left."""
    proxy = start_proxy(
        pac_config(embedded=SCRIPT), "--workers", "1", "--pac-eval-timeout", str(BOUND)
    )
    wait_script(proxy)
    for name in ("w0.example", "w1.example"):
        assert is_tls_access_denied(tls_from(ATTACKER, name)[0])
    ask_and_leave(ATTACKER, "busy.spin.example")  # holds the attacker's engine for 1 s
    for i in range(5):
        sock = client_from(ATTACKER, h.ORIGIN_A, 80)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: r{i}.spin.example\r\n\r\n".encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
    for i in range(5):
        record = proxy.wait_record(lambda r, i=i: r.get("hostname") == f"r{i}.spin.example")
        # Never decided: the audit line says REJECT (nothing was forwarded), with no reason.
        assert record["decision"] == "REJECT" and not record["reason"], record
        assert "client closed" in record["error"], record
    # Were they still queued, this would wait about 5 x 1.25 s behind them.
    answer, seconds = tls_from(ATTACKER, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    assert seconds < 2 * BOUND, f"waited {seconds:.2f} s"
    assert "r0.spin.example" not in "".join(
        line for line in proxy.log_text().splitlines() if "timeout" in line
    ), "a reset connection was evaluated"
