"""End to end: the real proxy under real iptables REDIRECT, with real origins and upstreams."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from tests.e2e import harness as h

pytestmark = pytest.mark.e2e


def manual(exclude: str = "", http: str = "", https: str = "", ports: str = "*") -> dict:
    return {
        "configurationFileVersion": 2,
        "containersProxy": {
            "locked": True,
            "mode": "manual",
            "http": http,
            "https": https,
            "exclude": exclude,
            "transparentPorts": ports,
        },
    }


ALLOW_INTERNAL = manual(
    exclude="allowed.example, rr.example, nores.example, 203.0.113.12/32, 2001:db8::10"
)


def is_tls_access_denied(answer: bytes) -> bool:
    """A fatal TLS alert record carrying access_denied (49)."""
    return len(answer) == 7 and answer[0] == 0x15 and answer[5:] == b"\x02\x31"


def reset_or_closed(ip: str, port: int, payload: bytes = b"hello\n") -> bytes:
    """What comes back; a reset (even one that beats connect() returning) reads as b""."""
    try:
        sock = h.client_socket(ip, port, timeout=5)
    except ConnectionResetError:
        return b""
    with sock:
        try:
            sock.sendall(payload)
        except OSError:
            return b""
        return h.recv_all(sock)


# --------------------------------------------------------------------------- DIRECT by exclude


def test_exclude_by_sni_goes_direct(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    answer = h.tls_probe(h.ORIGIN_A, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert record["decision"] == "DIRECT"
    assert record["route"] == "DIRECT"
    assert "allowed.example" in record["reason"]
    assert record["bytes_down"] == len(answer)


def test_name_lookups_have_many_threads(start_proxy) -> None:
    """A lookup blocks a thread until the resolver answers: libuv's default pool of 4 would
    let a client with a few never-answered names hold up every other connection's lookup."""
    from proxy.cli import LOOKUP_THREADS

    proxy = start_proxy(ALLOW_INTERNAL, "--workers", "1")
    assert proxy.proc is not None
    answer = h.http_get(h.ORIGIN_A, 80, "allowed.example")  # resolved by the proxy
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:80"
    threads = len(os.listdir(f"/proc/{proxy.proc.pid}/task"))
    assert threads > LOOKUP_THREADS, threads


def test_exclude_by_host_header_goes_direct(start_proxy) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    answer = h.http_get(h.ORIGIN_A, 80, "Allowed.Example.")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:80"
    assert b'"host": "Allowed.Example."' in answer, "the peeked bytes are forwarded unchanged"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:80")
    assert record["hostname"] == "allowed.example"


def test_exclude_by_cidr_on_other_port_and_half_close(start_proxy, relay) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, *relay)
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"ping-1 ")
        sock.sendall(b"ping-2")
        sock.shutdown(socket.SHUT_WR)  # half-close: the echo server answers only after EOF
        assert h.recv_all(sock) == b"ping-1 ping-2BYE"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:{h.ECHO_PORT}")
    assert record["decision"] == "DIRECT"
    assert "203.0.113.12/32" in record["reason"]
    assert record["bytes_up"] == 13 and record["bytes_down"] == 16


def test_ipv6_direct_and_reject(start_proxy, origins) -> None:
    start_proxy(ALLOW_INTERNAL)
    answer = h.tls_probe(h.ORIGIN_V6, 443, "v6.allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_V6}:443"
    with h.client_socket(h.ORIGIN_V6, h.ECHO_PORT) as sock:  # excluded by address
        sock.sendall(b"six")
        sock.shutdown(socket.SHUT_WR)
        assert h.recv_all(sock) == b"sixBYE"
    before = origins.hits.count((h.ORIGIN_V6_EVIL, 443))
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_V6_EVIL, 443, "evil.example"))
    assert origins.hits.count((h.ORIGIN_V6_EVIL, 443)) == before


# --------------------------------------------------------------------------- REJECT


def test_reject_http_gets_403_with_reason(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    answer = h.http_get(h.ORIGIN_EVIL, 80, "evil.example")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"Connections to evil.example are forbidden by policy: " in answer
    assert (h.ORIGIN_EVIL, 80) not in origins.hits
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and record["route"] is None


def test_reject_tls_gets_access_denied_alert(start_proxy, origins) -> None:
    start_proxy(ALLOW_INTERNAL)
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))
    assert (h.ORIGIN_EVIL, 443) not in origins.hits


def test_reject_other_protocol_is_reset(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    assert reset_or_closed(h.ORIGIN_EVIL, 8080) == b""
    assert (h.ORIGIN_EVIL, 8080) not in origins.hits
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_EVIL}:8080")
    assert record["decision"] == "REJECT"


def test_default_policy_blocks_everything(start_proxy, origins) -> None:
    start_proxy(None)
    assert h.http_get(h.ORIGIN_A, 80, "allowed.example").startswith(b"HTTP/1.1 403 ")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
    assert reset_or_closed(h.ORIGIN_A, h.ECHO_PORT) == b""


# --------------------------------------------------------------------------- SNI/Host spoofing


def test_sni_spoofing_never_reaches_the_claimed_ip(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    before = origins.hits.count((h.ORIGIN_EVIL, 443))
    answer = h.tls_probe(h.ORIGIN_EVIL, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443", "connected to the name's address"
    assert origins.hits.count((h.ORIGIN_EVIL, 443)) == before
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_EVIL}:443")
    assert record["route"].startswith(f"DIRECT {h.ORIGIN_A}")


def test_host_spoofing_never_reaches_the_claimed_ip(start_proxy, origins) -> None:
    start_proxy(ALLOW_INTERNAL)
    before = origins.hits.count((h.ORIGIN_EVIL, 80))
    answer = h.http_get(h.ORIGIN_EVIL, 80, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:80"
    assert origins.hits.count((h.ORIGIN_EVIL, 80)) == before


def test_round_robin_names_keep_the_original_ip(start_proxy) -> None:
    start_proxy(ALLOW_INTERNAL)
    for ip in (h.ORIGIN_B, h.ORIGIN_C):
        assert h.origin_of(h.tls_probe(ip, 443, "rr.example")) == f"{ip}:443"


def test_allowed_name_that_does_not_resolve_is_rejected(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    before = origins.hits.count((h.ORIGIN_EVIL, 443))
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "nores.example"))
    assert origins.hits.count((h.ORIGIN_EVIL, 443)) == before
    record = proxy.wait_record(lambda r: r.get("hostname") == "nores.example")
    assert record["decision"] == "REJECT"
    assert "does not resolve" in (record["error"] or "")


def test_an_excluded_name_never_leads_to_the_proxy_hosts_loopback(start_proxy, origins) -> None:
    """Docker's example excludes `localhost`: a container naming it while dialling any
    address must not reach a service on the proxy's own loopback."""
    proxy = start_proxy(manual(exclude="localhost, allowed.example"))
    hits: list[str] = []

    def serve(local: socket.socket) -> None:
        local.settimeout(5)
        try:
            conn, peer = local.accept()
        except OSError:
            return
        with conn:
            hits.append(peer[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nLOOPBACK")

    with socket.create_server(("127.0.0.1", 80)) as local:
        server = threading.Thread(target=serve, args=(local,), daemon=True)
        server.start()
        answer = h.http_get(h.ORIGIN_EVIL, 80, "localhost")
        local.shutdown(socket.SHUT_RDWR)
        server.join(5)
    assert not hits, f"the proxy connected to its own loopback: {answer[:80]!r}"
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]
    record = proxy.wait_record(lambda r: r.get("hostname") == "localhost")
    assert record["decision"] == "REJECT"
    assert "proxy host" in (record["error"] or "")


@pytest.mark.parametrize(
    "bad_host",
    [
        "allowed.example\x00.evil",
        "-allowed.example",
        "a" * 64 + ".allowed.example",
        "allowed..example",
    ],
)
def test_names_failing_canonicalisation_are_decided_on_the_ip(start_proxy, origins, bad_host):
    proxy = start_proxy(ALLOW_INTERNAL)
    answer = h.http_get(h.ORIGIN_EVIL, 80, bad_host)
    assert answer.startswith(b"HTTP/1.1 403 "), "decided on the IP, which is not allowed"
    assert f"Connections to {h.ORIGIN_EVIL} ".encode() in answer
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_EVIL}:80")
    assert record["hostname"] is None


def test_duplicate_host_headers_are_not_trusted(start_proxy, origins) -> None:
    start_proxy(ALLOW_INTERNAL)
    with h.client_socket(h.ORIGIN_EVIL, 80) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: allowed.example\r\nHost: allowed.example\r\n\r\n")
        assert h.recv_all(sock).startswith(b"HTTP/1.1 403 ")


# --------------------------------------------------------------------------- upstream proxies


def test_http_connect_upstream_carries_the_name(start_proxy, upstreams, relay) -> None:
    up = f"http://127.0.0.1:{upstreams.http_port}"
    proxy = start_proxy(manual(http=up, https=up), *relay)
    # The client connects to B but names allowed.example: the upstream resolves the name.
    answer = h.tls_probe(h.ORIGIN_B, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_B}:443")
    assert record["route"] == f"PROXY 127.0.0.1:{upstreams.http_port}"
    # Port 80 uses the `http` proxy, also through CONNECT.
    assert h.origin_of(h.http_get(h.ORIGIN_C, 80, None)) == f"{h.ORIGIN_C}:80"


def test_socks5_upstream_carries_the_name(start_proxy, upstreams, relay) -> None:
    up = f"socks5://127.0.0.1:{upstreams.socks_port}"
    proxy = start_proxy(manual(http=up, https=up), *relay)
    answer = h.tls_probe(h.ORIGIN_B, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    with h.client_socket(h.ORIGIN_C, h.BULK_PORT) as sock:  # IP only on other ports
        sock.sendall(b"DOWN 1000000\n")
        assert len(h.recv_all(sock)) == 1_000_000
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:{h.BULK_PORT}")
    assert record["route"] == f"SOCKS5 127.0.0.1:{upstreams.socks_port}"


def test_refused_upstream_closes_the_client_within_a_second(start_proxy) -> None:
    dead = h.free_port()
    proxy = start_proxy(manual(https=f"http://127.0.0.1:{dead}"))
    started = time.monotonic()
    answer = reset_or_closed(h.ORIGIN_A, 8080)
    assert time.monotonic() - started < 1.0
    assert h.origin_of(answer) is None
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:8080")
    assert "refused" in record["error"].lower()


def test_blackholed_upstream_gives_up_at_the_connect_timeout(start_proxy) -> None:
    proxy = start_proxy(manual(https=f"http://{h.ORIGIN_BLACKHOLE}:3128"), "--connect-timeout", "1")
    started = time.monotonic()
    answer = reset_or_closed(h.ORIGIN_A, 8080)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0
    assert h.origin_of(answer) is None
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:8080")
    assert "timed out" in record["error"]


# --------------------------------------------------------------------------- relay


MIB = 1 << 20


def test_100_mib_each_way_intact(start_proxy, relay) -> None:
    start_proxy(ALLOW_INTERNAL, *relay)
    size = 100 * MIB
    with h.client_socket(h.ORIGIN_C, h.BULK_PORT, timeout=60) as sock:
        sock.sendall(b"UP\n")
        for chunk in h.pattern_chunks(size):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        assert h.recv_all(sock).decode() == h.pattern_digest(size)
    with h.client_socket(h.ORIGIN_C, h.BULK_PORT, timeout=60) as sock:
        sock.sendall(f"DOWN {size}\n".encode())
        assert h.recv_digest(sock) == (size, h.pattern_digest(size))


def test_a_client_that_does_not_read_holds_the_origin_back(start_proxy, relay) -> None:
    """Backpressure end to end: the origin sends 200 MiB, the client reads nothing for a
    while. The proxy's memory stays bounded (it stops reading from the origin), and once
    the client reads, every byte arrives intact."""
    proxy = start_proxy(ALLOW_INTERNAL, "--workers", "1", *relay)
    assert proxy.proc is not None
    pid = proxy.proc.pid
    pipes_before = h.pipe_fds(pid)
    size = 200 * MIB
    with h.client_socket(h.ORIGIN_C, h.BULK_PORT, timeout=60) as sock:
        sock.sendall(f"DOWN {size}\n".encode())
        # The behaviour under test is a client that reads nothing for a while: these sleeps
        # are that while. Robust to a slow machine: however far the transfer got, a correct
        # proxy's memory stays within its buffers; only unbounded buffering fails the bound.
        time.sleep(0.5)
        rss_before = h.rss_kib(pid)
        time.sleep(1.5)  # the client reads nothing: socket buffers and the relay's fill up
        growth = h.rss_kib(pid) - rss_before
        assert growth < 16 * 1024, f"the proxy grew {growth} KiB while the client read nothing"
        spliced = h.pipe_fds(pid) - pipes_before
        assert spliced == (4 if relay else 0), "two pipes per spliced connection, none else"
        assert h.recv_digest(sock) == (size, h.pattern_digest(size))
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:{h.BULK_PORT}")
    assert record["bytes_down"] == size and record["bytes_up"] == len(f"DOWN {size}\n")
    h.wait_for(lambda: h.pipe_fds(pid) == pipes_before, what="the pipes to be closed")


def test_connection_not_redirected_is_refused(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    with sock:
        # On loopback the handshake completes in the kernel, and the proxy's reset may land
        # before `connect()` has even returned, or before the request is sent: either way
        # the connection ends with no byte of data.
        try:
            sock.connect(("127.0.0.1", proxy.port))
        except ConnectionResetError:
            pass
        else:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: allowed.example\r\n\r\n")
            assert h.recv_all(sock) == b""
    record = proxy.wait_record(lambda r: "not redirected" in (r.get("error") or ""))
    assert record["route"] is None
    assert record["decision"] == "REJECT"


def _refused() -> bool:
    try:
        h.client_socket(h.ORIGIN_C, h.ECHO_PORT, timeout=2).close()
    except OSError:
        return True
    return False


def test_graceful_stop_drains_open_relays_and_refuses_new_ones(start_proxy, relay) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, *relay)
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"before ")
        assert sock.recv(100) == b"before "
        proxy.signal(signal.SIGTERM)
        # Each worker logs this line, then closes its listener in the same step.
        h.wait_for(
            lambda: proxy.log_text().count("stopping: no new connections") >= proxy.workers,
            what="every worker to stop accepting",
        )
        h.wait_for(_refused, timeout=5, what="a new connection to be refused")
        sock.sendall(b"after")
        assert sock.recv(100) == b"after"
        sock.shutdown(socket.SHUT_WR)
        assert h.recv_all(sock) == b"BYE"
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0


def test_relays_open_at_the_drain_timeout_are_cut(start_proxy, relay) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, "--drain-timeout", "0.5", *relay)
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"held")
        assert sock.recv(100) == b"held"
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert h.recv_all(sock) == b"", "cut, not answered"
        assert time.monotonic() - started < 5
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0
    record = proxy.wait_record(lambda r: "drain timeout" in (r.get("error") or ""))
    assert record["bytes_up"] == 4 and record["bytes_down"] == 4
