"""Policy.decide: the decision table, including the three examples of Docker's docs."""

from __future__ import annotations

import json
import time

import pytest

from pac.routes import DIRECT, Route
from rules.config import parse_config_text
from rules.model import Decision, Destination
from rules.policy import PAC_INACTIVE_REASON, Policy
from tests.unit.fakes import SyncDecider

# The three containersProxy examples of Docker's air-gapped containers documentation.
BLOCK_ALL = {
    "locked": True,
    "mode": "manual",
    "http": "",
    "https": "",
    "exclude": [],
    "transparentPorts": "*",
}
ALLOW_INTERNAL = {
    "locked": True,
    "mode": "manual",
    "http": "",
    "https": "",
    "exclude": ["internal.company.com", "10.0.0.0/8"],
    "transparentPorts": "80,443",
}
CORPORATE_PROXY = {
    "locked": True,
    "mode": "manual",
    "http": "http://corporate-proxy.company.com:8080",
    "https": "http://corporate-proxy.company.com:8080",
    "exclude": ["localhost", "*.company.local"],
    "transparentPorts": "*",
}
CORP = Route("PROXY", "corporate-proxy.company.com", 8080)


def policy(section: dict[str, object], environ: dict[str, str] | None = None) -> Policy:
    text = json.dumps({"configurationFileVersion": 2, "containersProxy": section})
    return Policy.from_config(parse_config_text(text, "t.json"), environ or {})


def decide(p: Policy, ip: str, port: int, name: str | None = None) -> Decision:
    decision = p.decide_now(Destination(ip=ip, port=port, hostname=name))
    assert decision is not None, "a static policy answers at once"
    return decision


# (ip, port, sniffed name, action, routes, reason, name_based)
BLOCK_ALL_TABLE = [
    (
        "93.184.216.34",
        443,
        "example.com",
        "REJECT",
        (),
        "no proxy configured for https: blocked",
        False,
    ),
    (
        "93.184.216.34",
        80,
        "example.com",
        "REJECT",
        (),
        "no proxy configured for http: blocked",
        False,
    ),
    ("93.184.216.34", 22, None, "REJECT", (), "no proxy configured for https: blocked", False),
    ("10.0.0.5", 5432, None, "REJECT", (), "no proxy configured for https: blocked", False),
    ("2001:db8::1", 443, None, "REJECT", (), "no proxy configured for https: blocked", False),
]

ALLOW_INTERNAL_TABLE = [
    (
        "10.1.2.3",
        443,
        None,
        "DIRECT",
        (DIRECT,),
        "exclude entry '10.0.0.0/8' matched ip '10.1.2.3'",
        False,
    ),
    (
        "::ffff:10.1.2.3",
        80,
        None,
        "DIRECT",
        (DIRECT,),
        "exclude entry '10.0.0.0/8' matched ip '10.1.2.3'",
        False,
    ),
    (
        "192.0.2.7",
        443,
        "internal.company.com",
        "DIRECT",
        (DIRECT,),
        "exclude entry 'internal.company.com' matched name 'internal.company.com'",
        True,
    ),
    (
        "192.0.2.7",
        443,
        "api.internal.company.com",
        "DIRECT",
        (DIRECT,),
        "exclude entry 'internal.company.com' matched name 'api.internal.company.com'",
        True,
    ),
    (
        "192.0.2.7",
        443,
        "company.com",
        "REJECT",
        (),
        "no proxy configured for https: blocked (no exclude entry matched)",
        False,
    ),
    (
        "192.0.2.7",
        443,
        "internal.company.com.evil.net",
        "REJECT",
        (),
        "no proxy configured for https: blocked (no exclude entry matched)",
        False,
    ),
    (
        "93.184.216.34",
        80,
        "example.com",
        "REJECT",
        (),
        "no proxy configured for http: blocked (no exclude entry matched)",
        False,
    ),
    # other ports are outside transparentPorts: DIRECT without policy, even to 10/8
    ("93.184.216.34", 22, None, "DIRECT", (DIRECT,), "port 22 not in transparentPorts", False),
    ("10.0.0.1", 8080, None, "DIRECT", (DIRECT,), "port 8080 not in transparentPorts", False),
]

CORPORATE_TABLE = [
    (
        "93.184.216.34",
        443,
        "example.com",
        "PROXY",
        (CORP,),
        "port 443 uses the https proxy PROXY corporate-proxy.company.com:8080"
        " (no exclude entry matched)",
        False,
    ),
    (
        "93.184.216.34",
        80,
        "example.com",
        "PROXY",
        (CORP,),
        "port 80 uses the http proxy PROXY corporate-proxy.company.com:8080"
        " (no exclude entry matched)",
        False,
    ),
    (
        "203.0.113.5",
        22,
        None,
        "PROXY",
        (CORP,),
        "port 22 uses the https proxy PROXY corporate-proxy.company.com:8080"
        " (no exclude entry matched)",
        False,
    ),
    (
        "127.0.0.1",
        80,
        "localhost",
        "DIRECT",
        (DIRECT,),
        "exclude entry 'localhost' matched name 'localhost'",
        True,
    ),
    (
        "172.16.0.4",
        443,
        "build.company.local",
        "DIRECT",
        (DIRECT,),
        "exclude entry '*.company.local' matched name 'build.company.local'",
        True,
    ),
    (
        "172.16.0.4",
        443,
        "company.local",
        "PROXY",
        (CORP,),
        "port 443 uses the https proxy PROXY corporate-proxy.company.com:8080"
        " (no exclude entry matched)",
        False,
    ),
]


@pytest.mark.parametrize(
    ("section", "row"),
    [(BLOCK_ALL, r) for r in BLOCK_ALL_TABLE]
    + [(ALLOW_INTERNAL, r) for r in ALLOW_INTERNAL_TABLE]
    + [(CORPORATE_PROXY, r) for r in CORPORATE_TABLE],
)
def test_docs_examples(section: dict[str, object], row: tuple) -> None:
    ip, port, name, action, routes, reason, name_based = row
    d = decide(policy(section), ip, port, name)
    assert (d.action, d.routes, d.reason, d.name_based) == (action, routes, reason, name_based)


def test_decision_carries_url_and_host() -> None:
    p = policy(CORPORATE_PROXY)
    d = decide(p, "93.184.216.34", 443, "example.com")
    assert (d.url, d.host) == ("https://example.com:443", "example.com")
    d = decide(p, "2001:db8::1", 8443)
    assert (d.url, d.host) == ("http://[2001:db8::1]:8443", "2001:db8::1")
    d = decide(p, "::ffff:192.0.2.1", 80)
    assert (d.url, d.host) == ("http://192.0.2.1:80", "192.0.2.1")


def test_to_json_shape() -> None:
    d = decide(policy(CORPORATE_PROXY), "93.184.216.34", 443, "example.com")
    assert d.to_json() == {
        "action": "PROXY",
        "routes": ["PROXY corporate-proxy.company.com:8080"],
        "url": "https://example.com:443",
        "host": "example.com",
        "reason": d.reason,
    }


def test_port_80_uses_http_every_other_port_https() -> None:
    p = policy({"http": "http://h80:3128", "https": "socks5://hs:1080", "transparentPorts": "*"})
    assert decide(p, "192.0.2.1", 80).routes == (Route("PROXY", "h80", 3128),)
    for port in (443, 8080, 22, 1):
        assert decide(p, "192.0.2.1", port).routes == (Route("SOCKS5", "hs", 1080),)


def test_only_one_proxy_configured() -> None:
    p = policy({"https": "https://tls-proxy:8443", "transparentPorts": "*"})
    assert decide(p, "192.0.2.1", 443).routes == (Route("HTTPS", "tls-proxy", 8443),)
    d = decide(p, "192.0.2.1", 80)
    assert (d.action, d.reason) == ("REJECT", "no proxy configured for http: blocked")


def test_credentials_travel_in_route_not_reason() -> None:
    p = policy({"https": "http://alice:s3cret@proxy:3128"})
    d = decide(p, "192.0.2.1", 443)
    assert d.routes[0].password == "s3cret"
    assert "s3cret" not in d.reason and "alice" not in d.reason
    assert "s3cret" not in json.dumps(d.to_json())


def test_ip_match_wins_over_name_match() -> None:
    """Both match: report the IP, which needs no name verification (name_based False)."""
    p = policy({"exclude": ["corp.example", "10.0.0.0/8"]})
    d = decide(p, "10.0.0.9", 443, "a.corp.example")
    assert (d.action, d.name_based) == ("DIRECT", False)
    assert d.reason == "exclude entry '10.0.0.0/8' matched ip '10.0.0.9'"


def test_ip_entries_match_the_original_ip_not_a_name() -> None:
    p = policy({"exclude": ["10.0.0.0/8"]})
    assert decide(p, "93.184.216.34", 443, "10.0.0.1").action == "REJECT"


def test_ipv6_exclude() -> None:
    p = policy({"exclude": ["2001:db8::/32", "fd00::1"]})
    assert decide(p, "2001:db8:5::1", 443).action == "DIRECT"
    assert decide(p, "fd00::1", 443).action == "DIRECT"
    assert decide(p, "fd00::2", 443).action == "REJECT"


def test_empty_transparent_ports_is_all_direct() -> None:
    p = policy({"transparentPorts": ""})
    d = decide(p, "93.184.216.34", 443, "example.com")
    assert (d.action, d.reason) == ("DIRECT", "port 443 not in transparentPorts")


@pytest.mark.parametrize(
    "section",
    [
        {"pac": "http://pac.corp/p.pac", "exclude": ["10.0.0.0/8"], "https": "p:3128"},
        {"embeddedPac": "function FindProxyForURL(u, h) { return 'DIRECT'; }"},
    ],
)
def test_pac_fails_closed_until_a_decider_is_plugged_in(section: dict[str, object]) -> None:
    p = policy(section)
    assert p.uses_pac and not p.pac_active
    for ip, port, name in [("10.0.0.1", 443, None), ("192.0.2.1", 80, "example.com")]:
        d = decide(p, ip, port, name)
        assert (d.action, d.routes, d.reason) == ("REJECT", (), PAC_INACTIVE_REASON)


def test_pac_ignores_exclude_and_static_proxies_but_not_transparent_ports() -> None:
    p = policy({"pac": "http://pac.corp/p.pac", "transparentPorts": "443"})
    assert decide(p, "10.0.0.1", 22).reason == "port 22 not in transparentPorts"
    assert decide(p, "10.0.0.1", 443).action == "REJECT"


def test_pac_decider_plugs_in() -> None:
    seen: list[Destination] = []

    def decider(dest: Destination) -> Decision:
        seen.append(dest)
        return Decision("PROXY", (Route("SOCKS5", "s", 1080),), "PAC said so", dest.url, dest.host)

    p = policy({"pac": "http://pac.corp/p.pac"}).with_pac_decider(SyncDecider(decider))
    assert p.pac_active and p.uses_pac
    d = p.decide_now(Destination("::ffff:192.0.2.1", 443, "example.com"))
    assert d is not None
    assert d.reason == "PAC said so"
    assert seen == [Destination("192.0.2.1", 443, "example.com")]  # mapped IP folded first


def test_pac_source_order() -> None:
    script = "function FindProxyForURL(u, h) { return 'DIRECT'; }"
    assert policy({"embeddedPac": script, "pac": "http://p/p.pac"}).pac_source == "embeddedPac"
    assert policy({"pac": "http://p/p.pac"}).pac_source == "pac"
    assert policy({}).pac_source is None


def test_unknown_ip_skips_ip_entries() -> None:
    """`explain` without --ip passes ip="": IP/CIDR entries cannot match, names still can."""
    p = policy({"exclude": ["0.0.0.0/0", "ok.example"]})
    assert decide(p, "", 443, "ok.example").action == "DIRECT"
    assert decide(p, "", 443, "other.example").action == "REJECT"


def test_decide_is_fast() -> None:
    entries = [f"svc{i}.corp.example" for i in range(500)] + [f"10.{i}.0.0/16" for i in range(200)]
    entries += [f"api.*.region{i}.example" for i in range(20)]
    p = policy({"exclude": entries, "https": "http://proxy:3128", "transparentPorts": "*"})
    dest = Destination("203.0.113.9", 443, "a.b.c.d.unrelated.example")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        p.decide_now(dest)
    per_call = (time.perf_counter() - start) / n
    assert decide(p, dest.ip, dest.port, dest.hostname).action == "PROXY"
    assert per_call < 500e-6, f"{per_call * 1e6:.1f} µs per decision"


@pytest.mark.parametrize(
    "proxy",
    [
        "http://reject.docker.internal:3128",
        "reject.docker.internal:1",
        "socks5://REJECT.docker.internal.",
        "https://a.reject.docker.internal",
        "http://xn--rject-zwe.docker.internal:80",  # punycode of a look-alike
        "http://\uff52eject.docker.internal:80",  # fullwidth r (mapped by IDNA)
        "http://reject.docker.internal@corp.example:8080",
    ],
)
def test_static_proxy_naming_the_sentinel_blocks(proxy: str) -> None:
    # it was a route to a name nobody should resolve; a resolver that answers for
    # `.internal` names would have made it a real proxy
    p = policy({"http": proxy, "https": proxy, "exclude": ["ok.example"], "transparentPorts": "*"})
    for port in (80, 443, 22):
        d = decide(p, "93.184.216.34", port, "example.com")
        assert d.action == "REJECT" and d.routes == (), d
        assert "block sentinel reject.docker.internal" in d.reason
    assert decide(p, "93.184.216.34", 443, "ok.example").action == "DIRECT"
    assert any("names the block sentinel" in w for w in p.warnings)


def test_static_sentinel_in_system_mode_blocks_instead_of_going_direct() -> None:
    p = policy({"mode": "system"}, {"https_proxy": "http://reject.docker.internal:1"})
    d = decide(p, "93.184.216.34", 443, "example.com")
    assert d.action == "REJECT"
    assert d.reason.startswith("system mode: port 443: https_proxy names the block sentinel")
    assert decide(p, "93.184.216.34", 80, "example.com").action == "DIRECT"  # unset: curl's rule


def test_static_proxy_near_the_sentinel_is_a_route() -> None:
    p = policy({"https": "http://docker.internal:3128"})
    assert decide(p, "93.184.216.34", 443).routes == (Route("PROXY", "docker.internal", 3128),)
    assert not any("sentinel" in w for w in p.warnings)
