"""Each PAC helper, on both engines, including the edge cases where implementations differ.

Expected values are Chromium's (pac_js_library.h, proxy_resolver_v8.cc); comments name the
implementations that answer otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pac.engine import ENGINES, PacEngine, PacLoadError, load_engine
from pac.env import PacEnv

# Evaluates the JavaScript expression passed as `host` and returns it JSON-encoded, with
# `undefined` spelled out (JSON has none).
PROBE = """
function FindProxyForURL(url, host) {
  var v = eval(host);
  return v === undefined ? "undefined" : JSON.stringify(v);
}
"""
NOW = datetime(2025, 1, 15, 17, 0, 30, tzinfo=UTC)  # a Wednesday
ENV = PacEnv(
    dns={
        "one.example": "192.0.2.1",
        "dual.example": ["2001:db8::1", "198.51.100.7"],
        "v6.example": "2001:db8::2",
        "xn--bcher-kva.example": "192.0.2.9",
    },
    my_ip=["2001:db8::99", "10.1.2.3"],
    now=NOW,
)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[PacEngine]:
    pac = load_engine(request.param, PROBE)
    yield pac
    pac.close()


@pytest.fixture
def js(engine: PacEngine) -> Callable[..., Any]:
    def run(expr: str, env: PacEnv = ENV) -> Any:
        result = engine.evaluate("http://probe.invalid:80", expr, env)
        if result.error is not None:
            return ("error", result.error.kind, result.error.message)
        return None if result.result == "undefined" else json.loads(result.result)

    return run


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('isPlainHostName("nas")', True),
        ('isPlainHostName("nas.local")', False),
        ('isPlainHostName("::1")', False),  # pacparser/pypac: true (they only look for a dot)
        ('isPlainHostName("fe80::1")', False),
        ('isPlainHostName("not:ipv6")', True),
        ('dnsDomainIs("www.example.com", ".example.com")', True),
        ('dnsDomainIs("example.com", ".example.com")', False),
        ('dnsDomainIs("devops.example", "ops.example")', True),  # raw suffix, no dot logic
        ('dnsDomainIs("www.example.com", ".EXAMPLE.com")', False),  # pypac: case-insensitive
        ('localHostOrDomainIs("www", "www.example.com")', True),
        ('localHostOrDomainIs("www.example.com", "www.example.com")', True),
        ('localHostOrDomainIs("www.example", "www.example.com")', True),
        ('localHostOrDomainIs("www.other.com", "www.example.com")', False),
        ('dnsDomainLevels("www")', 0),
        ('dnsDomainLevels("a.b.c.")', 3),
        ('convert_addr("10.0.0.255")', 167772415),
        ('convert_addr("192.168.1.1")', -1062731519),  # signed 32-bit, as in browsers
        ('isValidIpAddress("010.1.1.1")', True),
        ('isValidIpAddress("256.1.1.1")', False),
        ('shExpMatch("www.example.com", "*.example.com")', True),
        ('shExpMatch("example.com", "*.example.com")', False),
        ('shExpMatch("srv-01x", "srv-???")', True),
        ('shExpMatch("wwwXexample", "www.example")', False),  # "." is literal
        ('shExpMatch("static.example.com", "(www|static).example.com")', True),  # pypac: no
        ('shExpMatch("a+b", "a+b")', False),  # "+" stays a regex operator in Chromium
        # Chromium defines no getClientVersion (pacparser and WinHTTP do): a script testing
        # for it takes Chromium's branch.
        ("typeof getClientVersion", "undefined"),
        ('typeof alert("hi")', "undefined"),
    ],
)
def test_pure_helpers(js: Callable[..., Any], expr: str, expected: Any) -> None:
    assert js(expr) == expected


def test_shexpmatch_bad_class_throws(js: Callable[..., Any]) -> None:
    kind = js('shExpMatch("a", "[a-z")')
    assert kind[:2] == ("error", "exception")


def test_isplainhostname_requires_a_string(js: Callable[..., Any]) -> None:
    out = js("isPlainHostName(42)")
    assert out[:2] == ("error", "exception") and "string" in out[2]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('dnsResolve("one.example")', "192.0.2.1"),
        ('dnsResolve("ONE.Example")', "192.0.2.1"),  # lookups are case-insensitive
        ('dnsResolve("dual.example")', "198.51.100.7"),  # IPv4-only: first IPv4 answer
        ('dnsResolve("v6.example")', None),  # IPv6-only name does not resolve: null
        ('dnsResolve("nowhere.example")', None),  # null, not "" (pypac) or undefined
        ('dnsResolve("203.0.113.5")', "203.0.113.5"),  # literals resolve to themselves
        ('dnsResolve("2001:db8::5")', None),
        ("dnsResolve(5)", None),
        ('dnsResolve("bücher.example")', "192.0.2.9"),  # punycode before lookup
        ('isResolvable("one.example")', True),
        ('isResolvable("v6.example")', False),
        ('dnsResolveEx("dual.example")', "2001:db8::1;198.51.100.7"),
        ('dnsResolveEx("nowhere.example")', ""),
        ('dnsResolveEx("2001:DB8:0:0::7")', "2001:db8::7"),
        ("dnsResolveEx(5)", None),  # Chromium: undefined
        ('isResolvableEx("v6.example")', True),
        ('isResolvableEx("nowhere.example")', False),  # pacparser: always true
        ('isInNet("one.example", "192.0.2.0", "255.255.255.0")', True),
        ('isInNet("10.1.2.3", "10.0.0.0", "255.0.0.0")', True),
        ('isInNet("nowhere.example", "0.0.0.0", "0.0.0.0")', False),
        ('isInNet("::1", "0.0.0.0", "0.0.0.0")', False),  # IPv6 never matches isInNet
        ('isInNet("10.1.2.3", "10.0.0.0", "bad")', False),
        ('isInNetEx("fd00::10", "fd00::/8")', True),
        ('isInNetEx("192.0.2.8", "fd00::/8")', False),
        # Mixed families (Chromium's IPAddressMatchesPrefix): the IPv4 side is compared as
        # ::ffff:a.b.c.d, an IPv4 prefix as ::ffff:a.b.c.d/(n + 96). pacparser and pypac
        # never match across families.
        ('isInNetEx("10.1.2.3", "::ffff:10.0.0.0/104")', True),
        ('isInNetEx("10.1.2.3", "::ffff:11.0.0.0/104")', False),
        ('isInNetEx("10.1.2.3", "::/0")', True),
        ('isInNetEx("10.1.2.3", "::/80")', True),
        ('isInNetEx("10.1.2.3", "::/81")', False),  # bit 80 of ::ffff:a.b.c.d is a one
        ('isInNetEx("10.1.2.3", "::/96")', False),  # IPv4-compatible (::a.b.c.d) is not used
        ('isInNetEx("10.1.2.3", "::ffff:0:0/96")', True),
        ('isInNetEx("10.1.2.3", "::ffff:10.1.2.3/128")', True),
        ('isInNetEx("10.1.2.3", "::ffff:0:0/129")', False),
        ('isInNetEx("::ffff:10.1.2.3", "10.0.0.0/8")', True),
        ('isInNetEx("::ffff:10.1.2.3", "11.0.0.0/8")', False),
        ('isInNetEx("::ffff:10.1.2.3", "0.0.0.0/0")', True),
        ('isInNetEx("::10.1.2.3", "10.0.0.0/8")', False),
        ('isInNetEx("2001:db8::1", "0.0.0.0/0")', False),
        ('isInNetEx("::1", "0.0.0.0/33")', False),
        ('isInNetEx("2001:db8::1", "::/0")', True),
        ('isInNetEx("10.1.2.3", "10.0.0.0/8")', True),
        ('isInNetEx("10.1.2.3", "10.0.0.0/33")', False),
        # The prefix as Chromium's ParseCIDRBlock reads it: ASCII whitespace around either
        # part is ignored, the length may have leading zeros; one "/", digits only.
        ('isInNetEx("10.1.2.3", " 10.0.0.0 / 8 ")', True),
        ('isInNetEx("10.1.2.3", "10.0.0.0/\\t08\\n")', True),
        ('isInNetEx("10.1.2.3", "10.0.0.0/0000000008")', True),
        ('isInNetEx("10.1.2.3", "10.0.0.0/0033")', False),
        ('isInNetEx("10.1.2.3", "10.0.0.0/8/8")', False),
        ('isInNetEx("10.1.2.3", "10.0.0.0/+8")', False),
        ('isInNetEx("10.1.2.3", "10.0.0.0/")', False),
        ('isInNetEx("10.1.2.3", "10.0.0.0")', False),
        ('isInNetEx("10.1.2.3", "10.0.0.0/\\u00a08")', False),  # non-ASCII: false
        ('isInNetEx(" 10.1.2.3", "10.0.0.0/8")', False),  # the address is not trimmed
        ('isInNetEx("10.1.2.3", " ::/0")', True),
        ('isInNetEx("one.example", "192.0.2.0/24")', False),  # literals only, no DNS
        ('isInNetEx(1, "10.0.0.0/8")', None),
        (
            'sortIpAddressList("10.0.0.2;2001:db8::1; 10.0.0.1;::1")',
            "::1;2001:db8::1;10.0.0.1;10.0.0.2",
        ),
        ('sortIpAddressList("")', False),
        ('sortIpAddressList(";;")', False),
        ('sortIpAddressList("10.0.0.1;bogus")', False),
        ("sortIpAddressList(5)", None),
        ("myIpAddress()", "10.1.2.3"),  # first IPv4
        ("myIpAddressEx()", "2001:db8::99;10.1.2.3"),
    ],
)
def test_environment_helpers(js: Callable[..., Any], expr: str, expected: Any) -> None:
    assert js(expr) == expected


def test_my_ip_defaults(js: Callable[..., Any]) -> None:
    bare = PacEnv(now=NOW)
    assert js("myIpAddress()", bare) == "127.0.0.1"  # Chromium's failure value
    assert js("myIpAddressEx()", bare) == ""


@pytest.mark.parametrize(
    ("my_ip", "address", "address_ex"),
    [
        # only IPv6 known: Chromium falls back to it (it was reported as 127.0.0.1)
        (["2001:db8::99"], "2001:db8::99", "2001:db8::99"),
        (["2001:db8::99", "2001:db8::5"], "2001:db8::99", "2001:db8::99;2001:db8::5"),
        (["::ffff:10.1.2.3"], "10.1.2.3", "10.1.2.3"),  # mapped: the IPv4 address
        (["2001:db8::99", "10.1.2.3"], "10.1.2.3", "2001:db8::99;10.1.2.3"),  # IPv4 preferred
    ],
)
def test_my_ip_address_falls_back_to_ipv6(
    js: Callable[..., Any], my_ip: list[str], address: str, address_ex: str
) -> None:
    env = PacEnv(my_ip=my_ip, now=NOW)
    assert js("myIpAddress()", env) == address
    assert js("myIpAddressEx()", env) == address_ex
    assert address in js("myIpAddressEx()", env).split(";")  # the two agree


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('weekdayRange("WED")', True),
        ('weekdayRange("MON", "FRI")', True),
        ('weekdayRange("THU", "TUE")', False),  # wraps: THU..SUN, MON..TUE
        ('weekdayRange("FRI", "WED")', True),  # pacparser does not wrap
        ('weekdayRange("SAT", "SUN", "GMT")', False),
        ('weekdayRange("wed")', False),  # names are case-sensitive
        ('weekdayRange("WED", "FRI", "XYZ")', True),  # 3rd arg not GMT: one-day form
        ("weekdayRange()", False),
        ("dateRange(15)", True),
        ('dateRange("JAN")', True),
        ("dateRange(2025)", True),
        ("dateRange(2024, 2026)", True),
        ("dateRange(1, 14)", False),
        ('dateRange("DEC", "FEB")', True),  # wraps over the year end
        ('dateRange(14, "JAN", 16, "JAN", "GMT")', True),
        ('dateRange(1, "JAN", 2024, 31, "DEC", 2024)', False),
        ('dateRange("FEB", "FEB")', False),  # Dec 31 -> setMonth(FEB) rolls to Mar 3
        ("timeRange(17)", True),
        ("timeRange(9, 17)", True),  # end hour inclusive (pypac: exclusive)
        ("timeRange(18, 9)", False),  # 2-argument form never wraps
        ("timeRange(8, 30, 17, 0)", True),  # end minute inclusive through :59
        ("timeRange(17, 1, 8, 0)", False),
        ('timeRange(23, 0, 17, 0, "GMT")', True),  # wraps past midnight (pacparser: no)
        ("timeRange(17, 0, 29, 17, 0, 31)", True),
        ("timeRange(17, 0, 31, 17, 0, 59)", False),
        ("timeRange()", False),
    ],
)
def test_time_helpers(js: Callable[..., Any], expr: str, expected: Any) -> None:
    assert js(expr) == expected


def test_time_range_bad_arity_throws(js: Callable[..., Any]) -> None:
    assert js("timeRange(1, 2, 3)")[:2] == ("error", "exception")


def test_clock_is_injected(js: Callable[..., Any]) -> None:
    assert js("new Date().toISOString()") == "2025-01-15T17:00:30.000Z"
    assert js("Date.now()") == int(NOW.timestamp() * 1000)
    assert js("Date()").startswith("Wed Jan 15 2025 17:00:30")
    assert js("new Date(0).toISOString()") == "1970-01-01T00:00:00.000Z"
    assert js("new Date() instanceof Date") is True


def test_host_bindings_are_gone(js: Callable[..., Any]) -> None:
    names = ["process", "require", "call_python", "console", "performance", "dukpy"]
    probe = "[" + ",".join(f"typeof {n}" for n in names) + "]"
    assert js(probe) == ["undefined"] * len(names)


def test_reads_are_reported(engine: PacEngine) -> None:
    r = engine.evaluate("http://x:80", 'dnsResolve("one.example") + myIpAddress()', ENV)
    assert r.reads.dns == (("one.example", ("192.0.2.1",)),)
    assert r.reads.my_ip and not r.reads.clock and not r.reads.random
    r = engine.evaluate("http://x:80", "String(timeRange(1)) + Math.random()", ENV)
    assert r.reads.clock and r.reads.random and not r.reads.cacheable
    r = engine.evaluate("http://x:80", '"DIRECT"', ENV)
    assert r.reads.cacheable and r.reads.dns == ()


def test_failed_lookups_are_reads_too(engine: PacEngine) -> None:
    r = engine.evaluate("http://x:80", 'String(isResolvable("gone.example"))', ENV)
    assert json.loads(r.result) == "false"
    assert r.reads.dns == (("gone.example", ()),)


def test_alert_is_collected_not_printed(engine: PacEngine, capfd: pytest.CaptureFixture) -> None:
    r = engine.evaluate("http://x:80", 'alert("hello " + 1), alert(), "x"', ENV)
    assert r.alerts == ("hello 1", "undefined")
    assert "hello" not in capfd.readouterr().out


def test_resolver_is_asked_for_misses_and_the_script_rerun(engine: PacEngine) -> None:
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        return {"a.example": ["192.0.2.50"], "b.example": []}.get(name, [])

    env = PacEnv(dns={"known.example": "192.0.2.1"}, resolver=resolver, now=NOW)
    expr = '[dnsResolve("A.Example."), dnsResolve("b.example"), dnsResolve("known.example")]'
    r = engine.evaluate("http://x:80", expr, env)
    assert json.loads(r.result) == ["192.0.2.50", None, "192.0.2.1"]
    assert sorted(asked) == ["a.example", "b.example"]  # canonical names, table not asked
    assert dict(r.reads.dns)["b.example"] == ()


def test_a_failing_resolver_means_unresolvable(engine: PacEngine) -> None:
    def resolver(name: str) -> list[str]:
        raise OSError("SERVFAIL")

    r = engine.evaluate("http://x:80", 'String(dnsResolve("x.example"))', PacEnv(resolver=resolver))
    assert json.loads(r.result) == "null"


def test_dependent_lookups_take_several_rounds(engine: PacEngine) -> None:
    chain = {f"n{i}.example": [f"192.0.2.{i + 1}"] for i in range(4)}
    env = PacEnv(resolver=lambda name: chain.get(name, []))
    expr = (
        'var ip = dnsResolve("n0.example");'
        'for (var i = 1; i < 4 && ip; i++) ip = dnsResolve("n" + i + ".example");'
        "ip"
    )
    assert json.loads(engine.evaluate("http://x:80", expr, env).result) == "192.0.2.4"


@pytest.mark.parametrize("name", ENGINES)
def test_findproxyforurlex_is_never_called(name: str) -> None:
    """Chromium calls FindProxyForURL only (pacparser and WinHTTP prefer FindProxyForURLEx)."""
    src = (
        'function FindProxyForURL(u, h) { return "PROXY old:1"; }\n'
        'function FindProxyForURLEx(u, h) { return "PROXY ex:1"; }'
    )
    with load_engine(name, src) as pac:
        assert pac.evaluate("http://x:80", "x", PacEnv()).result == "PROXY old:1"


@pytest.mark.parametrize("name", ENGINES)
def test_a_script_with_only_findproxyforurlex_does_not_load(name: str) -> None:
    src = 'function FindProxyForURLEx(u, h) { return "DIRECT"; }'
    with pytest.raises(PacLoadError) as caught:
        load_engine(name, src).close()  # closed even where it loads
    assert caught.value.error.kind == "no_entrypoint"
    assert caught.value.error.message == "FindProxyForURL() is undefined"  # Chromium's words


@pytest.mark.parametrize("name", ENGINES)
def test_an_entry_point_gone_at_run_time_falls_to_no_other(name: str) -> None:
    src = (
        'function FindProxyForURL(u, h) { FindProxyForURL = 7; return "PROXY a:1"; }\n'
        'function FindProxyForURLEx(u, h) { return "DIRECT"; }'
    )
    with load_engine(name, src) as pac:
        assert pac.evaluate("http://x:80", "x", PacEnv()).result == "PROXY a:1"
        again = pac.evaluate("http://y:80", "y", PacEnv())
        assert again.result is None and again.error is not None
        assert again.error.kind == "no_entrypoint"
        assert (
            again.error.message == "FindProxyForURL() is undefined (it is a number, not a function)"
        )


def test_scripts_may_redefine_helpers_like_in_browsers() -> None:
    src = (
        'function dnsResolve(h) { return "10.9.9.9"; }\n'
        "function FindProxyForURL(u, h) {\n"
        '  return isInNet(h, "10.0.0.0", "255.0.0.0") ? "DIRECT" : "PROXY p:1";\n'
        "}"
    )
    for name in ENGINES:
        with load_engine(name, src) as pac:
            assert pac.evaluate("http://x:80", "x.example", PacEnv()).result == "DIRECT"
