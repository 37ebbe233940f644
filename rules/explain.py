"""`airgap-proxy explain`: the decision for one destination, built as the proxy would build it.

Two steps, both the proxy's own code: the decision (`Policy.decide`, or the PAC), then the
route selection of `rules.routing` (the SNI/Host spoofing rule, the ip-bound rule, the
proxy host's own addresses), which can turn a DIRECT or PROXY decision into a REJECT. This
module is pure: the caller resolves the name (`name_to_check`) and hands the answer to
`select_routes`; `explanation` builds the JSON.

How DEST and --ip become a `Destination` (the proxy only learns a name by sniffing SNI/Host
on ports 80 and 443; elsewhere it sees the IP only):

- `ip:port` / `[v6]:port`: decided on that IP, with no name (as for a TLS hello without SNI).
  `--ip`, if given, must be the same address.
- `name:80` / `name:443`: the canonical name is the sniffed hostname; `--ip` is the original
  destination IP. Without `--ip` the IP is unknown: IP and CIDR entries cannot match, and the
  reason says so.
- `name:PORT` on any other port: the proxy never sees that name, so the decision is made on
  `--ip` alone and the reason says the name was not used. Without `--ip` this is an error
  (ValueError asking for --ip), unless the port is outside transparentPorts, where the answer
  (DIRECT, no policy) does not depend on the address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Sequence

from pac.addr import unmap
from pac.routes import Route
from rules import routing
from rules.model import Decision, Destination
from rules.names import canonical_hostname
from rules.policy import Policy

#: What `explain` says about failover whenever a proxy route may be tried.
FAILOVER_NOTE = (
    "an upstream proxy that answers with a refusal (an HTTP status other than 2xx to"
    " CONNECT, 407 included, or a SOCKS error reply) ends the connection as REJECT, with its"
    " answer in the reason; only one that cannot be used (refused or timed-out connection,"
    " reset or close before a reply, TLS failure, malformed reply) moves on to the next"
    " route"
)

#: Ports on which the proxy sniffs a hostname (TLS SNI on 443, HTTP Host on 80).
SNIFF_PORTS = (80, 443)

_PORT = re.compile(r"[0-9]{1,5}")


def parse_dest(text: str) -> tuple[str, int]:
    """`host:port`, `ip:port` or `[v6]:port` -> (host, port); the port is required.

    The host comes back canonical: a lower-case A-label name, or a normalised IP address
    (IPv4-mapped IPv6 as IPv4). ValueError with a message naming what is wrong.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty destination (expected HOST:PORT, IP:PORT or [IPv6]:PORT)")
    if raw.startswith("["):
        inner, close, rest = raw[1:].partition("]")
        if not close:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            addr = None
        if addr is None or addr.scope_id:
            raise ValueError(f"{text!r}: {inner!r} is not an IPv6 address (no zone ids)")
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: a port is required ([IPv6]:PORT)")
        host = str(addr.ipv4_mapped or addr)
        return host, _port(rest[1:], text)
    if raw.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [ADDR]:PORT")
    host_text, colon, port_text = raw.partition(":")
    if not colon:
        raise ValueError(f"{text!r}: a port is required (HOST:PORT)")
    if not host_text:
        raise ValueError(f"{text!r}: no host before ':'")
    port = _port(port_text, text)
    try:
        return str(ipaddress.IPv4Address(host_text)), port
    except ValueError:
        pass
    name = canonical_hostname(host_text)
    if name is None:
        raise ValueError(f"{text!r}: {host_text!r} is neither an IP address nor a usable host name")
    return name, port


def explain_destination(
    policy: Policy, dest_text: str, ip: str | None, client: str | None = None
) -> tuple[Destination, str | None]:
    """The Destination the proxy would build for DEST (and --ip), plus a note for the reason.

    `client` (--client) is the container's address, what `myIpAddress()` reports in the
    proxy. Split from `explain` so that a caller with an asynchronous (PAC) decider can
    decide the same Destination itself.
    """
    host, port = parse_dest(dest_text)
    addr = _parse_ip_option(ip) if ip is not None else None
    client_ip = _parse_ip_option(client, "--client") if client is not None else None
    if _is_ip(host):
        if addr is not None and addr != host:
            raise ValueError(f"--ip {ip} disagrees with the address in DEST ({host})")
        return Destination(ip=host, port=port, client_ip=client_ip), None
    if port not in policy.transparent_ports:
        return Destination(ip=addr or "", port=port, hostname=host, client_ip=client_ip), None
    if port in SNIFF_PORTS:
        dest = Destination(ip=addr or "", port=port, hostname=host, client_ip=client_ip)
        if addr is None and policy.depends_on_ip:
            return dest, "no --ip given: IP and CIDR entries not checked"
        return dest, None
    if addr is None:
        raise ValueError(
            f"{dest_text!r}: the proxy sees no host name on port {port} (names are sniffed on"
            " ports 80 and 443 only); give the destination address with --ip"
        )
    return Destination(ip=addr, port=port, client_ip=client_ip), (
        f"name {host!r} not visible on port {port}: decided on the IP"
    )


def parse_resolve(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`--resolve NAME=IP` options (repeatable, several per name) as a DNS table, names
    canonical as the proxy looks them up."""
    table: dict[str, tuple[str, ...]] = {}
    for item in items:
        name_text, sep, ip_text = item.partition("=")
        name = canonical_hostname(name_text.strip()) if sep else None
        if name is None or not ip_text.strip():
            raise ValueError(f"--resolve: expected NAME=IP, got {item!r}")
        ip = _parse_ip_option(ip_text, "--resolve")
        if ip not in table.get(name, ()):
            table[name] = (*table.get(name, ()), ip)
    return table


def name_to_check(dest: Destination, decision: Decision) -> str | None:
    """The name whose addresses the proxy would look up to choose a route's target (the
    proxy does so for the first such route it reaches), or None when no route needs it."""
    if decision.action == "REJECT":
        return None
    for route in decision.routes:
        if routing.unchecked_target(route, dest, decision) is None:
            return dest.hostname
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class RouteChoice:
    """One route of the decision as the proxy would try it: what it dials, or why not."""

    route: Route
    target: str | None  # None: refused
    label: str  # the audit's route when it is used, or the refusal
    refused: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """The route selection for one decision: the choices, and what could not be checked."""

    choices: tuple[RouteChoice, ...]
    unchecked: tuple[str, ...]

    @property
    def usable(self) -> tuple[RouteChoice, ...]:
        return tuple(c for c in self.choices if not c.refused)


def select_routes(dest: Destination, decision: Decision, addrs: Sequence[str] | None) -> Selection:
    """Each route's target by `rules.routing`, as the proxy chooses it. `addrs`: what
    `name_to_check` resolves to (None when nothing needed it). Without --ip (dest.ip "")
    the rules that compare the dialled address with the name's are not checked, and
    `unchecked` says so; the ones that hold for every address still apply."""
    choices: list[RouteChoice] = []
    unchecked: list[str] = []
    if decision.action == "REJECT":
        return Selection((), ())
    for route in decision.routes:
        target = routing.unchecked_target(route, dest, decision)
        if target is not None:
            label = routing.route_label(route, dest, target)
            choices.append(RouteChoice(route, target or "(the dialled IP)", str(label)))
            continue
        found = tuple(addrs or ())
        if not dest.ip and found and (decision.ip_bound or route.kind != "DIRECT"):
            unchecked.append(
                f"{route}: no --ip given: not checked whether the dialled IP is an address of"
                f" {dest.hostname} ({', '.join(found)}); the proxy refuses this route when it"
                " is not"
            )
            choices.append(RouteChoice(route, dest.hostname, str(route)))
            continue
        choice = routing.checked_target(route, dest, decision, found)
        if isinstance(choice, routing.Refusal):
            choices.append(RouteChoice(route, None, choice.reason, refused=True))
            continue
        if choice.note and route.kind != "DIRECT":
            unchecked.append(f"{route}: {choice.note}")
        if not dest.ip and route.kind == "DIRECT":
            unchecked.append(
                f"no --ip given: DIRECT dials the original IP when it is an address of"
                f" {dest.hostname} ({', '.join(found)}), else {choice.host}"
            )
        host = choice.host or "(the dialled IP)"
        label = str(routing.route_label(route, dest, choice.host)) if dest.ip else str(route)
        choices.append(RouteChoice(route, host, label))
    return Selection(tuple(choices), tuple(unchecked))


def select_explicit_routes(
    dest: Destination, decision: Decision, addrs: Sequence[str] | None
) -> Selection:
    """Each route's target as the explicit listener chooses it (`routing.explicit_target`):
    DIRECT from `addrs` (the name's addresses, the one an IP entry matched, or the IP),
    a proxy sent the requested host. The proxy's own listeners are not known here: the
    listener also refuses those, and `unchecked` says so when DIRECT may be used."""
    if decision.action == "REJECT":
        return Selection((), ())
    choices: list[RouteChoice] = []
    unchecked: list[str] = []
    for route in decision.routes:
        found = tuple(addrs or ()) if route.kind == "DIRECT" else ()
        choice = routing.explicit_target(route, dest, found, lambda _ip, _port: False)
        if isinstance(choice, routing.Refusal):
            choices.append(RouteChoice(route, None, choice.reason, refused=True))
            continue
        label = f"DIRECT {choice.host}" if route.kind == "DIRECT" else str(route)
        if route.kind == "DIRECT" and not unchecked:
            unchecked.append(
                "the running listener also refuses DIRECT to the proxy's own listening"
                " addresses, which explain does not know"
            )
        choices.append(RouteChoice(route, choice.host, label))
    return Selection(tuple(choices), tuple(unchecked))


def explanation(
    decision: Decision,
    selection: Selection,
    notes: Sequence[str] = (),
    dns: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, object]:
    """The `explain` JSON: the decision's shape (`Decision.to_json`) with what the proxy
    would really do: a route every rule refuses is dropped, a decision left without routes
    is a REJECT. `dial` lists what each remaining route dials (and the audit's route
    label), `refused` the refusals, `unchecked` what could not be checked, `dns` the
    answers used, `failover` what an upstream's refusal means."""
    out = decision.to_json()
    usable = selection.usable
    refusals = [c.label for c in selection.choices if c.refused]
    if refusals:
        if usable:
            first = usable[0].route
            out["action"] = "DIRECT" if first.kind == "DIRECT" else "PROXY"
        else:
            ending = routing.exhausted(decision, refusals, len(refusals))
            out["action"] = "REJECT"
            out["reason"] = f"{decision.reason}; {ending.error}"
        out["routes"] = [c.route.pac_spelling() for c in usable]
        out["refused"] = refusals
    if usable:
        out["dial"] = [
            {"route": c.route.pac_spelling(), "target": c.target, "audit_route": c.label}
            for c in usable
        ]
    unchecked = [*selection.unchecked, *notes]
    if unchecked:
        out["unchecked"] = unchecked
    if dns:
        out["dns"] = {name: list(addrs) for name, addrs in dns.items()}
    if any(c.route.kind != "DIRECT" for c in usable):
        out["failover"] = FAILOVER_NOTE
    return out


def explain(policy: Policy, dest_text: str, ip: str | None) -> Decision:
    """The decision for DEST (and the original destination IP, if known); see module doc.

    For a static policy; with a PAC decider use `explain_destination` and `with_note`.
    """
    dest, note = explain_destination(policy, dest_text, ip)
    decision = policy.decide_now(dest)
    if decision is None:
        raise TypeError("explain() needs a static policy; use explain_destination()")
    return with_note(decision, note)


def _parse_ip_option(text: str, option: str = "--ip") -> str:
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        addr = ipaddress.ip_address(candidate)
    except ValueError:
        addr = None
    if addr is None or "%" in candidate:
        raise ValueError(f"{option} {text!r} is not an IP address (no zone ids)")
    return str(unmap(addr))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port(text: str, whole: str) -> int:
    if not _PORT.fullmatch(text):
        raise ValueError(f"{whole!r}: port {text!r} is not a number (a port is required)")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{whole!r}: port {port} out of range (1-65535)")
    return port


def with_note(decision: Decision, note: str | None) -> Decision:
    """The decision with `note` appended to its reason (unchanged when there is none)."""
    if not note:
        return decision
    return dataclasses.replace(decision, reason=f"{decision.reason} ({note})")
