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


PATH_PAC = (
    "function FindProxyForURL(url, host) {"
    ' if (host == "allowed.example") return "DIRECT";'
    ' return "PROXY reject.docker.internal:1"; }'
)


def test_pac_given_as_a_plain_absolute_path(start_proxy, origins, tmp_path) -> None:
    """`"pac": "/path/proxy.pac"` is a file PAC (it was refused at start-up)."""
    path = tmp_path / "proxy.pac"
    path.write_text(PATH_PAC)
    path.chmod(0o644)
    proxy = start_proxy(pac_config(str(path)), "--workers", "1")
    wait_script(proxy)
    assert str(path) in proxy.log_text()  # the source is named in the "PAC loaded" line
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))


def test_plain_path_pac_has_the_file_url_permission_checks(start_proxy, tmp_path) -> None:
    path = tmp_path / "proxy.pac"
    path.write_text(PATH_PAC)
    path.chmod(0o664)  # group-writable: whoever is in the group could set the policy
    proxy = start_proxy(pac_config(str(path)), "--workers", "1")
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_A, 443, "allowed.example"))
    record = proxy.wait_record(lambda r: r.get("hostname") == "allowed.example")
    assert "PAC unavailable" in record["reason"]
    assert "writable by group or others" in record["reason"]


SENTINEL_SPELLINGS = [
    # reported: went DIRECT (a leading "." or "*." was read as another name) ...
    "PROXY .reject.docker.internal; DIRECT",
    "PROXY *.reject.docker.internal; DIRECT",
    # ... or became a route to an invalid host that failed, then DIRECT
    "PROXY reject.docker.internal-; DIRECT",
    "PROXY -reject.docker.internal; DIRECT",
    "PROXY reject.docker.internal._; DIRECT",
    # the same class
    "PROXY a.reject.docker.internal:1; DIRECT",
    "PROXY %72eject.docker.internal:1; DIRECT",
    "PROXY reject%2Edocker%2Einternal; DIRECT",
    "PROXY xn--rject-zwe.docker.internal:1; DIRECT",
]


def test_sentinel_spellings_block_end_to_end(start_proxy, origins) -> None:
    """Each spelling is returned for one client source address (myIpAddress()), for a name
    that DIRECT reaches: a spelling that is not read as the sentinel reaches the origin."""
    sources = [f"127.0.0.{10 + i}" for i in range(len(SENTINEL_SPELLINGS))]
    cases = "".join(
        f' if (myIpAddress() == "{ip}") return "{result}";'
        for ip, result in zip(sources, SENTINEL_SPELLINGS, strict=True)
    )
    script = f'function FindProxyForURL(url, host) {{{cases} return "DIRECT"; }}'
    proxy = start_proxy(pac_config(embedded=script), "--workers", "1")
    wait_script(proxy)
    answer = tls_probe_from("127.0.0.9", h.ORIGIN_A, 443, "allowed.example")
    assert h.origin_of(answer) == f"{h.ORIGIN_A}:443", "the control case goes DIRECT"
    before = origins.hits.count((h.ORIGIN_A, 443))
    for ip, result in zip(sources, SENTINEL_SPELLINGS, strict=True):
        answer = tls_probe_from(ip, h.ORIGIN_A, 443, "allowed.example")
        assert is_tls_access_denied(answer), result
        record = proxy.wait_record(lambda r, ip=ip: r.get("client", "").startswith(f"{ip}:"))
        assert record["decision"] == "REJECT", (result, record)
        assert "block sentinel" in record["reason"], (result, record)
    assert origins.hits.count((h.ORIGIN_A, 443)) == before, "a sentinel went DIRECT"


def test_static_proxy_naming_the_sentinel_blocks_end_to_end(start_proxy, origins) -> None:
    section = {
        "mode": "manual",
        "http": "http://reject.docker.internal:3128",
        "https": "http://reject.docker.internal:3128",
        "exclude": ["allowed.example"],
        "transparentPorts": "*",
    }
    proxy = start_proxy({"configurationFileVersion": 2, "containersProxy": section})
    assert "names the block sentinel" in proxy.log_text()
    assert h.origin_of(h.tls_probe(h.ORIGIN_A, 443, "allowed.example")) == f"{h.ORIGIN_A}:443"
    assert is_tls_access_denied(h.tls_probe(h.ORIGIN_EVIL, 443, "evil.example"))
    assert h.http_get(h.ORIGIN_EVIL, 80, "evil.example").startswith(b"HTTP/1.1 403 ")
    record = proxy.wait_record(lambda r: r.get("hostname") == "evil.example")
    assert record["decision"] == "REJECT" and "block sentinel" in record["reason"]
    assert not record.get("route"), "the sentinel was never dialled as a proxy"
