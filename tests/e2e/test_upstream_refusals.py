"""End to end: an upstream proxy that refuses a destination ends the connection as REJECT.

`PROXY corp:8080; DIRECT` is the most common corporate PAC, and the corporate proxy's
refusal is the policy: reading its 403 (or a SOCKS error reply) as "proxy down" sent the
refused destination DIRECT, and marked the proxy bad, so for --bad-proxy-ttl every other
client's connections went DIRECT too. Real upstreams: tinyproxy with a `Filter` (403 on
CONNECT for a name) and microsocks, whose own connections to one origin port are refused
by an owner-matched iptables rule while the proxy's DIRECT connection would get through.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import pac_config, wait_script
from tests.e2e.test_transparent_proxy import is_tls_access_denied

pytestmark = pytest.mark.e2e

#: An origin port (an ident server listens there) that only microsocks cannot reach.
SOCKS_REFUSED_PORT = 8080


@dataclass
class FilteringUpstreams:
    http_port: int
    socks_port: int


@pytest.fixture(scope="module")
def filtering(
    network: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilteringUpstreams]:
    """tinyproxy refusing `evil.example` (403 Filtered on CONNECT and GET), and microsocks
    run as nobody, whose connections to ORIGIN_A:8080 are refused with a TCP reset."""
    workdir: Path = tmp_path_factory.mktemp("filtering")
    workdir.chmod(0o755)
    filter_file = workdir / "filter"
    filter_file.write_text("^evil\\.example$\n")
    filter_file.chmod(0o644)
    http_port, socks_port = h.free_port(), h.free_port()
    conf = workdir / "tinyproxy.conf"
    conf.write_text(
        f"Port {http_port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nMaxClients 50\n"
        "LogLevel Warning\nUser nobody\nGroup nogroup\nDisableViaHeader Yes\n"
        f'Filter "{filter_file}"\nFilterType ere\nFilterDefaultDeny No\n'
    )
    conf.chmod(0o644)
    rule = (
        *("OUTPUT", "-p", "tcp", "-d", h.ORIGIN_A, "--dport", str(SOCKS_REFUSED_PORT)),
        *("-m", "owner", "--uid-owner", "nobody", "-j", "REJECT", "--reject-with", "tcp-reset"),
    )
    h.sh("iptables", "-I", *rule)
    procs = [
        subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)]),
        subprocess.Popen(
            [
                *("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
                *("microsocks", "-i", "127.0.0.1", "-p", str(socks_port)),
            ]
        ),
    ]
    try:
        h.wait_listening("127.0.0.1", http_port)
        h.wait_listening("127.0.0.1", socks_port)
        yield FilteringUpstreams(http_port, socks_port)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        h.sh("iptables", "-D", *rule, check=False)


def _embedded(result: str) -> dict:
    script = f'function FindProxyForURL(url, host) {{ return "{result}"; }}'
    return pac_config(embedded=script)


def test_a_filtering_proxy_refusal_is_a_reject_not_direct(start_proxy, origins, filtering):
    proxy_route = f"PROXY 127.0.0.1:{filtering.http_port}"
    proxy = start_proxy(_embedded(f"{proxy_route}; DIRECT"), "--workers", "1")
    wait_script(proxy)
    before = origins.hits.count((h.ORIGIN_EVIL, 443)) + origins.hits.count((h.ORIGIN_EVIL, 80))
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))
    answer = h.http_get(h.ORIGIN_EVIL, 80, "evil.example")
    assert answer.startswith(b"HTTP/1.1 403 ") and b"403 Filtered" in answer
    after = origins.hits.count((h.ORIGIN_EVIL, 443)) + origins.hits.count((h.ORIGIN_EVIL, 80))
    assert after == before, "the destination the upstream refused was reached DIRECT"
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and record["route"] == proxy_route
    assert "403 Filtered" in record["reason"] and "403 Filtered" in record["error"]
    assert "DIRECT" not in record["error"]
    # The proxy answered: it works, and the next client's allowed name still goes through it.
    answer = h.tls_probe(h.ORIGIN_A, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443"
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert record["route"] == proxy_route, "the refusing proxy was marked bad"


def test_a_static_proxy_refusal_is_a_reject(start_proxy, filtering) -> None:
    url = f"http://127.0.0.1:{filtering.http_port}"
    config = {
        "configurationFileVersion": 2,
        "containersProxy": {"mode": "manual", "http": url, "https": url, "transparentPorts": "*"},
    }
    proxy = start_proxy(config, "--workers", "1")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and "403 Filtered" in record["reason"]
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"


def test_a_socks5_refusal_is_a_reject_not_direct(start_proxy, origins, filtering) -> None:
    socks_route = f"SOCKS5 127.0.0.1:{filtering.socks_port}"
    proxy = start_proxy(_embedded(f"{socks_route}; DIRECT"), "--workers", "1")
    wait_script(proxy)
    before = origins.hits.count((h.ORIGIN_A, SOCKS_REFUSED_PORT))
    with h.client_socket(h.ORIGIN_A, SOCKS_REFUSED_PORT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert h.recv_all(sock) == b"", "a REJECT on a port with no name is a reset"
    assert origins.hits.count((h.ORIGIN_A, SOCKS_REFUSED_PORT)) == before, "reached DIRECT"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_A}:{SOCKS_REFUSED_PORT}")
    assert record["decision"] == "REJECT" and record["route"] == socks_route
    assert "0x05 connection refused" in record["reason"], json.dumps(record)
    assert "DIRECT" not in record["error"]
    # Not marked bad: the next connection still goes through microsocks.
    answer = h.http_get(h.ORIGIN_C, SOCKS_REFUSED_PORT, None)
    assert h.origin_of(answer) == f"{h.ORIGIN_C}:{SOCKS_REFUSED_PORT}"
    record = proxy.wait_record(lambda r: r.get("dst") == f"{h.ORIGIN_C}:{SOCKS_REFUSED_PORT}")
    assert record["route"] == socks_route, "the refusing SOCKS proxy was marked bad"
