"""Where a DIRECT route that rests on a sniffed name may connect (SNI/Host spoofing rule).

The client chooses the name; the proxy resolves it in its own network namespace. An address
of the name that is the proxy's own host (loopback, unspecified) must never be chosen in
place of the address the client dialled: that would open the proxy host's local services to
any container that names `localhost` (Docker's own example excludes it) or any allowed name
whose DNS answer is 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import pytest

from pac.routes import DIRECT, Route
from proxy.audit import ConnectionRecord
from proxy.connection import Intercepted, ProxyContext
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from rules.model import Decision, Destination

EVIL = "203.0.113.66"


class TableResolver(NameResolver):
    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.table = table

    async def _lookup(self, loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...]:
        return self.table.get(name, ())


def _connection(table: dict[str, tuple[str, ...]], ip: str, port: int, name: str) -> Intercepted:
    """A connection to `ip:port` that named `name`, whose resolver answers from `table`."""
    ctx = ProxyContext(
        decide=lambda d: None,  # type: ignore[arg-type,return-value]
        transparent_ports=range(1, 65536),
        connect=ConnectOptions(timeout=1),
        resolver=TableResolver(table),
    )
    conn = Intercepted(ctx)
    conn.record = ConnectionRecord("10.0.0.2", 40000)
    conn.dest = Destination(ip, port, name, "10.0.0.2")
    return conn


def _target(table: dict[str, tuple[str, ...]], name: str, ip: str = EVIL) -> str | None:
    async def run() -> str | None:
        conn = _connection(table, ip, 80, name)
        decision = Decision("DIRECT", (DIRECT,), "test", conn.dest.url, name, name_based=True)
        target, _why = await conn._direct_target(decision)
        return target

    return asyncio.run(run())


@pytest.mark.parametrize(
    "addrs",
    [
        ("127.0.0.1", "::1"),
        ("127.0.0.53",),
        ("::1",),
        ("0.0.0.0",),  # connect() to it reaches the local host
        ("::",),
    ],
)
def test_a_name_is_never_followed_to_the_proxy_host_itself(addrs: tuple[str, ...]) -> None:
    assert _target({"localhost": addrs}, "localhost") is None


def test_the_proxy_host_addresses_of_a_name_are_skipped_not_the_others() -> None:
    table = {"mixed.example": ("127.0.0.1", "198.51.100.7")}
    assert _target(table, "mixed.example") == "198.51.100.7"


def test_the_dialled_address_and_ordinary_substitutes_are_unchanged() -> None:
    table = {"allowed.example": ("203.0.113.10",), "rr.example": ("203.0.113.11", EVIL)}
    assert _target(table, "allowed.example") == "203.0.113.10", "spoofed: the name's address"
    assert _target(table, "rr.example") == EVIL, "the dialled address is one of the name's"


# A PAC decision that read dnsResolve(host) was answered with the dialled address, so it was
# made about that address. Through a proxy route the upstream resolves what it is sent: the
# name must not take the connection to an address the script never judged.


def _proxy_target(table: dict[str, tuple[str, ...]], name: str, ip: str) -> str | None:
    async def run() -> str | None:
        conn = _connection(table, ip, 443, name)
        route = Route("PROXY", "gw.example", 3128)
        decision = Decision(
            "PROXY", (route,), "test", conn.dest.url, name, name_based=True, ip_bound=True
        )
        target, _why = await conn._proxy_target(route, decision)
        return target

    return asyncio.run(run())


def test_an_ip_bound_proxy_route_never_carries_a_name_the_dialled_ip_is_not_of() -> None:
    table = {"github.com": ("140.82.112.3",)}
    assert _proxy_target(table, "github.com", "10.0.0.5") is None, "spoof: refused"


def test_an_ip_bound_proxy_route_carries_a_verified_name() -> None:
    table = {"github.com": ("140.82.112.3", "140.82.112.4")}
    assert _proxy_target(table, "github.com", "140.82.112.4") == "github.com"


def test_an_ip_bound_proxy_route_carries_the_dialled_ip_when_the_name_cannot_be_checked() -> None:
    assert _proxy_target({}, "github.com", "10.0.0.5") == "10.0.0.5", "never the unchecked name"
