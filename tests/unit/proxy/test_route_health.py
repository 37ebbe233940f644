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


def test_a_proxy_turning_bad_or_good_is_told_once_and_notes_from_elsewhere_are_not() -> None:
    """What a worker shares with the others: the transitions it saw itself, not each
    failure again, and never a note it was sent (that would echo between workers)."""
    told: list[tuple[str, str, int, float]] = []
    health = BadProxies(ttl=60)
    health.on_change = lambda *note: told.append(note)
    bad = Route("PROXY", "a.example", 3128)
    health.failed(bad)
    health.failed(bad)
    assert told == [("PROXY", "a.example", 3128, 60)]
    health.worked(bad)
    health.worked(bad)
    assert told[1:] == [("PROXY", "a.example", 3128, 0.0)]
    health.note("SOCKS5", "s.example", 1080, 30)
    assert len(told) == 2
    other = Route("SOCKS5", "s.example", 1080)
    assert health.order((other, DIRECT)) == (DIRECT, other)
    (entry,) = health.entries()
    assert entry[:3] == ("SOCKS5", "s.example", 1080) and 0 < entry[3] <= 30
    health.note("SOCKS5", "s.example", 1080, 0)
    assert health.order((other, DIRECT)) == (other, DIRECT)
    health.note("DIRECT", "", 0, 30)  # never a bad DIRECT
    assert health.entries() == []
