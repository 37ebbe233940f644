"""The explicit proxy path in the pure rules: every port decided, what DIRECT may dial."""

from __future__ import annotations

import json

import pytest

from pac.routes import DIRECT, Route
from rules import routing
from rules.config import parse_config_text
from rules.explain import select_explicit_routes
from rules.model import Destination
from rules.policy import Policy


def _policy(exclude: str, https: str = "", ports: str = "80,443") -> Policy:
    section = {"mode": "manual", "http": "", "https": https, "exclude": exclude}
    text = json.dumps({"containersProxy": {**section, "transparentPorts": ports}})
    return Policy.from_config(parse_config_text(text, "test"), {})


def _named(name: str, port: int, ip: str = "") -> Destination:
    return Destination(ip=ip, port=port, hostname=name, explicit=True)


def test_every_port_is_decided_by_the_policy_on_the_explicit_path() -> None:
    policy = _policy("allowed.example")
    transparent = policy.decide_now(Destination(ip="203.0.113.66", port=22))
    assert transparent is not None and transparent.action == "DIRECT"
    explicit = policy.decide_now(Destination(ip="203.0.113.66", port=22, explicit=True))
    assert explicit is not None and explicit.action == "REJECT"
    # The cache keeps the two apart, whichever comes first.
    again = policy.decide_now(Destination(ip="203.0.113.66", port=22))
    assert again is not None and again.action == "DIRECT"
    named = policy.decide_now(_named("allowed.example", 22))
    assert named is not None and named.action == "DIRECT" and named.name_based


def test_resolved_addresses_needed_only_for_static_ip_entries() -> None:
    assert _policy("10.0.0.0/8").matches_resolved_addresses
    assert not _policy("allowed.example").matches_resolved_addresses


def _never(ip: str, port: int) -> bool:
    return False


@pytest.mark.parametrize("addrs", [("127.0.0.1",), ("::1",), ("0.0.0.0",), ("::",), ()])
def test_direct_never_dials_the_proxy_host(addrs: tuple[str, ...]) -> None:
    choice = routing.explicit_target(DIRECT, _named("a.example", 22), addrs, _never)
    assert isinstance(choice, routing.Refusal)


def test_direct_skips_loopback_and_own_listeners() -> None:
    dest = _named("a.example", 3128)
    addrs = ("127.0.0.1", "203.0.113.1", "203.0.113.2")
    own = {("203.0.113.1", 3128)}
    choice = routing.explicit_target(DIRECT, dest, addrs, lambda ip, port: (ip, port) in own)
    assert choice == routing.Target("203.0.113.2")
    only_own = routing.explicit_target(DIRECT, dest, addrs[:2], lambda i, p: (i, p) in own)
    assert isinstance(only_own, routing.Refusal) and "own listener" in only_own.reason


def test_a_proxy_route_is_sent_the_requested_host() -> None:
    route = Route("PROXY", "corp.example", 8080)
    choice = routing.explicit_target(route, _named("a.example", 22), (), _never)
    assert choice == routing.Target("a.example")
    dest = Destination(ip="203.0.113.5", port=22, explicit=True)
    assert routing.explicit_target(route, dest, (), _never) == routing.Target("203.0.113.5")


def test_explain_selection_refuses_like_the_listener() -> None:
    policy = _policy("localhost")
    dest = _named("localhost", 22)
    decision = policy.decide_now(dest)
    assert decision is not None and decision.action == "DIRECT"
    selection = select_explicit_routes(dest, decision, ("127.0.0.1",))
    assert not selection.usable and selection.choices[0].refused
