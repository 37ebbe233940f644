"""proxy.route_health: failed proxies go last for a while; the table stays bounded."""

from __future__ import annotations

from pac.routes import DIRECT, Route
from proxy.route_health import BadProxies


def test_a_failed_proxy_is_tried_last() -> None:
    bad, good = Route("PROXY", "a.example", 3128), Route("PROXY", "b.example", 3128)
    health = BadProxies(ttl=60)
    health.failed(bad)
    assert health.order((bad, good, DIRECT)) == (good, DIRECT, bad)
    health.worked(bad)
    assert health.order((bad, good)) == (bad, good)


def test_failed_proxies_per_destination_do_not_grow_the_table_without_bound() -> None:
    """A PAC that builds the proxy's name from the destination host lets a client make a new
    failing proxy per connection: the table keeps the most recent ones only."""
    health = BadProxies(ttl=300)
    count = 20_000
    for i in range(count):
        health.failed(Route("PROXY", f"p{i}.example", 3128))
    assert len(health._until) <= 4096
    latest = Route("PROXY", f"p{count - 1}.example", 3128)
    assert health.order((latest, DIRECT)) == (DIRECT, latest), "the latest still counts"
