"""Route selection: what each route of a decision dials, and what a route's failure means.

Pure code (no sockets, no event loop, no proxy state), so that the running proxy and
`airgap-proxy explain` take the very same decisions, and so that the rules below are tested
on their own. The caller does the I/O: it resolves the name when `unchecked_target` says a
route needs the name's addresses, opens the route, and applies `after_failure` when opening
it fails.

The rules:

- **SNI/Host spoofing.** A DIRECT route of a decision that rests on a sniffed name dials the
  original IP only when it is one of the name's addresses, else an address of the name
  (same family first), never the proxy host's own addresses (loopback, unspecified,
  0.0.0.0/8: the name is resolved in the proxy's network, where those are the proxy itself).
- **Ip-bound decisions.** When the decision also rested on the original IP being the name's
  address (a PAC that read `dnsResolve(host)` was answered with that IP), no route may take
  the connection to an address the decision was not made about: DIRECT refuses any other
  address, and a proxy route sends the name only when the IP is one of its addresses, the
  IP itself when the name cannot be resolved here, and refuses otherwise.
- **Explicit proxy requests.** The client names the destination and dials nothing itself:
  DIRECT dials an address the proxy resolved for the name (or the requested IP), never the
  proxy host's own addresses nor one of the proxy's own listeners (no self-loop, no door to
  the host's local services); a proxy route is sent the requested name or IP.
- **Failover.** A route that could not be used (connection refused, timeout, reset or close
  before a reply, TLS failure to an HTTPS proxy, a malformed reply) moves on to the next
  route, and a proxy is marked bad. A proxy that answered with a refusal (an HTTP status
  other than 2xx on CONNECT, 407 included; a SOCKS error reply) ends the connection as
  REJECT and counts as working: its refusal is the policy, and trying the next entry (often
  DIRECT) would carry out what it refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pac.routes import Route
from rules.model import Decision, Destination

#: How opening a route failed (see the module doc).
FailureKind = Literal["unusable", "refused", "inapplicable"]
#: The route could not be used: no connection, no reply, a garbled reply, a TLS failure.
UNUSABLE: Final = "unusable"
#: The upstream proxy answered and refused this destination.
REFUSED: Final = "refused"
#: The route cannot carry this destination (SOCKS4 and an IPv6 address): it says nothing
#: about the proxy, so the proxy is not marked bad for every other connection.
INAPPLICABLE: Final = "inapplicable"


@dataclass(frozen=True, slots=True)
class Target:
    """What a route dials (DIRECT: an IP) or asks its upstream for (a name or an IP).

    `note` is set when the target is not the obvious one, for the log.
    """

    host: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The route may not be used for this connection, and why (the audit's error)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Failover:
    """What follows a route's failure: try the next route or end; how the proxy counts."""

    try_next: bool
    mark_bad: bool
    mark_working: bool


_FAILOVER: Final[dict[str, Failover]] = {
    UNUSABLE: Failover(try_next=True, mark_bad=True, mark_working=False),
    INAPPLICABLE: Failover(try_next=True, mark_bad=False, mark_working=False),
    REFUSED: Failover(try_next=False, mark_bad=False, mark_working=True),
}


@dataclass(frozen=True, slots=True)
class Ending:
    """How a connection ends when no route was opened.

    `reject`: REJECT on the wire (403, TLS alert or reset as for any REJECT) with `reason`;
    else the client is reset. `error` is the audit's error field.
    """

    reject: bool
    reason: str
    error: str


def unchecked_target(route: Route, dest: Destination, decision: Decision) -> str | None:
    """The target of a route that needs no look-up, or None when `checked_target` must
    decide with the name's addresses. Allocates nothing: it is on every connection's path.

    DIRECT dials the original IP unless the decision rests on a sniffed name; a proxy is
    sent the name when there is one (the upstream resolves it), unless the decision was
    ip-bound.
    """
    name = dest.hostname
    if route.kind == "DIRECT":
        if name is not None and decision.name_based:
            return None
        return dest.ip
    if name is not None and decision.ip_bound:
        return None
    return name or dest.ip


def checked_target(
    route: Route, dest: Destination, decision: Decision, addrs: Sequence[str]
) -> Target | Refusal:
    """The target of a route that `unchecked_target` left open, given the addresses the
    name resolves to here (empty: it does not resolve)."""
    if route.kind == "DIRECT":
        return direct_target(dest, decision, addrs)
    return proxy_target(route, dest, addrs)


def direct_target(dest: Destination, decision: Decision, addrs: Sequence[str]) -> Target | Refusal:
    """The IP a DIRECT route of a name-based decision may dial (the SNI/Host spoofing rule)."""
    name = dest.hostname
    if not addrs:
        return Refusal(f"DIRECT: name {name} does not resolve")
    if dest.ip in addrs:
        return Target(dest.ip)
    if decision.ip_bound:
        return Refusal(
            f"DIRECT: {dest.ip} is not an address of {name}, and the decision was made on"
            " that address"
        )
    usable = [a for a in addrs if not is_proxy_host(a)]
    if not usable:
        return Refusal(
            f"DIRECT: {name} resolves only to the proxy host's own addresses"
            f" ({', '.join(addrs)}), not to {dest.ip}"
        )
    chosen = usable[0]
    if dest.ip:
        version = ipaddress.ip_address(dest.ip).version
        chosen = next((a for a in usable if ipaddress.ip_address(a).version == version), chosen)
    return Target(chosen, f"{dest.ip} is not an address of {name}; connecting to {chosen} instead")


def proxy_target(route: Route, dest: Destination, addrs: Sequence[str]) -> Target | Refusal:
    """What an ip-bound decision's proxy route asks for: the name only when the original IP
    is one of its addresses; the IP when the name cannot be checked here (never the
    unchecked name); a refusal when the IP is not the name's."""
    name = dest.hostname
    assert name is not None
    if not addrs:
        return Target(
            dest.ip, f"cannot check {name} against {dest.ip}; asking {route} for the address"
        )
    if dest.ip in addrs:
        return Target(name)
    return Refusal(
        f"{route}: {dest.ip} is not an address of {name}, and the decision was made on that address"
    )


def explicit_target(
    route: Route,
    dest: Destination,
    addrs: Sequence[str],
    own_listener: Callable[[str, int], bool],
) -> Target | Refusal:
    """What a route of an explicit-proxy request dials (see the module doc). `addrs`: for
    DIRECT, the addresses it may choose from (the name's, the one an IP entry matched, or
    the requested IP); `own_listener(ip, port)`: whether that is one of the proxy's own
    listening sockets."""
    if route.kind != "DIRECT":
        return Target(dest.host)
    if not addrs:
        return Refusal(f"DIRECT: name {dest.host} does not resolve")
    usable = [a for a in addrs if not is_proxy_host(a)]
    if not usable:
        return Refusal(
            f"DIRECT: {dest.host} is the proxy host's own address ({', '.join(addrs)}): refused"
        )
    outside = [a for a in usable if not own_listener(a, dest.port)]
    if not outside:
        return Refusal(f"DIRECT: {dest.host} port {dest.port} is the proxy's own listener: refused")
    return Target(outside[0])


def route_label(route: Route, dest: Destination, target: str) -> Route | str:
    """The audit's route: the route itself, or `DIRECT 1.2.3.4 (by name)` when DIRECT dials
    another address of the name, `PROXY h:p (by IP)` when a proxy is sent the IP although a
    name was known."""
    if route.kind == "DIRECT":
        return route if target == dest.ip else f"DIRECT {target} (by name)"
    if dest.hostname and target == dest.ip:
        return f"{route} (by IP)"
    return route


def is_proxy_host(ip: str) -> bool:
    """True for an address that means the proxy's own host when the proxy dials it:
    loopback, the unspecified address (Linux connects it to the local host), and the rest
    of 0.0.0.0/8 ("this network", never a real destination)."""
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or addr.is_unspecified or (addr.version == 4 and ip.startswith("0."))


#: A failure of a kind this module does not know ends the connection: moving on to the
#: next entry (often DIRECT) on a failure nobody classed would fail open.
_UNKNOWN_FAILURE: Final = Failover(try_next=False, mark_bad=False, mark_working=False)


def after_failure(kind: str) -> Failover:
    """The failover rule for a route that failed with `kind` (an unknown kind: end)."""
    return _FAILOVER.get(kind, _UNKNOWN_FAILURE)


def refused_by_upstream(decision: Decision, answer: str, errors: Sequence[str]) -> Ending:
    """A proxy answered with a refusal (`answer` quotes it): REJECT, the answer in the
    reason the client and the audit see."""
    return Ending(
        True, f"{decision.reason}; refused by the upstream proxy: {answer}", _join(errors)
    )


def exhausted(decision: Decision, errors: Sequence[str], refusals: int) -> Ending:
    """Every route failed or was refused. REJECT when the list ended in the reject sentinel
    (with the decision's reason) or when every route was refused by the rules above (with
    the refusals); else a reset, as for an unreachable destination."""
    error = _join(errors) or "no usable route"
    if decision.then_reject:
        return Ending(True, decision.reason, error)
    if refusals == len(errors):
        return Ending(True, error, error)
    return Ending(False, error, error)


def _join(errors: Sequence[str]) -> str:
    return "; ".join(errors)
