"""DNS rounds with a fixed table: the harness settles what the host would settle.

With `--resolve` / `--no-dns` nothing stands behind the table, so a name the table lacks
does not resolve; the harness knows that in the same run for a name spelled as the table's
keys are (canonical), instead of reporting a miss and leaving the host to record it. The
result and the reads (order included) must be what the host's rounds gave, and any other
spelling still goes to the host, which canonicalises it and runs the script again.
"""

from __future__ import annotations

import pytest

from pac.engine import ENGINES, load_engine
from pac.env import DnsRounds, PacEnv

SCRIPT = """
function FindProxyForURL(url, host) {
  var a = dnsResolve("missing.example"), b = dnsResolve(host), c = dnsResolve("known.example");
  return "PROXY " + [a, b, c].join("_") + ":1";
}
"""
TABLE = {"known.example": "192.0.2.1", "other.example": "192.0.2.2"}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fixed_table_settles_canonical_misses_in_the_first_run(engine: str) -> None:
    env = PacEnv(dns=TABLE)
    with load_engine(engine, SCRIPT) as pac:
        envelope = pac.run_once("http://gone.example:80", "gone.example", DnsRounds(env).payload())
        assert envelope.misses == ()  # nothing left for the host: one run
        assert envelope.outcome.result == "PROXY __192.0.2.1:1"
        # Answered names first, then those that did not resolve, in the order looked up: the
        # reads the host's rounds recorded.
        assert envelope.outcome.reads.dns == (
            ("known.example", ("192.0.2.1",)),
            ("missing.example", ()),
            ("gone.example", ()),
        )
        assert pac.evaluate("http://gone.example:80", "gone.example", env) == envelope.outcome


@pytest.mark.parametrize("engine", ENGINES)
def test_other_spellings_still_go_to_the_host(engine: str) -> None:
    env = PacEnv(dns=TABLE)
    with load_engine(engine, SCRIPT) as pac:
        first = pac.run_once("http://other:80", "Other.Example.", DnsRounds(env).payload())
        assert set(first.misses) == {"missing.example", "other.example."}
        result = pac.evaluate("http://other:80", "Other.Example.", env)
        assert result.result == "PROXY _192.0.2.2_192.0.2.1:1"
        assert result.reads.dns == (
            ("missing.example", ()),
            ("other.example.", ("192.0.2.2",)),
            ("known.example", ("192.0.2.1",)),
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_with_a_resolver_every_miss_is_the_hosts(engine: str) -> None:
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        return ["198.51.100.9"] if name == "gone.example" else []

    env = PacEnv(dns=TABLE, resolver=resolver)
    with load_engine(engine, SCRIPT) as pac:
        first = pac.run_once("http://gone.example:80", "gone.example", DnsRounds(env).payload())
        assert first.misses == ("missing.example", "gone.example")
        result = pac.evaluate("http://gone.example:80", "gone.example", env)
        assert result.result == "PROXY _198.51.100.9_192.0.2.1:1"
        assert asked == ["missing.example", "gone.example"]
