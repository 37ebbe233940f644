"""End to end: TLS and authenticated upstreams, connection limits, timeouts, dual stack."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness as h
from tests.e2e.test_transparent_proxy import ALLOW_INTERNAL, manual, reset_or_closed

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_front(upstreams: h.Upstreams) -> Iterator[h.TlsFront]:
    front = h.TlsFront(backend_port=upstreams.http_port).start()
    yield front
    front.stop()


def test_https_upstream_is_verified_against_the_ca_bundle(start_proxy, tls_front, relay) -> None:
    """Under --splice too: a TLS upstream keeps the default relay (Python decrypts it)."""
    config = manual(https=f"https://localhost:{tls_front.port}")
    proxy = start_proxy(config, "--ca-bundle", str(tls_front.cert), *relay)
    answer = h.tls_probe(h.ORIGIN_B, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443", "CONNECT by name inside TLS"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_B}:443")
    assert record["route"] == f"HTTPS localhost:{tls_front.port}"


def test_https_upstream_with_an_unknown_certificate_is_not_used(start_proxy, tls_front) -> None:
    proxy = start_proxy(manual(https=f"https://localhost:{tls_front.port}"))
    assert h.origin_of(reset_or_closed(h.ORIGIN_A, 8080)) is None
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:8080")
    assert "certificate" in record["error"].lower()


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_upstream_credentials_are_sent_and_never_logged(start_proxy, upstreams, kind) -> None:
    port = upstreams.http_auth_port if kind == "http" else upstreams.socks_auth_port
    good = f"{kind}://{h.UPSTREAM_USER}:{h.UPSTREAM_PASSWORD}@127.0.0.1:{port}"
    proxy = start_proxy(manual(http=good, https=good))
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    assert h.UPSTREAM_PASSWORD not in proxy.log_text()
    bad = f"{kind}://{h.UPSTREAM_USER}:wrong@127.0.0.1:{port}"
    proxy = start_proxy(manual(https=bad))
    assert h.origin_of(reset_or_closed(h.ORIGIN_A, 8080)) is None
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:8080")
    assert record["error"], "the upstream's refusal is logged"
    # tinyproxy answers 401 where RFC 9110 says 407; either way the status is in the log.
    expected = "answered connect with 40" if kind == "http" else "auth"
    assert expected in record["error"].lower()
    assert "wrong" not in proxy.log_text()


def test_over_max_connections_is_refused_cleanly(start_proxy, relay) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, "--workers", "1", "--max-connections", "2", *relay)
    held = [h.client_socket(h.ORIGIN_C, h.ECHO_PORT) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
        assert reset_or_closed(h.ORIGIN_C, h.ECHO_PORT) == b""
        proxy.wait_record(lambda r: "max-connections" in (r.get("error") or ""))
        held[0].sendall(b"still")
        assert held[0].recv(10) == b"still", "open relays are not disturbed"
    finally:
        for sock in held:
            sock.close()
    # Once they close, new connections are accepted again.
    proxy.wait_record(lambda r: r.get("bytes_up") == 6)
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"again")
        assert sock.recv(10) == b"again"


def test_idle_relays_are_closed(start_proxy, relay) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, "--idle-timeout", "1", *relay)
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"x")
        assert sock.recv(10) == b"x"
        started = time.monotonic()
        assert h.recv_all(sock) in (b"", b"BYE")
        assert time.monotonic() - started < 4
    record = proxy.wait_record(lambda r: "idle" in (r.get("error") or ""))
    assert record["bytes_up"] == 1


def test_silent_client_on_a_sniffed_port_is_decided_on_the_ip(start_proxy, origins) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, "--peek-timeout", "0.3")
    before = origins.hits.count((h.ORIGIN_C, 80))
    with h.client_socket(h.ORIGIN_C, 80) as sock:  # excluded by CIDR
        # Silent until the peek ended and the proxy connected to the origin on the IP alone
        # (the origin counts the connection): only then does the client speak.
        h.wait_for(
            lambda: origins.hits.count((h.ORIGIN_C, 80)) > before,
            what="the proxy's connection to the origin after the peek timeout",
        )
        sock.sendall(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert h.origin_of(h.recv_all(sock)) == f"{h.ORIGIN_C}:80"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:80")
    assert record["hostname"] is None and record["decision"] == "DIRECT"


def test_hostile_client_hello_flood_is_decided_on_the_ip(start_proxy, origins) -> None:
    start_proxy(ALLOW_INTERNAL)
    before = origins.hits.count((h.ORIGIN_EVIL, 443))
    header = b"\x16\x03\x01\x40\x00" + b"\x01\x00\xff\xff"  # lengths that never complete
    answer = reset_or_closed(h.ORIGIN_EVIL, 443, header + b"\x00" * 70000)
    assert answer in (b"", b"\x15\x03\x01\x00\x02\x02\x31", b"\x15\x03\x03\x00\x02\x02\x31")
    assert origins.hits.count((h.ORIGIN_EVIL, 443)) == before


def _read_by_the_proxy(proxy: h.ProxyProcess, sock: socket.socket, timeout: float = 5) -> None:
    """Wait until the proxy has read everything `sock` sent (its socket's receive queue is
    empty), so that each send reaches it as a read of its own."""
    port = sock.getsockname()[1]
    deadline = time.monotonic() + timeout
    while h.unread_bytes(proxy.port).get(port, 1) != 0:
        assert time.monotonic() < deadline, "the proxy did not read what was sent"
        time.sleep(0.002)


@pytest.mark.parametrize("record", [40, 100, 160])
def test_a_hello_over_several_records_in_small_segments_is_decided_at_its_end(
    start_proxy, record: int
) -> None:
    """A ClientHello cut into several TLS records and sent in small segments, each read by
    the proxy on its own: it is decided when its last byte arrives, not at --peek-timeout."""
    proxy = start_proxy(ALLOW_INTERNAL, "--peek-timeout", "5")
    hello = h.client_hello("allowed.example")
    message, pos = b"", 0
    while pos < len(hello):  # the handshake message, out of its (one) record
        length = int.from_bytes(hello[pos + 3 : pos + 5], "big")
        message += hello[pos + 5 : pos + 5 + length]
        pos += 5 + length
    stream = b"".join(
        b"\x16\x03\x01" + len(message[i : i + record]).to_bytes(2, "big") + message[i : i + record]
        for i in range(0, len(message), record)
    )
    # Four records or more: 15 stream bytes or more past where one record would end, more
    # than a segment, so no segment but the last brings the hello's end.
    assert stream.count(b"\x16\x03\x01") >= 4
    with h.client_socket(h.ORIGIN_A, 443) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        segments = [stream[i : i + 8] for i in range(0, len(stream), 8)]
        for segment in segments[:-1]:
            sock.sendall(segment)
            _read_by_the_proxy(proxy, sock)
        sent = time.monotonic()
        sock.sendall(segments[-1])
        answer = h.recv_all(sock)
        waited = time.monotonic() - sent
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    assert waited < 1.0, f"answered {waited:.2f}s after the hello's last byte (peek timeout 5s)"
    audit = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:443")
    assert audit["hostname"] == "allowed.example"


def _to_the_silent_host(port: int = 9999) -> socket.socket:
    """A client of the silent host (whose incoming packets are dropped): from 127.0.0.1, so
    that only the proxy's own connection to it goes unanswered, not the client's."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, h.CLIENT_MARK)
    sock.settimeout(10)
    sock.bind(("127.0.0.1", 0))
    sock.connect((h.ORIGIN_BLACKHOLE, port))
    return sock


def test_connections_waiting_for_their_route_hold_little_memory(start_proxy) -> None:
    """300 clients push 256 KiB each at once to a DIRECT destination that drops SYNs: while
    the proxy waits for the connects, each costs its worker a few KiB, not what it sent."""
    config = manual(exclude=f"{h.ORIGIN_BLACKHOLE}/32")
    proxy = start_proxy(config, "--workers", "1", "--connect-timeout", "60")
    assert proxy.proc is not None
    pid = proxy.proc.pid
    # Warm up: the first connections allocate what every later one reuses (a peek and a
    # rejection, and connects to the silent host, which wait for --connect-timeout).
    for _ in range(5):
        assert b" 403 " in h.http_get(h.ORIGIN_A, 80, "other.example")
        with _to_the_silent_host() as sock:
            sock.sendall(b"x" * 1000)
            _read_by_the_proxy(proxy, sock)
    h.wait_for(lambda: len(proxy.records()) == 5, what="the rejected warm-ups to end")
    before = h.rss_kib(pid)
    count, payload = 300, b"\x00" * (256 * 1024)
    clients: list[socket.socket] = []
    sent: dict[int, int] = {}
    try:
        for _ in range(count):
            sock = _to_the_silent_host()
            sock.setblocking(False)
            total = 0
            with contextlib.suppress(BlockingIOError):
                while total < len(payload):
                    total += sock.send(payload[total:])
            clients.append(sock)
            sent[sock.getsockname()[1]] = total

        def all_read_once() -> bool:
            unread = h.unread_bytes(proxy.port)
            return all(unread.get(port, total) < total for port, total in sent.items())

        h.wait_for(all_read_once, timeout=30, what="the proxy to read from every client")
        growth = h.rss_kib(pid) - before
        pushed = sum(sent.values()) // count // 1024
        per_connection = growth / count
        assert per_connection < 32, (
            f"{per_connection:.1f} KiB per waiting connection (each pushed {pushed} KiB)"
        )
        assert len(proxy.records()) == 5, "all are still waiting for their connects"
    finally:
        for sock in clients:
            sock.close()


def test_dual_stack_listener_takes_ipv4_clients(start_proxy) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, listen=("[::]",))
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    assert h.origin_of(h.tls_probe(h.ORIGIN_V6, 443, "v6.allowed.example")) == (
        f"{h.ORIGIN_V6}:443"
    )
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:443")
    assert record["client"].startswith("203.0.113.") or record["client"].startswith("127.")


def test_text_log_format_has_one_line_per_connection(start_proxy) -> None:
    proxy = start_proxy(ALLOW_INTERNAL, "--log-format", "text")
    h.http_get(h.ORIGIN_A, 80, "allowed.example")
    h.wait_for(lambda: " conn " in proxy.log_text(), what="the connection's log line")
    lines = [line for line in proxy.log_text().splitlines() if " conn " in line]
    assert len(lines) == 1
    assert "hostname=allowed.example" in lines[0] and "decision=DIRECT" in lines[0]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    """Live `proxy.cli` processes whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        stat = _read(f"/proc/{entry}/stat") if entry.isdigit() else ""
        parent = int(stat.rsplit(")", 1)[1].split()[1]) if stat else 0
        if parent == pid and "proxy.cli" in _read(f"/proc/{entry}/cmdline"):
            out.append(int(entry))
    return out


def test_a_dead_worker_is_restarted_and_a_dead_supervisor_stops_the_workers(start_proxy):
    proxy = start_proxy(ALLOW_INTERNAL, "--workers", "2")
    assert proxy.proc is not None
    listening = lambda: proxy.log_text().count("listening on 127.0.0.1")  # noqa: E731
    h.wait_for(lambda: listening() == 2, what="two workers")
    os.kill(_children(proxy.proc.pid)[0], signal.SIGKILL)
    h.wait_for(lambda: "restarting it" in proxy.log_text(), what="the restart")
    h.wait_for(lambda: len(_children(proxy.proc.pid)) == 2, what="the replacement worker")
    h.wait_for(lambda: listening() == 3, what="the replacement to listen")
    for _ in range(4):
        answer = h.tls_probe(h.ORIGIN_A, 443, "allowed.example")
        assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    workers = _children(proxy.proc.pid)
    proxy.proc.kill()  # no chance to tell anyone
    h.wait_for(
        lambda: not any("proxy.cli" in _read(f"/proc/{pid}/cmdline") for pid in workers),
        what="the orphaned workers to stop",
    )
    with pytest.raises(ConnectionRefusedError):
        h.client_socket(h.ORIGIN_A, 8080, timeout=2)


SYSTEM = {"configurationFileVersion": 2, "containersProxy": {"mode": "system"}}


def test_system_mode_reads_the_proxy_environment(start_proxy, upstreams) -> None:
    """https_proxy (with credentials, never logged) for port 443, no_proxy's IP DIRECT."""
    proxy_url = (
        f"http://{h.UPSTREAM_USER}:{h.UPSTREAM_PASSWORD}@127.0.0.1:{upstreams.http_auth_port}"
    )
    env = {"https_proxy": proxy_url, "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": h.ORIGIN_C}
    proxy = start_proxy(SYSTEM, env=env)
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:443")
    assert record["route"] == f"PROXY 127.0.0.1:{upstreams.http_auth_port}"
    assert h.origin_of(h.tls_probe(h.ORIGIN_C, 443, None)) == f"{h.ORIGIN_C}:443"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:443")
    assert record["route"] == "DIRECT" and "no_proxy entry" in record["reason"]
    assert h.UPSTREAM_PASSWORD not in proxy.log_text()


@pytest.mark.parametrize("value", [" ", "ftp://127.0.0.1:21", "127.0.0.1"])
def test_system_mode_refuses_to_start_on_an_unusable_proxy_variable(start_proxy, value) -> None:
    """Blank, unknown scheme, no port: the proxy does not start (never DIRECT instead)."""
    with pytest.raises(RuntimeError, match="https_proxy"):
        start_proxy(SYSTEM, env={"https_proxy": value, "http_proxy": "http://127.0.0.1:9"})
