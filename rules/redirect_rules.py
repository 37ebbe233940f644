"""The redirect and leak-guard rules, as text for iptables-restore or nft; no I/O here.

A missed port, a missed address family or a loop in these rules is a silent hole in an air
gap, so the rule set is built once, as data (`Rule`), from one `FirewallSpec`, and two small
renderers spell the same rules for iptables-restore and for nft. Everything that touches the
system (running the tools, reading the current rules, resolving names, looking up uids)
lives in `proxy/firewall_apply.py`; this module only turns values into text, so every rule
is unit-tested without a network.

Shape of what `apply` installs, per address family:

- nat OUTPUT -> `AIRGAP-NAT-OUT`: loopback destinations, the proxy's mark and any excluded uid
  RETURN; TCP to a transparent port is REDIRECTed to the proxy's port.
- nat PREROUTING -> `AIRGAP-NAT-PRE` (only with `--from-interface`): the same redirect for
  TCP arriving on those interfaces.
- filter OUTPUT -> `AIRGAP-GUARD-OUT` and FORWARD -> `AIRGAP-GUARD-FWD` (the leak guard, and
  the IPv6 drop mode, and the lockdown): see `_guard_rules`.
- filter INPUT -> `AIRGAP-GUARD-IN` (only with `--from-interface` and an upstream proxy on
  this host): forwarded clients may not reach that upstream on this host's addresses.

The chains are our own, so `remove` deletes exactly what `apply` added, and `apply` on top of
an earlier apply replaces it (no duplicates). Every jump is inserted at the top of its
built-in chain: a rule that someone else put first must not be able to ACCEPT around us.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pac.addr import unmap

#: The firewall mark that `airgap-proxy run --mark` puts on the proxy's upstream sockets.
#: Setting a mark needs CAP_NET_ADMIN or (Linux 5.17+) CAP_NET_RAW; Docker grants NET_RAW by
#: default, so application containers sharing the namespace must drop both.
DEFAULT_MARK = 0x4147
#: `airgap-proxy run` listens on 127.0.0.1:15001 and [::1]:15001 by default.
DEFAULT_PROXY_PORT = 15001

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
#: `redirect`: IPv6 gets the same redirect as IPv4; `drop`: every IPv6 packet that would
#: leave is rejected (for namespaces without IPv6 nat); `absent`: the kernel has no IPv6.
IPv6Mode = Literal["redirect", "drop", "absent"]

NFT_TABLE = "airgap_proxy"
CHAIN_PREFIX = "AIRGAP-"
NAT_OUT = "AIRGAP-NAT-OUT"
NAT_PRE = "AIRGAP-NAT-PRE"
GUARD_OUT = "AIRGAP-GUARD-OUT"
GUARD_FWD = "AIRGAP-GUARD-FWD"
GUARD_IN = "AIRGAP-GUARD-IN"

#: Our chain -> (table, the built-in chain that jumps to it).
CHAINS: dict[str, tuple[str, str]] = {
    GUARD_OUT: ("filter", "OUTPUT"),
    GUARD_FWD: ("filter", "FORWARD"),
    GUARD_IN: ("filter", "INPUT"),
    NAT_OUT: ("nat", "OUTPUT"),
    NAT_PRE: ("nat", "PREROUTING"),
}
#: nft spelling of each chain: (name, hook type, hook, priority). The guard runs before
#: iptables-nft's filter (0) and our nat before its nat (-100), so ours decide first.
_NFT_CHAINS: dict[str, tuple[str, str, str, int]] = {
    GUARD_OUT: ("guard_output", "filter", "output", -10),
    GUARD_FWD: ("guard_forward", "filter", "forward", -10),
    GUARD_IN: ("guard_input", "filter", "input", -10),
    NAT_OUT: ("nat_output", "nat", "output", -110),
    NAT_PRE: ("nat_prerouting", "nat", "prerouting", -110),
}

_LOOPBACK: dict[Family, str] = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}
#: ICMPv6 that IPv6 itself needs on the link (neighbour discovery, router solicitation,
#: multicast listener reports). ICMP errors about existing flows pass as RELATED; echo
#: requests do not pass (ping is a tunnel too).
_ICMPV6_LINK = (
    ("nd-neighbor-solicit", "neighbour-solicitation"),
    ("nd-neighbor-advert", "neighbour-advertisement"),
    ("nd-router-solicit", "router-solicitation"),
    ("mld-listener-report", "131"),
    ("mld2-listener-report", "143"),
)
_IFNAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,15}$")
#: iptables multiport takes at most 15 ports, a range counting as two.
_MULTIPORT_SLOTS = 15


class FirewallError(ValueError):
    """A spec that cannot be turned into safe rules (never silently corrected)."""


PortRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class FirewallSpec:
    """Everything the rules depend on, already resolved to numbers and addresses.

    `ports` are the transparent ports as inclusive ranges, or None for every TCP port
    (`transparentPorts: "*"`); an empty tuple redirects nothing. `upstreams` are the
    configured upstream proxies as (IP, port): applications may not reach them directly.
    `dns_servers` are the only UDP destinations the guard lets through (port 53).
    `local_addresses` are this namespace's own addresses when the rules were made: an
    upstream on one of them (or on a loopback or unspecified address) is on this host,
    where a server bound to the wildcard address answers on every local address of both
    families, so its port is guarded on all of them (`local_upstream_ports`) instead of on
    the one address configured.
    `lockdown` replaces everything with reject-all (what a dead proxy leaves behind).
    `forwarded_only` polices only what arrives on `from_interfaces` (a node's pod bridge):
    this host's own traffic, the proxy's included, is neither redirected nor guarded, so
    nothing of the host's (its kubelet, its overlay tunnels) goes through the proxy.
    """

    ports: PortRanges | None = ((80, 80), (443, 443))
    proxy_port: int = DEFAULT_PROXY_PORT
    mark: int = DEFAULT_MARK
    exclude_uids: tuple[int, ...] = ()
    from_interfaces: tuple[str, ...] = ()
    block_unredirected: bool = False
    dns_servers: tuple[str, ...] = ()
    upstreams: tuple[tuple[str, int], ...] = ()
    local_addresses: tuple[str, ...] = ()
    ipv6: IPv6Mode = "redirect"
    lockdown: bool = False
    forwarded_only: bool = False

    def __post_init__(self) -> None:
        if self.forwarded_only and not self.from_interfaces:
            raise FirewallError("forwarded-only rules need at least one --from-interface")
        _check_port(self.proxy_port, "proxy port")
        if self.ports is not None:
            for lo, hi in self.ports:
                _check_port(lo, "transparent port")
                _check_port(hi, "transparent port")
                if lo > hi:
                    raise FirewallError(f"empty port range {lo}-{hi}")
        # Mark 0 is what every unmarked packet carries: it would exempt everything.
        if not 0 < self.mark <= 0xFFFFFFFF:
            raise FirewallError(f"mark must be 1..0xffffffff, not {self.mark:#x}")
        for uid in self.exclude_uids:
            if not 0 <= uid < 2**32 - 1:
                raise FirewallError(f"bad uid {uid}")
        for name in self.from_interfaces:
            if not _IFNAME.match(name) or name == "lo":
                raise FirewallError(f"bad interface name {name!r}")
        for ip in self.dns_servers:
            _check_ip(ip, "DNS server")
        for ip in self.local_addresses:
            _check_ip(ip, "local address")
        for ip, port in self.upstreams:
            _check_ip(ip, "upstream proxy")
            _check_port(port, "upstream proxy port")
        if self.proxy_port in self.local_upstream_ports:
            # Its guard would reject every redirected connection (they arrive on that port).
            raise FirewallError(
                f"an upstream proxy on this host uses port {self.proxy_port}, the proxy's own"
                " port: give one of them another port"
            )
        if self.ipv6 not in ("redirect", "drop", "absent"):
            raise FirewallError(f"bad ipv6 mode {self.ipv6!r}")

    @property
    def guarded(self) -> bool:
        """Whether filter chains are needed at all."""
        return self.block_unredirected or self.lockdown or self.ipv6 == "drop"

    def is_local(self, ip: str) -> bool:
        """Whether a connection to `ip` stays on this host (a loopback, unspecified or own
        address): then any local address reaches the same listener."""
        addr = ipaddress.ip_address(_plain(ip))
        if addr.is_loopback or addr.is_unspecified:
            return True
        if addr.version == 4 and addr in ipaddress.ip_network("0.0.0.0/8"):
            return True  # Linux connects 0.x to this host, as it does 0.0.0.0
        return str(addr) in {_plain(a) for a in self.local_addresses}

    @property
    def local_upstream_ports(self) -> tuple[int, ...]:
        """The ports of the upstream proxies on this host, guarded on every local address."""
        return tuple(sorted({port for ip, port in self.upstreams if self.is_local(ip)}))

    @property
    def remote_upstreams(self) -> tuple[tuple[str, int], ...]:
        """The upstream proxies elsewhere, guarded by their exact address and port."""
        return tuple((ip, port) for ip, port in self.upstreams if not self.is_local(ip))

    def as_lockdown(self) -> FirewallSpec:
        """The same spec, reject-all."""
        return replace(self, lockdown=True)


def _check_port(port: int, what: str) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise FirewallError(f"bad {what} {port!r}")


def _check_ip(ip: str, what: str) -> None:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise FirewallError(f"{what} must be an IP address, not {ip!r}") from None


def family_of(ip: str) -> Family:
    """`ipv4` or `ipv6`; IPv4-mapped IPv6 counts as IPv4 (it is IPv4 on the wire)."""
    return "ipv4" if unmap(ipaddress.ip_address(ip)).version == 4 else "ipv6"


def _plain(ip: str) -> str:
    return str(unmap(ipaddress.ip_address(ip)))


Verdict = Literal["return", "reject", "redirect"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, in terms both backends can spell. Unset fields match everything.

    `tcp_ports` is None for "not a TCP port match", `()` for every TCP port. A `reject`
    resets TCP and answers anything else with an administratively-prohibited ICMP error.
    """

    verdict: Verdict
    comment: str
    iif: str | None = None
    local_dst: bool = False
    daddr: str | None = None
    mark: int | None = None
    uid: int | None = None
    reply_direction: bool = False
    related_icmp: bool = False
    orig_dst: tuple[str, int] | None = None
    tcp_ports: PortRanges | None = None
    any_tcp: bool = False
    udp_port: int | None = None
    icmpv6_types: tuple[tuple[str, str], ...] = ()
    redirect_port: int | None = None


def chain_rules(spec: FirewallSpec, family: Family) -> dict[str, list[Rule]]:
    """Our chains for one family, in install order (guards first), each with its rules."""
    if family == "ipv6" and spec.ipv6 == "absent":
        return {}
    chains: dict[str, list[Rule]] = {}
    if spec.guarded:
        if not spec.forwarded_only:
            chains[GUARD_OUT] = _guard_rules(spec, family, forward=False)
        if spec.from_interfaces:
            chains[GUARD_FWD] = _guard_rules(spec, family, forward=True)
            chains[GUARD_IN] = _guard_input_rules(spec, family)
        # `--ipv6 drop` alone guards IPv6 only: no empty IPv4 chains.
        chains = {name: rules for name, rules in chains.items() if rules}
    redirecting = not spec.lockdown and not (family == "ipv6" and spec.ipv6 == "drop")
    if redirecting:
        if not spec.forwarded_only:
            chains[NAT_OUT] = _nat_output_rules(spec, family)
        if spec.from_interfaces:
            chains[NAT_PRE] = _nat_prerouting_rules(spec)
    return chains


def _exemptions(spec: FirewallSpec) -> list[Rule]:
    """The proxy's own traffic: its mark, and any uid the user chose to trust."""
    rules = [Rule("return", "proxy upstream traffic by mark", mark=spec.mark)]
    rules += [Rule("return", f"excluded uid {uid}", uid=uid) for uid in spec.exclude_uids]
    return rules


def _redirect(spec: FirewallSpec, comment: str, iif: str | None = None) -> list[Rule]:
    if spec.ports == ():
        return []
    if spec.ports is None:
        return [Rule("redirect", comment, iif=iif, any_tcp=True, redirect_port=spec.proxy_port)]
    return [
        Rule("redirect", comment, iif=iif, tcp_ports=chunk, redirect_port=spec.proxy_port)
        for chunk in multiport_chunks(spec.ports)
    ]


def _nat_output_rules(spec: FirewallSpec, family: Family) -> list[Rule]:
    # Loopback by destination, not `-o lo`: after routing, every local address is `-o lo`,
    # and connections to the host's own addresses must still be seen by the proxy.
    rules = [Rule("return", "loopback stays local", daddr=_LOOPBACK[family])]
    rules += _local_upstream_unredirected(spec, None)
    rules += _exemptions(spec)
    rules += _redirect(spec, "transparent ports to the proxy")
    return rules


def _nat_prerouting_rules(spec: FirewallSpec) -> list[Rule]:
    rules: list[Rule] = []
    for name in spec.from_interfaces:
        rules += _local_upstream_unredirected(spec, name)
        rules += _redirect(spec, f"transparent ports from {name} to the proxy", iif=name)
    return rules


def _redirects_port(spec: FirewallSpec, port: int) -> bool:
    return spec.ports is None or any(lo <= port <= hi for lo, hi in spec.ports)


def _port_chunks(ports: Iterable[int]) -> list[PortRanges]:
    return multiport_chunks(tuple((p, p) for p in ports))


def _local_upstream_unredirected(spec: FirewallSpec, iif: str | None) -> list[Rule]:
    """A connection to this host's own address on a local upstream's (transparent) port is
    not redirected, so the guard rejects it: redirected, it would reach the proxy, which
    could connect it to the upstream on the client's behalf (its own traffic is exempt)."""
    if not spec.block_unredirected:
        return []
    ports = [p for p in spec.local_upstream_ports if _redirects_port(spec, p)]
    return [
        Rule(
            "return",
            "upstream proxy on this host: left to the guard",
            iif=iif,
            local_dst=True,
            tcp_ports=chunk,
        )
        for chunk in _port_chunks(ports)
    ]


def _local_upstream_rejects(spec: FirewallSpec, family: Family, iif: str | None) -> list[Rule]:
    """An upstream proxy on this host, on every local address of this family.

    A server bound to the wildcard address (tinyproxy's and microsocks' default) answers on
    127.0.0.2, on ::1 (and over IPv4 when bound to `[::]`) and on every interface address:
    matching the one configured address would leave all the others open. The port is
    rejected by destination type (every address this host has now or gets later), and on
    loopback by prefix as well, which needs no route lookup.
    """
    rules: list[Rule] = []
    for chunk in _port_chunks(spec.local_upstream_ports):
        comment = "only the proxy may use the upstream proxy on this host"
        rules.append(Rule("reject", comment, iif=iif, daddr=_LOOPBACK[family], tcp_ports=chunk))
        rules.append(Rule("reject", comment, iif=iif, local_dst=True, tcp_ports=chunk))
    return rules


def _guard_input_rules(spec: FirewallSpec, family: Family) -> list[Rule]:
    """Clients behind `--from-interface` reach this host's own addresses through INPUT, not
    FORWARD: an upstream proxy on this host is rejected there too."""
    if spec.lockdown or not spec.local_upstream_ports:
        return []
    if not spec.block_unredirected and not (family == "ipv6" and spec.ipv6 == "drop"):
        return []
    rules: list[Rule] = []
    for name in spec.from_interfaces:
        rules.append(
            Rule("return", "replies to outbound connections", iif=name, reply_direction=True)
        )
        for chunk in _port_chunks(spec.local_upstream_ports):
            comment = "only the proxy may use the upstream proxy on this host"
            rules.append(Rule("reject", comment, iif=name, tcp_ports=chunk))
    return rules


def _guard_rules(spec: FirewallSpec, family: Family, *, forward: bool) -> list[Rule]:
    """The leak guard, in order; the first match decides.

    1. the proxy's own traffic (mark / uid) passes (OUTPUT only);
    2. replies within connections that were opened *to* us pass (we serve, we do not egress);
    3. applications may not reach the upstream proxies themselves: a remote one matched on
       the conntrack original destination (so a redirected connection to it is caught
       too), one on this host by its port on every local address of both families (see
       `_local_upstream_rejects`; the redirect leaves those connections alone);
    4. what stays on this host passes: a local destination address, which includes every
       redirected packet (its destination is already the proxy's). Not `-o lo`: the
       filter hook still sees the interface chosen before nat rerouted the packet;
    5. TCP to a transparent port that reaches here was not redirected (a flow older than
       the rules): reset. Other TCP ports are left alone, as documented;
    6. UDP only as DNS to the configured resolvers; ICMP errors about known flows, and the
       ICMPv6 that IPv6 needs on the link; everything else is rejected.

    In lockdown only step 4 remains before the reject. With `--ipv6 drop`, IPv6 keeps 1-4
    and the link ICMPv6, then rejects everything.
    """
    ifaces: Sequence[str | None] = spec.from_interfaces if forward else (None,)
    rules: list[Rule] = []
    for iif in ifaces:
        rules += _guard_for(spec, family, iif, forward=forward)
    return rules


def _guard_for(spec: FirewallSpec, family: Family, iif: str | None, *, forward: bool) -> list[Rule]:
    def r(verdict: Verdict, comment: str, **kw: object) -> Rule:
        return Rule(verdict, comment, iif=iif, **kw)  # type: ignore[arg-type]

    if spec.lockdown:
        local = [] if forward else [r("return", "stays on this host", local_dst=True)]
        return [*local, r("reject", "lockdown")]
    rules: list[Rule] = []
    if not forward:
        rules += _exemptions(spec)
    rules.append(r("return", "replies to inbound connections", reply_direction=True))
    for ip, port in spec.remote_upstreams:
        if family_of(ip) == family:
            rules.append(
                r("reject", "only the proxy may use the upstream proxy", orig_dst=(ip, port))
            )
    if not forward:
        # Forwarded packets never go to this host's own addresses (GUARD_IN has those).
        rules += _local_upstream_rejects(spec, family, iif)
        rules.append(r("return", "stays on this host", local_dst=True))
    if family == "ipv6" and spec.ipv6 == "drop":
        if not forward:
            rules.append(r("return", "IPv6 link needs", icmpv6_types=_ICMPV6_LINK))
        rules.append(r("reject", "IPv6 not redirected here"))
        return rules
    if not spec.block_unredirected:
        # Only here because of --ipv6 drop; IPv4 is not guarded.
        return []
    if spec.ports is None:
        rules.append(r("reject", "TCP that was not redirected", any_tcp=True))
    else:
        for chunk in multiport_chunks(spec.ports):
            rules.append(r("reject", "transparent port, not redirected", tcp_ports=chunk))
    rules.append(r("return", "other TCP ports are left alone", any_tcp=True))
    for ip in spec.dns_servers:
        if family_of(ip) == family:
            rules.append(r("return", "DNS to a configured resolver", daddr=_plain(ip), udp_port=53))
    rules.append(r("return", "ICMP errors about known flows", related_icmp=True))
    if family == "ipv6" and not forward:
        rules.append(r("return", "IPv6 link needs", icmpv6_types=_ICMPV6_LINK))
    rules.append(r("reject", "UDP and other protocols"))
    return rules


def multiport_chunks(ports: PortRanges) -> list[PortRanges]:
    """Split port ranges into groups that fit one iptables multiport match (15 slots)."""
    chunks: list[PortRanges] = []
    current: list[tuple[int, int]] = []
    used = 0
    for lo, hi in _merge(ports):
        cost = 1 if lo == hi else 2
        if used + cost > _MULTIPORT_SLOTS:
            chunks.append(tuple(current))
            current, used = [], 0
        current.append((lo, hi))
        used += cost
    if current:
        chunks.append(tuple(current))
    return chunks


def _merge(ports: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ports):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


# ---------------------------------------------------------------- iptables-restore


def iptables_rule(rule: Rule, family: Family) -> str:
    """One rule as iptables arguments (without `-A CHAIN`)."""
    icmp = "icmp" if family == "ipv4" else "ipv6-icmp"
    parts: list[str] = []
    if rule.iif:
        parts += ["-i", rule.iif]
    if rule.local_dst:
        parts += ["-m", "addrtype", "--dst-type", "LOCAL"]
    if rule.daddr:
        parts += ["-d", rule.daddr]
    if rule.tcp_ports is not None:
        ports = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in rule.tcp_ports)
        parts += ["-p", "tcp", "-m", "multiport", "--dports", ports]
    elif rule.any_tcp or rule.orig_dst:
        parts += ["-p", "tcp"]
    elif rule.udp_port is not None:
        parts += ["-p", "udp", "--dport", str(rule.udp_port)]
    elif rule.related_icmp or rule.icmpv6_types:
        parts += ["-p", icmp]
    if rule.mark is not None:
        parts += ["-m", "mark", "--mark", f"{rule.mark:#x}"]
    if rule.uid is not None:
        parts += ["-m", "owner", "--uid-owner", str(rule.uid)]
    if rule.reply_direction:
        parts += ["-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY"]
    if rule.related_icmp:
        parts += ["-m", "conntrack", "--ctstate", "RELATED"]
    if rule.orig_dst:
        ip, port = rule.orig_dst
        parts += ["-m", "conntrack", "--ctorigdst", _plain(ip), "--ctorigdstport", str(port)]
    parts += ["-m", "comment", "--comment", f'"{rule.comment}"']
    if rule.verdict == "return":
        parts += ["-j", "RETURN"]
    elif rule.verdict == "redirect":
        parts += ["-j", "REDIRECT", "--to-ports", str(rule.redirect_port)]
    return " ".join(parts)


def _iptables_lines(rule: Rule, chain: str, family: Family) -> list[str]:
    """`-A` lines for a rule; a reject becomes a TCP reset plus an ICMP reject."""
    base = iptables_rule(rule, family)
    if rule.verdict != "reject":
        return [f"-A {chain} {base}"]
    prohibited = "icmp-admin-prohibited" if family == "ipv4" else "icmp6-adm-prohibited"
    if rule.icmpv6_types:
        raise FirewallError("internal: reject with an ICMPv6 type match")
    if rule.tcp_ports is not None or rule.any_tcp or rule.orig_dst:
        return [f"-A {chain} {base} -j REJECT --reject-with tcp-reset"]
    tcp = iptables_rule(replace(rule, any_tcp=True), family)
    return [
        f"-A {chain} {tcp} -j REJECT --reject-with tcp-reset",
        f"-A {chain} {base} -j REJECT --reject-with {prohibited}",
    ]


def _icmpv6_expand(rule: Rule) -> list[Rule]:
    """iptables matches one ICMPv6 type per rule."""
    if not rule.icmpv6_types:
        return [rule]
    return [replace(rule, icmpv6_types=(t,)) for t in rule.icmpv6_types]


def _iptables_body(rule: Rule, chain: str, family: Family) -> list[str]:
    lines: list[str] = []
    for one in _icmpv6_expand(rule):
        text = _iptables_lines(one, chain, family)
        if one.icmpv6_types:
            t = one.icmpv6_types[0][1]
            text = [
                line.replace("-p ipv6-icmp", f"-p ipv6-icmp -m icmp6 --icmpv6-type {t}", 1)
                for line in text
            ]
        lines += text
    return lines


@dataclass(frozen=True, slots=True)
class SavedState:
    """What of ours is installed now, read from `iptables-save` text.

    `chains` per table: our chains that exist; `jumps` per table: (built-in chain, rule
    spec) of every rule that jumps to one of our chains, exactly as iptables-save prints it.
    """

    chains: dict[str, set[str]]
    jumps: dict[str, list[tuple[str, str]]]

    @property
    def empty(self) -> bool:
        """Whether nothing of ours is installed."""
        return not any(self.chains.values()) and not any(self.jumps.values())


def parse_saved(text: str) -> SavedState:
    """Find our chains and the jumps into them in `iptables-save` output."""
    chains: dict[str, set[str]] = {}
    jumps: dict[str, list[tuple[str, str]]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":" + CHAIN_PREFIX):
            chains.setdefault(table, set()).add(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, spec = line.split(" ", 2)
            if chain.startswith(CHAIN_PREFIX):
                continue
            target = re.search(r"(?:^| )-[jg] (\S+)", spec)
            if target and target.group(1).startswith(CHAIN_PREFIX):
                jumps.setdefault(table, []).append((chain, spec))
    return SavedState(chains, jumps)


def iptables_restore(spec: FirewallSpec | None, family: Family, current: SavedState) -> str:
    """iptables-restore --noflush input that takes `current` to `spec` (None: remove).

    Within one table it is one transaction: jumps into our chains are deleted, our chains
    are flushed (declaring a chain in --noflush mode flushes it) or created, refilled, and
    jumped to again from the top of the built-in chain; chains no longer wanted are
    deleted. The filter table (the guard) is committed before nat (the redirect) when
    applying, and after it when removing, so there is never a redirect without its guard.
    Tables we have nothing in are not touched (so `remove` leaves no trace).
    """
    wanted = chain_rules(spec, family) if spec is not None else {}
    tables = ("filter", "nat") if spec is not None else ("nat", "filter")
    out: list[str] = []
    for table in tables:
        have = sorted(current.chains.get(table, set()))
        jumps = current.jumps.get(table, [])
        body = _table_body(table, wanted, have, family)
        if not body and not jumps:
            continue
        out.append(f"*{table}")
        out += [f"-D {chain} {rule}" for chain, rule in jumps]
        out += body
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def _table_body(
    table: str, wanted: dict[str, list[Rule]], remove: Sequence[str], family: Family
) -> list[str]:
    """After the jumps into our chains are gone: declare (flush) the wanted chains, delete
    the `remove` ones no longer wanted, fill, and jump to each from the top."""
    want = [c for c in wanted if CHAINS[c][0] == table]
    out = [f":{chain} - [0:0]" for chain in want]
    for chain in remove:
        if chain not in want:
            out += [f":{chain} - [0:0]", f"-X {chain}"]
    for chain in want:
        for rule in wanted[chain]:
            out += _iptables_body(rule, chain, family)
    out += [f"-I {CHAINS[chain][1]} 1 -j {chain}" for chain in want]
    return out


#: Turns `iptables-save` output into `-D` lines for every jump into one of our chains (a
#: rule of a chain of ours is skipped): what `parse_saved` finds, done by the shell.
_DELETE_JUMPS = r"sed -n '/^-A AIRGAP-/d; /^-A .* -[jg] AIRGAP-/s/^-A /-D /p'"


def iptables_script(spec: FirewallSpec, families: Sequence[Family] = FAMILIES) -> str:
    """The shell commands that do what `apply` does, runnable as printed (`show`).

    They do not depend on what is installed when they are printed, so they can be run again
    and again (by hand, from a boot script) and never add a second jump: each table's
    transaction deletes the jumps into our chains that `iptables-save` shows *when it runs*,
    declares every chain of ours (creating or flushing it), deletes those not wanted, fills
    the rest and jumps to them from the top, as `apply` does. Guard before redirect.
    """
    blocks: list[str] = []
    for family in families:
        if family == "ipv6" and spec.ipv6 == "absent":
            continue
        wanted = chain_rules(spec, family)
        save = "iptables-save" if family == "ipv4" else "ip6tables-save"
        restore = "iptables-restore" if family == "ipv4" else "ip6tables-restore"
        for table in ("filter", "nat"):
            ours = [c for c, (t, _) in CHAINS.items() if t == table]
            body = _table_body(table, wanted, ours, family)
            text = "\n".join(body)
            blocks.append(
                f"{{ echo '*{table}'\n"
                f"  {save} -t {table} 2>/dev/null | {_DELETE_JUMPS}\n"
                f"  cat <<'EOF'\n{text}\nCOMMIT\nEOF\n"
                f"}} | {restore} --noflush\n"
            )
    return "".join(blocks)


# ---------------------------------------------------------------- nft


def nft_rule(rule: Rule, family: Family) -> list[str]:
    """One rule as nft statements (a reject may need two: TCP reset, ICMP otherwise)."""
    ip = "ip" if family == "ipv4" else "ip6"
    icmp = "icmp" if family == "ipv4" else "ipv6-icmp"
    parts = [f"meta nfproto {family}"]
    if rule.iif:
        parts.append(f'iifname "{rule.iif}"')
    if rule.local_dst:
        parts.append("fib daddr type local")
    if rule.daddr:
        parts.append(f"{ip} daddr {rule.daddr}")
    if rule.mark is not None:
        parts.append(f"meta mark {rule.mark:#010x}")
    if rule.uid is not None:
        parts.append(f"meta skuid {rule.uid}")
    if rule.reply_direction:
        parts.append("ct state established ct direction reply")
    if rule.related_icmp:
        parts.append(f"ct state related meta l4proto {icmp}")
    if rule.orig_dst:
        addr, port = rule.orig_dst
        parts.append(f"meta l4proto tcp ct original {ip} daddr {_plain(addr)}")
        parts.append(f"ct original proto-dst {port}")
    if rule.tcp_ports is not None:
        ports = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in rule.tcp_ports)
        parts.append(f"tcp dport {{ {ports} }}")
    elif rule.any_tcp:
        parts.append("meta l4proto tcp")
    if rule.udp_port is not None:
        parts.append(f"udp dport {rule.udp_port}")
    if rule.icmpv6_types:
        parts.append("icmpv6 type { " + ", ".join(t for t, _ in rule.icmpv6_types) + " }")
    match = " ".join(parts)
    comment = f'comment "{rule.comment}"'
    if rule.verdict == "return":
        return [f"{match} return {comment}"]
    if rule.verdict == "redirect":
        return [f"{match} redirect to :{rule.redirect_port} {comment}"]
    if rule.tcp_ports is not None or rule.any_tcp or rule.orig_dst:
        return [f"{match} reject with tcp reset {comment}"]
    return [
        f"{match} meta l4proto tcp reject with tcp reset {comment}",
        f"{match} reject with icmpx type admin-prohibited {comment}",
    ]


def nft_ruleset(spec: FirewallSpec | None) -> str:
    """`nft -f` input that replaces our table with `spec` (None: deletes it), atomically.

    Declaring the table first makes the delete safe when it does not exist yet; the whole
    file is one kernel transaction, guard and redirect together.
    """
    head = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    if spec is None:
        return head
    per_family = {family: chain_rules(spec, family) for family in FAMILIES}
    lines = [f"table inet {NFT_TABLE} {{"]
    for chain, (name, kind, hook, prio) in _NFT_CHAINS.items():
        body = [
            stmt
            for family in FAMILIES
            for rule in per_family[family].get(chain, [])
            for stmt in nft_rule(rule, family)
        ]
        if not any(chain in per_family[f] for f in FAMILIES):
            continue
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\ttype {kind} hook {hook} priority {prio}; policy accept;")
        lines += [f"\t\t{stmt}" for stmt in body]
        lines.append("\t}")
    lines.append("}")
    return head + "\n".join(lines) + "\n"


def nft_script(spec: FirewallSpec | None) -> str:
    """The shell command `apply`/`remove` run with the nft backend, runnable as printed."""
    return f"nft -f - <<'EOF'\n{nft_ruleset(spec)}EOF\n"


# ---------------------------------------------------------------- inputs


def resolvers_from_resolv_conf(text: str) -> tuple[str, ...]:
    """The DNS servers a container uses, from /etc/resolv.conf text.

    Docker's embedded resolver (127.0.0.11) forwards from inside the container's namespace
    to the servers it lists in an `# ExtServers: [...]` comment, so those count too
    (`host(...)` entries are reached from the host's namespace and need nothing here).
    Loopback servers are dropped: loopback is never guarded.
    """
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
        elif line.startswith("# ExtServers:"):
            inner = line.split(":", 1)[1].strip().strip("[]")
            found += [w for w in inner.split() if not w.startswith("host(")]
    out: list[str] = []
    for entry in found:
        ip = entry.split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if not addr.is_loopback and str(addr) not in out:
            out.append(str(addr))
    return tuple(out)
