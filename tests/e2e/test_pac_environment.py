"""End to end: what a PAC sees of its environment, where the PAC comes from, and the block
sentinel in the spellings a PAC author may produce."""

from __future__ import annotations

import socket

import pytest

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import pac_config, wait_script
from tests.e2e.test_transparent_proxy import is_tls_access_denied

pytestmark = pytest.mark.e2e


def tls_probe_from(source: str, ip: str, port: int, server_name: str) -> bytes:
    """`h.tls_probe`, from a chosen source address (the PAC's myIpAddress())."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, h.CLIENT_MARK)
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((ip, port))
        sock.sendall(h.client_hello(server_name))
        return h.recv_all(sock)


def test_my_ip_address_of_an_ipv6_client(start_proxy, origins) -> None:
    """An IPv6 client's myIpAddress() is its own address (it was 127.0.0.1): the PAC lets
    one source through and blocks the other, and the decision cache keeps them apart."""
    script = (
        "function FindProxyForURL(url, host) {"
        f' if (myIpAddress() == "{h.ORIGIN_V6_EVIL}"'
        f' && myIpAddressEx() == "{h.ORIGIN_V6_EVIL}") return "DIRECT";'
        ' return "PROXY reject.docker.internal:1"; }'
    )
    proxy = start_proxy(pac_config(embedded=script), "--workers", "1")
    wait_script(proxy)
    answer = tls_probe_from(h.ORIGIN_V6_EVIL, h.ORIGIN_V6, 443, "v6.allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_V6}:443"
    before = origins.hits.count((h.ORIGIN_V6, 443))
    answer = tls_probe_from(h.ORIGIN_V6, h.ORIGIN_V6, 443, "v6.allowed.example")
    assert is_tls_access_denied(answer)
    assert origins.hits.count((h.ORIGIN_V6, 443)) == before
    record = proxy.wait_record(
        lambda r: r.get("hostname") == "v6.allowed.example" and r.get("decision") == "REJECT"
    )
    assert "reject.docker.internal" in record["reason"]
