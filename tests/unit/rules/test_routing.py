"""rules.routing: what each route dials, and what a route's failure means (no sockets, no
event loop, no proxy context).

The client chooses the name; the proxy resolves it in its own network namespace. An address
of the name that is the proxy's own host (loopback, unspecified) must never be chosen in
place of the address the client dialled: that would open the proxy host's local services to
any container that names `localhost` (Docker's own example excludes it) or any allowed name
whose DNS answer is 127.0.0.1.
"""

from __future__ import annotations

import pytest

from pac.routes import DIRECT, Route
from rules import routing
from rules.model import Decision, Destination
from rules.routing import Refusal, Target

EVIL = "203.0.113.66"
PROXY = Route("PROXY", "gw.example", 3128)


def _decision(
    route: Route, dest: Destination, *, ip_bound: bool = False, then_reject: bool = False
) -> Decision:
    action = "DIRECT" if route.kind == "DIRECT" else "PROXY"
    return Decision(
        action,
        (route,),
        "test",
        dest.url,
        dest.host,
        name_based=dest.hostname is not None,
        then_reject=then_reject,
        ip_bound=ip_bound,
    )


def _target(
    route: Route, name: str | None, ip: str, addrs: tuple[str, ...], ip_bound: bool = False
) -> Target | Refusal | str:
    """What the route dials for a client that dialled `ip` naming `name`, whose name
    resolves to `addrs` here (asked only when the rules need it)."""
    dest = Destination(ip, 443, name, "10.0.0.2")
    decision = _decision(route, dest, ip_bound=ip_bound)
    plain = routing.unchecked_target(route, dest, decision)
    if plain is not None:
        return plain
    return routing.checked_target(route, dest, decision, addrs)


def _host(result: Target | Refusal | str) -> str | None:
    if isinstance(result, Refusal):
        return None
    return result if isinstance(result, str) else result.host


# --------------------------------------------------------------------------- SNI/Host spoofing


@pytest.mark.parametrize(
    "addrs",
    [
        ("127.0.0.1", "::1"),
        ("127.0.0.53",),
        ("::1",),
        ("0.0.0.0",),  # connect() to it reaches the local host
        ("0.1.2.3",),
        ("::",),
    ],
)
def test_a_name_is_never_followed_to_the_proxy_host_itself(addrs: tuple[str, ...]) -> None:
    result = _target(DIRECT, "localhost", EVIL, addrs)
    assert isinstance(result, Refusal) and "proxy host's own addresses" in result.reason


def test_the_proxy_host_addresses_of_a_name_are_skipped_not_the_others() -> None:
    assert _host(_target(DIRECT, "mixed.example", EVIL, ("127.0.0.1", "198.51.100.7"))) == (
        "198.51.100.7"
    )


def test_a_spoofed_name_dials_the_names_address_and_says_so() -> None:
    result = _target(DIRECT, "allowed.example", EVIL, ("203.0.113.10",))
    assert result == Target(
        "203.0.113.10",
        f"{EVIL} is not an address of allowed.example; connecting to 203.0.113.10 instead",
    )
    dest = Destination(EVIL, 443, "allowed.example")
    assert routing.route_label(DIRECT, dest, "203.0.113.10") == "DIRECT 203.0.113.10 (by name)"


def test_the_dialled_address_is_kept_when_it_is_one_of_the_names() -> None:
    result = _target(DIRECT, "rr.example", EVIL, ("203.0.113.11", EVIL))
    assert result == Target(EVIL)
    assert routing.route_label(DIRECT, Destination(EVIL, 443, "rr.example"), EVIL) is DIRECT


def test_a_substitute_of_the_same_family_is_preferred() -> None:
    addrs = ("2001:db8::7", "198.51.100.7")
    assert _host(_target(DIRECT, "dual.example", EVIL, addrs)) == "198.51.100.7"
    assert _host(_target(DIRECT, "dual.example", "2001:db8::66", addrs)) == "2001:db8::7"


def test_a_name_that_does_not_resolve_is_refused() -> None:
    result = _target(DIRECT, "nx.example", EVIL, ())
    assert isinstance(result, Refusal) and "does not resolve" in result.reason


def test_without_a_name_based_decision_nothing_is_looked_up() -> None:
    dest = Destination(EVIL, 443, None)
    decision = _decision(DIRECT, dest)
    assert routing.unchecked_target(DIRECT, dest, decision) == EVIL
    named = Destination(EVIL, 443, "x.example")
    by_ip = Decision("DIRECT", (DIRECT,), "exclude ip", named.url, named.host)
    assert routing.unchecked_target(DIRECT, named, by_ip) == EVIL
    assert routing.unchecked_target(PROXY, named, by_ip) == "x.example"
    assert routing.unchecked_target(PROXY, dest, decision) == EVIL


# --------------------------------------------------------------------------- ip-bound decisions
# A PAC decision that read dnsResolve(host) was answered with the dialled address, so it was
# made about that address: no route may take the connection to an address it never judged.


def test_an_ip_bound_direct_route_never_substitutes_an_address() -> None:
    result = _target(DIRECT, "github.com", "10.0.0.5", ("140.82.112.3",), ip_bound=True)
    assert isinstance(result, Refusal) and "decision was made on that address" in result.reason
    kept = _target(DIRECT, "github.com", "140.82.112.3", ("140.82.112.3",), ip_bound=True)
    assert kept == Target("140.82.112.3")


def test_an_ip_bound_proxy_route_never_carries_a_name_the_dialled_ip_is_not_of() -> None:
    result = _target(PROXY, "github.com", "10.0.0.5", ("140.82.112.3",), ip_bound=True)
    assert isinstance(result, Refusal) and str(PROXY) in result.reason


def test_an_ip_bound_proxy_route_carries_a_verified_name() -> None:
    addrs = ("140.82.112.3", "140.82.112.4")
    assert _target(PROXY, "github.com", "140.82.112.4", addrs, ip_bound=True) == Target(
        "github.com"
    )


def test_an_ip_bound_proxy_route_carries_the_dialled_ip_when_the_name_cannot_be_checked() -> None:
    result = _target(PROXY, "github.com", "10.0.0.5", (), ip_bound=True)
    assert isinstance(result, Target) and result.host == "10.0.0.5", "never the unchecked name"
    assert "cannot check github.com" in result.note
    dest = Destination("10.0.0.5", 443, "github.com")
    assert routing.route_label(PROXY, dest, "10.0.0.5") == "PROXY gw.example:3128 (by IP)"
    assert routing.route_label(PROXY, dest, "github.com") is PROXY


# --------------------------------------------------------------------------- the proxy host


@pytest.mark.parametrize(
    ("ip", "own"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("0.0.0.0", True),
        ("0.255.255.255", True),
        ("::", True),
        ("10.0.0.1", False),
        ("1.0.0.0", False),
        ("::ffff:7f00:1", False),  # mapped: folded to IPv4 before it gets here
        ("2001:db8::1", False),
    ],
)
def test_is_proxy_host(ip: str, own: bool) -> None:
    assert routing.is_proxy_host(ip) is own


# --------------------------------------------------------------------------- failover


def test_an_unusable_proxy_is_skipped_and_marked_bad() -> None:
    rule = routing.after_failure(routing.UNUSABLE)
    assert (rule.try_next, rule.mark_bad, rule.mark_working) == (True, True, False)


def test_a_refusing_proxy_ends_the_connection_and_counts_as_working() -> None:
    rule = routing.after_failure(routing.REFUSED)
    assert (rule.try_next, rule.mark_bad, rule.mark_working) == (False, False, True)


def test_a_route_that_cannot_carry_the_destination_is_skipped_unmarked() -> None:
    rule = routing.after_failure(routing.INAPPLICABLE)
    assert (rule.try_next, rule.mark_bad, rule.mark_working) == (True, False, False)


def test_an_unknown_failure_kind_ends_the_connection() -> None:
    """Fail closed: a failure nobody classed must not move on to the next entry (DIRECT)."""
    rule = routing.after_failure("whatever")
    assert not rule.try_next and not rule.mark_bad and not rule.mark_working


def test_a_refusal_rejects_with_the_upstreams_answer() -> None:
    dest = Destination(EVIL, 443, "evil.example")
    decision = _decision(PROXY, dest)
    answer = "PROXY gw.example:3128: upstream answered CONNECT with 403 Filtered"
    ending = routing.refused_by_upstream(decision, answer, ["earlier failure", answer])
    assert ending.reject and "403 Filtered" in ending.reason and ending.reason.startswith("test")
    assert ending.error == f"earlier failure; {answer}"


def test_exhausted_routes_reset_unless_refused_by_rule_or_sentinel() -> None:
    dest = Destination(EVIL, 443, "evil.example")
    plain = _decision(PROXY, dest)
    sentinel = _decision(PROXY, dest, then_reject=True)
    assert routing.exhausted(plain, ["a: refused"], 0) == routing.Ending(
        False, "a: refused", "a: refused"
    )
    assert routing.exhausted(plain, ["spoof"], 1).reject, "every route refused by the rules"
    assert not routing.exhausted(plain, ["spoof", "b: timed out"], 1).reject
    ending = routing.exhausted(sentinel, ["b: timed out"], 0)
    assert ending.reject and ending.reason == "test" and ending.error == "b: timed out"
