"""How the explicit proxy decides one request: the policy on the requested name (or IP).

Shared by the listener (`proxy.explicit`) and `airgap-proxy explain --explicit`, so both
give the same answer. The destination is the name the client asked for, with no address
(`Destination.ip` ""), on any port (`Destination.explicit`: `transparentPorts` does not
apply). A PAC is called as on the transparent path (`scheme://host:port`, host); its DNS
helpers look the name up for real. Static IP and CIDR bypass entries are matched against
the addresses the proxy resolves for the name: the first address one matches is decided,
and the connection then goes to that address (`Explicit.pinned`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from proxy.resolver import NameResolver
from rules.model import Decider, Decision, Destination

log = logging.getLogger("airgap.proxy")


@dataclass(frozen=True, slots=True)
class Explicit:
    """A decision, and the address an IP bypass entry matched (DIRECT dials only it)."""

    decision: Decision
    pinned: str | None = None


def explicit_destination(host: str, port: int, is_ip: bool, client_ip: str | None) -> Destination:
    """The Destination of a request for `host:port` (canonical name or IP)."""
    if is_ip:
        return Destination(ip=host, port=port, client_ip=client_ip, explicit=True)
    return Destination(ip="", port=port, hostname=host, client_ip=client_ip, explicit=True)


async def decide_explicit(decider: Decider, resolver: NameResolver, dest: Destination) -> Explicit:
    """The decision for one explicit request (see the module doc); never raises: a policy
    failure is a REJECT (fail closed)."""
    name = dest.hostname
    if name is not None and getattr(decider, "matches_resolved_addresses", False):
        for addr in await resolver.resolve(name):
            decision = await _decide(decider, dataclasses.replace(dest, ip=addr))
            if decision.action == "DIRECT" and not decision.name_based:
                return Explicit(decision, addr)  # an IP or CIDR entry matched this address
    return Explicit(await _decide(decider, dest))


async def _decide(decider: Decider, dest: Destination) -> Decision:
    try:
        decision = decider.decide_now(dest)
        if decision is None:
            decision = await decider.decide(dest)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # fail closed on any policy failure
        log.error("policy failed for %s", dest.url, exc_info=exc)
        return Decision("REJECT", (), f"policy error: {exc}", dest.url, dest.host)
    return decision
