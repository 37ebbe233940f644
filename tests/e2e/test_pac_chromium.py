"""End to end: where PAC implementations disagree, the proxy answers as Chromium does and
says so in its log (isInNetEx across address families, no getClientVersion, no
FindProxyForURLEx)."""

from __future__ import annotations

import socket

import pytest

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import pac_config, wait_script
from tests.e2e.test_transparent_proxy import is_tls_access_denied

pytestmark = pytest.mark.e2e


def echo_passes(ip: str) -> bool:
    """A connection to the echo port (no name: the PAC sees the IP) reaches the origin."""
    with h.client_socket(ip, h.ECHO_PORT) as sock:
        sock.sendall(b"pac")
        sock.shutdown(socket.SHUT_WR)
        return h.recv_all(sock) == b"pacBYE"


def test_chromium_answers_for_isinnetex_and_getclientversion(start_proxy) -> None:
    script = (
        "function FindProxyForURL(url, host) {\n"
        f'  if (host == "{h.ORIGIN_B}")\n'
        '    return typeof getClientVersion == "function"'
        '      ? "PROXY reject.docker.internal:1" : "DIRECT";\n'
        '  if (isInNetEx(host, "::/0")) return "DIRECT";\n'
        '  return "PROXY reject.docker.internal:2";\n'
        "}\n"
    )
    proxy = start_proxy(pac_config(embedded=script))
    wait_script(proxy)
    # Chromium defines no getClientVersion (pacparser and WinHTTP do).
    assert echo_passes(h.ORIGIN_B)
    # Chromium compares an IPv4 address with an IPv6 prefix as ::ffff:a.b.c.d: "::/0"
    # matches it (pacparser would say no, and the rule after it would REJECT).
    assert echo_passes(h.ORIGIN_C)
    for ip in (h.ORIGIN_B, h.ORIGIN_C):
        record = proxy.wait_record(lambda r, ip=ip: r.get("dst") == f"{ip}:{h.ECHO_PORT}")
        assert record["decision"] == "DIRECT", record
    # ...and the start-up log says so, as pac-eval --lint does.
    log = proxy.log_text()
    assert "PAC lint: source=embeddedPac line 4: prefix-family" in log
    assert "also matches every IPv4 address" in log


def test_a_pac_with_only_findproxyforurlex_fails_closed(start_proxy) -> None:
    script = 'function FindProxyForURLEx(url, host) { return "DIRECT"; }'
    proxy = start_proxy(pac_config(embedded=script))
    h.wait_for(lambda: "PAC failed" in proxy.log_text(), what="the PAC to be refused")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert record["decision"] == "REJECT"
    assert "PAC unavailable" in record["reason"]
    assert "FindProxyForURL() is undefined" in record["reason"]
    assert "rename it to 'FindProxyForURL'" in proxy.log_text()
