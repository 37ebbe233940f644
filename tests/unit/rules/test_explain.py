"""explain: DEST parsing and building the Destination as the proxy would."""

from __future__ import annotations

import json

import pytest

from pac.routes import DIRECT, Route
from rules.config import parse_config_text
from rules.explain import (
    explain,
    explanation,
    name_to_check,
    parse_dest,
    parse_resolve,
    select_routes,
)
from rules.model import Decision, Destination
from rules.policy import Policy

ALLOW_INTERNAL = {
    "mode": "manual",
    "https": "http://corporate-proxy.company.com:8080",
    "exclude": ["internal.company.com", "10.0.0.0/8"],
    "transparentPorts": "80,443,22",
}


def policy(section: dict[str, object] = ALLOW_INTERNAL) -> Policy:
    return Policy.from_config(parse_config_text(json.dumps(section), "t.json"), {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:443", ("example.com", 443)),
        ("Example.COM.:80", ("example.com", 80)),
        ("bücher.example:443", ("xn--bcher-kva.example", 443)),
        ("10.0.0.1:22", ("10.0.0.1", 22)),
        ("[2001:DB8::1]:443", ("2001:db8::1", 443)),
        ("[::ffff:10.0.0.1]:80", ("10.0.0.1", 80)),
        (" localhost:8080 ", ("localhost", 8080)),
        ("x:65535", ("x", 65535)),
    ],
)
def test_parse_dest(text: str, expected: tuple[str, int]) -> None:
    assert parse_dest(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty destination"),
        ("example.com", "a port is required (HOST:PORT)"),
        ("10.0.0.1", "a port is required"),
        ("[2001:db8::1]", "a port is required ([IPv6]:PORT)"),
        ("2001:db8::1:443", "write an IPv6 address in brackets"),
        ("[2001:db8::1:443", "missing ']'"),
        ("[nope]:443", "'nope' is not an IPv6 address"),
        ("[fe80::1%eth0]:443", "no zone ids"),
        ("example.com:0", "port 0 out of range (1-65535)"),
        ("example.com:65536", "port 65536 out of range"),
        ("example.com:https", "port 'https' is not a number"),
        ("example.com:", "port '' is not a number"),
        (":443", "no host before ':'"),
        ("bad_name:443", "'bad_name' is neither an IP address nor a usable host name"),
        ("10.0.0.256:443", "neither an IP address nor a usable host name"),
    ],
)
def test_parse_dest_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dest(text)
    assert message in str(info.value)


def test_ip_dest() -> None:
    d = explain(policy(), "10.1.2.3:443", None)
    assert (d.action, d.host, d.url) == ("DIRECT", "10.1.2.3", "https://10.1.2.3:443")
    assert d.reason == "exclude entry '10.0.0.0/8' matched ip '10.1.2.3'"
    d = explain(policy(), "[2001:db8::1]:443", None)
    assert (d.action, d.url) == ("PROXY", "https://[2001:db8::1]:443")
    assert d.to_json()["routes"] == ["PROXY corporate-proxy.company.com:8080"]


def test_ip_dest_with_matching_ip_option() -> None:
    assert explain(policy(), "10.1.2.3:443", "::ffff:10.1.2.3").action == "DIRECT"


def test_ip_dest_with_other_ip_option_refused() -> None:
    with pytest.raises(ValueError, match="disagrees with the address in DEST"):
        explain(policy(), "10.1.2.3:443", "10.9.9.9")


def test_name_on_sniffed_port_without_ip() -> None:
    d = explain(policy(), "api.internal.company.com:443", None)
    assert (d.action, d.name_based, d.host) == ("DIRECT", True, "api.internal.company.com")
    d = explain(policy(), "example.com:443", None)
    assert d.action == "PROXY"
    assert d.reason.endswith("(no --ip given: IP and CIDR entries not checked)")


def test_no_ip_note_only_when_ip_matters() -> None:
    d = explain(policy({"exclude": ["a.example"]}), "example.com:443", None)
    assert d.reason == "no proxy configured for https: blocked (no exclude entry matched)"


def test_name_on_sniffed_port_with_ip() -> None:
    d = explain(policy(), "example.com:80", "10.0.0.7")
    assert (d.action, d.name_based, d.host) == ("DIRECT", False, "example.com")
    assert d.reason == "exclude entry '10.0.0.0/8' matched ip '10.0.0.7'"
    d = explain(policy(), "example.com:443", "192.0.2.1")
    assert d.action == "PROXY" and "no --ip" not in d.reason


def test_name_on_other_port_needs_ip() -> None:
    with pytest.raises(ValueError) as info:
        explain(policy(), "internal.company.com:22", None)
    assert "sniffed on ports 80 and 443 only" in str(info.value)
    assert "--ip" in str(info.value)


def test_name_on_other_port_decides_on_ip_only() -> None:
    """The proxy never sees the name on port 22: an excluded name does not help."""
    d = explain(policy(), "internal.company.com:22", "192.0.2.1")
    assert (d.action, d.host, d.url) == ("PROXY", "192.0.2.1", "http://192.0.2.1:22")
    assert "name 'internal.company.com' not visible on port 22: decided on the IP" in d.reason
    d = explain(policy(), "anything.example:22", "10.0.0.1")
    assert d.action == "DIRECT" and not d.name_based


def test_name_on_port_outside_transparent_ports_needs_no_ip() -> None:
    d = explain(policy(), "example.com:5432", None)
    assert (d.action, d.reason) == ("DIRECT", "port 5432 not in transparentPorts")


def test_bad_ip_option() -> None:
    with pytest.raises(ValueError, match="--ip 'nope' is not an IP address"):
        explain(policy(), "example.com:443", "nope")
    with pytest.raises(ValueError, match="no zone ids"):
        explain(policy(), "example.com:443", "fe80::1%eth0")


def test_bracketed_ip_option() -> None:
    d = explain(policy({"exclude": ["2001:db8::/32"]}), "example.com:443", "[2001:db8::5]")
    assert d.action == "DIRECT"


def test_block_all_json() -> None:
    section = {"mode": "manual", "http": "", "https": "", "exclude": [], "transparentPorts": "*"}
    d = explain(policy(section), "example.com:443", "93.184.216.34")
    assert d.to_json() == {
        "action": "REJECT",
        "routes": [],
        "url": "https://example.com:443",
        "host": "example.com",
        "reason": "no proxy configured for https: blocked",
    }


# --- route selection, as the proxy runs it on the decision (no sockets, no DNS here) ---------


def _pac_decision(dest: Destination, routes: tuple[Route, ...], ip_bound: bool) -> Decision:
    action = "DIRECT" if routes[0].kind == "DIRECT" else "PROXY"
    return Decision(action, routes, "PAC returned", dest.url, dest.host, True, False, ip_bound)


def test_an_ip_bound_decision_for_another_address_is_explained_as_reject() -> None:
    dest = Destination("10.0.0.5", 443, "github.com")
    decision = _pac_decision(dest, (DIRECT,), ip_bound=True)
    assert name_to_check(dest, decision) == "github.com"
    out = explanation(decision, select_routes(dest, decision, ("140.82.112.3",)))
    assert out["action"] == "REJECT" and out["routes"] == []
    assert "10.0.0.5 is not an address of github.com" in str(out["reason"])


def test_a_name_only_on_loopback_is_explained_as_reject_and_the_next_route_kept() -> None:
    dest = Destination("203.0.113.5", 443, "localhost")
    proxy = Route("PROXY", "gw.example", 3128)
    decision = _pac_decision(dest, (DIRECT, proxy), ip_bound=False)
    out = explanation(decision, select_routes(dest, decision, ("127.0.0.1", "::1")))
    assert out["action"] == "PROXY" and out["routes"] == ["PROXY gw.example:3128"]
    assert "proxy host's own addresses" in str(out["refused"])
    assert "failover" in out


def test_a_decision_on_the_ip_needs_no_lookup() -> None:
    dest = Destination("203.0.113.5", 22)
    decision = Decision("DIRECT", (DIRECT,), "r", dest.url, dest.host)
    assert name_to_check(dest, decision) is None
    out = explanation(decision, select_routes(dest, decision, None))
    assert out["dial"] == [{"route": "DIRECT", "target": "203.0.113.5", "audit_route": "DIRECT"}]
    assert "failover" not in out and "refused" not in out


def test_parse_resolve() -> None:
    table = parse_resolve(["GitHub.com.=140.82.112.3", "github.com=::ffff:140.82.112.4"])
    assert table == {"github.com": ("140.82.112.3", "140.82.112.4")}
    with pytest.raises(ValueError, match="--resolve"):
        parse_resolve(["github.com"])
