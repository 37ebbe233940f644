"""The values that flow through one decision: where a connection goes, and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pac.addr import format_hostport
from pac.routes import Route

Action = Literal["DIRECT", "PROXY", "REJECT"]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an intercepted connection was going.

    `ip` is the original destination (IPv4-mapped IPv6 already folded to IPv4); `hostname`
    is the canonical sniffed name (ports 80/443 only), or None when there is no usable name.
    `client_ip` is the container's own source address (what `myIpAddress()` reports).
    `explicit` is True for a request to the explicit proxy listener: the name (or IP) is
    the one the client asked for, `ip` is "" for a name (the proxy resolves it), and every
    port is decided by the policy (`transparentPorts` does not apply there).
    """

    ip: str
    port: int
    hostname: str | None = None
    client_ip: str | None = None
    explicit: bool = False

    @property
    def scheme(self) -> str:
        """`https` for port 443, else `http`."""
        return "https" if self.port == 443 else "http"

    @property
    def host(self) -> str:
        """The PAC `host` argument: the sniffed name, else the bare IP."""
        return self.hostname or self.ip

    @property
    def url(self) -> str:
        """The PAC `url` argument: `scheme://host:port`, IPv6 bracketed, never a path."""
        return f"{self.scheme}://{format_hostport(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one connection, and why.

    `routes` are tried in order while connecting fails; an empty tuple means REJECT.
    `name_based` is True when the decision rests on a sniffed name, so a DIRECT route
    must verify that the name really leads to the address (SNI/Host spoofing).
    `then_reject` is True when a PAC list ended in the reject sentinel: once the routes
    before it have failed, the client is rejected on the wire rather than just cut.
    `ip_bound` is True when the decision also rested on the destination IP being the name's
    address (a PAC read dnsResolve(host), answered with that IP): a DIRECT route then never
    connects to another address of the name, it refuses instead, and a proxy route sends
    the name only when that IP is one of its addresses.
    """

    action: Action
    routes: tuple[Route, ...]
    reason: str
    url: str
    host: str
    name_based: bool = False
    then_reject: bool = False
    ip_bound: bool = False

    def to_json(self) -> dict[str, object]:
        """The `airgap-proxy explain` shape."""
        return {
            "action": self.action,
            "routes": [r.pac_spelling() for r in self.routes],
            "url": self.url,
            "host": self.host,
            "reason": self.reason,
        }


class Decider(Protocol):
    """What decides connections, for every front door of the proxy.

    `decide_now` answers at once whenever it can (static rules, a cached PAC answer, a PAC
    that is not in force): most connections never wait. When it returns None, the answer
    needs an evaluation and `decide` awaits it. Two methods instead of one that returns
    "a decision or an awaitable", so no caller needs an isinstance check to find out which.
    """

    def decide_now(self, dest: Destination) -> Decision | None:
        """The decision when it is known without waiting; None: await `decide`."""
        ...

    async def decide(self, dest: Destination) -> Decision:
        """The decision, evaluating when `decide_now` could not answer."""
        ...
