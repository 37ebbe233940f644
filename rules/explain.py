"""`airgap-proxy explain`: the decision for one destination, built as the proxy would build it.

No network and no name-to-IP verification: it answers "what would `Policy.decide` say",
using the very same `Policy.decide` the running proxy calls.

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

from rules.model import Decision, Destination
from rules.names import canonical_hostname
from rules.policy import Policy

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
    policy: Policy, dest_text: str, ip: str | None
) -> tuple[Destination, str | None]:
    """The Destination the proxy would build for DEST (and --ip), plus a note for the reason.

    Split from `explain` so that a caller with an asynchronous (PAC) decider can decide the
    same Destination itself.
    """
    host, port = parse_dest(dest_text)
    addr = _parse_ip_option(ip) if ip is not None else None
    if _is_ip(host):
        if addr is not None and addr != host:
            raise ValueError(f"--ip {ip} disagrees with the address in DEST ({host})")
        return Destination(ip=host, port=port), None
    if port not in policy.transparent_ports:
        return Destination(ip=addr or "", port=port, hostname=host), None
    if port in SNIFF_PORTS:
        dest = Destination(ip=addr or "", port=port, hostname=host)
        if addr is None and policy.depends_on_ip:
            return dest, "no --ip given: IP and CIDR entries not checked"
        return dest, None
    if addr is None:
        raise ValueError(
            f"{dest_text!r}: the proxy sees no host name on port {port} (names are sniffed on"
            " ports 80 and 443 only); give the destination address with --ip"
        )
    return Destination(ip=addr, port=port), (
        f"name {host!r} not visible on port {port}: decided on the IP"
    )


def explain(policy: Policy, dest_text: str, ip: str | None) -> Decision:
    """The decision for DEST (and the original destination IP, if known); see module doc.

    For a static policy; with a PAC decider use `explain_destination` and `with_note`.
    """
    dest, note = explain_destination(policy, dest_text, ip)
    decision = policy.decide(dest)
    if not isinstance(decision, Decision):
        raise TypeError("explain() needs a synchronous policy; use explain_destination()")
    return with_note(decision, note)


def _parse_ip_option(text: str) -> str:
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        addr = ipaddress.ip_address(candidate)
    except ValueError:
        addr = None
    if addr is None or "%" in candidate:
        raise ValueError(f"--ip {text!r} is not an IP address (no zone ids)")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


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
