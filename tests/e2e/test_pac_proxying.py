"""End to end: PAC-driven decisions, with the PAC served by a real HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e import harness as h
from tests.e2e.test_transparent_proxy import is_tls_access_denied

pytestmark = pytest.mark.e2e

FAST = ("--pac-refresh", "1", "--pac-retry-max", "1")


def pac_config(url: str | None = None, embedded: str | None = None) -> dict:
    section: dict = {"mode": "manual", "transparentPorts": "*"}
    if url is not None:
        section["pac"] = url
    if embedded is not None:
        section["embeddedPac"] = embedded
    return {"configurationFileVersion": 2, "containersProxy": section}


def corporate_pac(upstreams: h.Upstreams) -> str:
    return f"""
function FindProxyForURL(url, host) {{
  if (host == "allowed.example") return "DIRECT";
  if (host == "www.allowed.example") return "PROXY 127.0.0.1:{upstreams.http_port}";
  if (host == "rr.example") return "SOCKS5 127.0.0.1:{upstreams.socks_port}";
  if (host == "evil.example") return "PROXY reject.docker.internal:1234";
  if (host == "other.example")
    return "PROXY {h.ORIGIN_BLACKHOLE}:3128; PROXY 127.0.0.1:{upstreams.http_port}";
  if (host == "loop.example") {{ while (true) {{}} }}
  if (isInNet(host, "{h.ORIGIN_C}", "255.255.255.255")) return "DIRECT";
  return "PROXY reject.docker.internal:80";
}}
"""


def in_use(proxy: h.ProxyProcess) -> int:
    """How many times a worker swapped a script in."""
    return proxy.log_text().count("PAC script in use")


def wait_script(proxy: h.ProxyProcess, swaps: int = 1) -> None:
    """Wait until every worker swapped in its `swaps`-th script."""
    h.wait_for(lambda: in_use(proxy) >= swaps * proxy.workers, what="every worker's script")


@pytest.fixture
def pac_server() -> Iterator[h.PacServer]:
    server = h.PacServer()
    yield server
    server.close()


def test_pac_routes_direct_connect_socks_and_reject(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    proxy = start_proxy(pac_config(pac_server.url))
    wait_script(proxy)
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    # CONNECT and SOCKS5 carry the name: the upstream resolves it, whatever IP was dialled.
    answer = h.tls_probe(h.ORIGIN_C, 443, "www.allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    answer = h.tls_probe(h.ORIGIN_EVIL, 443, "rr.example")
    assert h.origin_of(answer) in (f"{h.ORIGIN_B}:443", f"{h.ORIGIN_C}:443")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))
    assert h.http_get(h.ORIGIN_EVIL, 80, "evil.example").startswith(b"HTTP/1.1 403 ")
    # No name on other ports: the PAC sees the IP.
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as sock:
        sock.sendall(b"pac")
        sock.shutdown(socket.SHUT_WR)
        assert h.recv_all(sock) == b"pacBYE"
    record = proxy.wait_record(lambda r: r.get("hostname") == "www.allowed.example")
    assert record["route"] == f"PROXY 127.0.0.1:{upstreams.http_port}"
    assert "PAC returned" in record["reason"]
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and "reject.docker.internal" in record["reason"]


def test_dead_first_proxy_is_skipped_after_it_failed(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    proxy = start_proxy(pac_config(pac_server.url), "--workers", "1", "--connect-timeout", "1.5")
    wait_script(proxy)
    started = time.monotonic()
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "other.example")) == f"{h.ORIGIN_B}:443"
    first = time.monotonic() - started
    started = time.monotonic()
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "other.example")) == f"{h.ORIGIN_B}:443"
    second = time.monotonic() - started
    assert first >= 1.4, "the first connection waited for the dead proxy"
    assert second < 1.0, "the second one tried the live proxy first"


def test_pac_server_down_up_changed_down(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    proxy = start_proxy(pac_config(pac_server.url), *FAST, "--workers", "1")
    # Down at start: everything PAC-decided is blocked, with the reason.
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert "PAC unavailable" in record["reason"]
    # Comes up: traffic flows without a restart.
    pac_server.up()
    h.wait_for(lambda: "PAC recovered, loaded" in proxy.log_text(), what="the PAC to load")
    wait_script(proxy)
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    # An open relay, then a changed script that blocks everything.
    with h.client_socket(h.ORIGIN_C, h.ECHO_PORT) as relay:
        relay.sendall(b"one ")
        assert relay.recv(10) == b"one "
        pac_server.script = (
            'function FindProxyForURL(u, h) { return "PROXY reject.docker.internal:1"; }'
        )
        wait_script(proxy, 2)
        assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
        relay.sendall(b"two")
        assert relay.recv(10) == b"two", "open connections are not cut by a new script"
    # Down again: blocked again, even under a script that would allow it.
    pac_server.script = corporate_pac(upstreams)
    wait_script(proxy, 3)
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    failures = proxy.log_text().count("PAC failed")
    pac_server.down()
    h.wait_for(lambda: proxy.log_text().count("PAC failed") > failures, what="a failed refresh")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))


def test_unchanged_pac_is_revalidated_with_304(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    proxy = start_proxy(pac_config(pac_server.url), *FAST)
    h.wait_for(lambda: 304 in pac_server.requests, what="a conditional refresh")
    h.wait_for(lambda: "PAC unchanged" in proxy.log_text(), what="the unchanged log line")
    assert pac_server.requests[0] == 200
    assert proxy.log_text().count("PAC loaded") == 1
    wait_script(proxy)
    assert in_use(proxy) == proxy.workers, "an unchanged script is not swapped in again"
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"


def test_one_download_serves_every_worker(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    proxy = start_proxy(pac_config(pac_server.url), "--workers", "2")
    wait_script(proxy)
    for _ in range(6):  # spread over both workers by SO_REUSEPORT
        assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == (f"{h.ORIGIN_A}:443")
    assert pac_server.requests == [200]


def test_endless_script_rejects_that_connection_only(start_proxy, upstreams, pac_server) -> None:
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    # A 3 s evaluation bound: a connection queued behind the endless one would wait that
    # long, far above what a loaded machine adds to a normal one.
    proxy = start_proxy(pac_config(pac_server.url), "--workers", "1", "--pac-eval-timeout", "3")
    wait_script(proxy)
    outcome: dict[str, object] = {}
    # The looping client's hello is sent before any other (the proxy has it first); its
    # answer is read on a thread while the others go through. It dials another local
    # address, so its source (the client) is another one: a client's own evaluations
    # beyond its share of the engines wait for each other.
    looping = h.client_socket(h.ORIGIN_EVIL, 443)
    looping.sendall(h.client_hello("loop.example"))
    sent = time.monotonic()

    def read_answer() -> None:
        with looping:
            outcome["answer"] = h.recv_all(looping)
        outcome["seconds"] = time.monotonic() - sent

    thread = threading.Thread(target=read_answer)
    thread.start()
    for _ in range(3):  # others keep flowing meanwhile
        started = time.monotonic()
        assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
        assert time.monotonic() - started < 2.0
    thread.join(10)
    assert is_tls_access_denied(outcome["answer"])  # type: ignore[arg-type]
    assert 3.0 <= outcome["seconds"] < 3.0 + 2.5  # type: ignore[operator]  # the bound, plus the restart
    record = proxy.wait_record(lambda r: r.get("hostname") == "loop.example")
    assert "timeout" in record["reason"]


@pytest.mark.parametrize(
    ("condition", "reaches"),
    [
        ('shExpMatch(url, "https://docs.docker.com:443/enterprise/security/*")', False),
        ('host == "docs.docker.com" && url.indexOf(":443") > 0', True),
    ],
)
def test_docker_documentation_example(start_proxy, condition: str, reaches: bool) -> None:
    script = (
        f"function FindProxyForURL(url, host) {{ if ({condition}) return 'DIRECT';"
        " return 'PROXY reject.docker.internal:1234'; }"
    )
    proxy = start_proxy(pac_config(embedded=script))
    wait_script(proxy)
    answer = h.tls_probe(h.ORIGIN_A, 443, "docs.docker.com")
    if reaches:
        assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    else:
        assert is_tls_access_denied(answer)


def test_pac_that_trusted_the_destination_ip_never_sends_the_name_elsewhere(
    start_proxy, origins
) -> None:
    """The PAC allows names that resolve to ORIGIN_C; it is told dnsResolve(host) is the
    address the container dialled. A client naming allowed.example (really ORIGIN_A) while
    dialling ORIGIN_C must not be connected to ORIGIN_A: the decision was about ORIGIN_C."""
    script = (
        "function FindProxyForURL(url, host) {"
        f' if (isInNet(dnsResolve(host), "{h.ORIGIN_C}", "255.255.255.255")) return "DIRECT";'
        ' return "PROXY reject.docker.internal:1"; }'
    )
    proxy = start_proxy(pac_config(embedded=script))
    wait_script(proxy)
    before = origins.hits.count((h.ORIGIN_A, 443))
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_C, 443, "allowed.example"))
    assert origins.hits.count((h.ORIGIN_A, 443)) == before
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert record["decision"] == "REJECT" and "not an address of" in record["error"]
    # A name whose addresses include the dialled IP (round robin) is connected there.
    assert h.origin_of(h.tls_probe(h.ORIGIN_C, 443, "rr.example")) == f"{h.ORIGIN_C}:443"


def test_pac_that_trusted_the_destination_ip_never_sends_the_name_to_a_proxy(
    start_proxy, origins, upstreams
) -> None:
    """The same rule for a proxy route: the PAC sends what resolves to ORIGIN_C through the
    upstream. A client naming evil.example (really ORIGIN_EVIL) while dialling ORIGIN_C must
    not get `CONNECT evil.example` sent to it: the decision was about ORIGIN_C."""
    script = (
        "function FindProxyForURL(url, host) {"
        f' if (isInNet(dnsResolve(host), "{h.ORIGIN_C}", "255.255.255.255"))'
        f'   return "PROXY 127.0.0.1:{upstreams.http_port}";'
        ' return "PROXY reject.docker.internal:1"; }'
    )
    proxy = start_proxy(pac_config(embedded=script))
    wait_script(proxy)
    before = origins.hits.count((h.ORIGIN_EVIL, 443))
    answer = h.tls_probe(h.ORIGIN_C, 443, "evil.example")
    assert origins.hits.count((h.ORIGIN_EVIL, 443)) == before, "the upstream reached evil"
    assert is_tls_access_denied(answer)
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and "not an address of" in record["error"]
    # A name whose addresses include the dialled IP still goes through, by name (the
    # upstream picks one of its addresses).
    reached = h.origin_of(h.tls_probe(h.ORIGIN_C, 443, "rr.example"))
    assert reached in (f"{h.ORIGIN_B}:443", f"{h.ORIGIN_C}:443")


def test_pac_download_carries_the_proxy_mark(start_proxy, upstreams, pac_server) -> None:
    """The download is the proxy's own traffic: marked, so redirect rules never loop it."""
    pac_server.script = corporate_pac(upstreams)
    pac_server.up()
    port = str(pac_server.port)
    marked = ("OUTPUT", "-p", "tcp", "--dport", port, "-m", "mark", "--mark", "0x77")
    unmarked = ("OUTPUT", "-p", "tcp", "--dport", port, "-m", "mark", "!", "--mark", "0x77")
    for rule in (marked, unmarked):
        h.sh("iptables", "-I", *rule)
    try:
        proxy = start_proxy(pac_config(pac_server.url), "--mark", "0x77")
        wait_script(proxy)
        counters = h.sh("iptables", "-L", "OUTPUT", "-v", "-x", "-n")
        rows = [line.split() for line in counters.splitlines() if f"dpt:{port}" in line]
        packets = {("!" in " ".join(row)): int(row[0]) for row in rows}
        assert packets[False] > 0, "the download's packets carry the mark"
        assert packets[True] == 0, "no unmarked packet went to the PAC server"
    finally:
        for rule in (marked, unmarked):
            h.sh("iptables", "-D", *rule, check=False)
