"""exclude entries: suffix semantics, wildcards, IPs and CIDRs, and which entry matched."""

from __future__ import annotations

import pytest

from rules.exclude import ExcludeMatcher, IPRange, NamePattern, parse_entry, parse_ip, split_entries


def matcher(*entries: str) -> ExcludeMatcher:
    return ExcludeMatcher.from_strings(list(entries))


def name_hit(m: ExcludeMatcher, name: str) -> str | None:
    hit = m.match(name, None)
    return hit.entry if hit else None


def ip_hit(m: ExcludeMatcher, ip: str, name: str | None = None) -> str | None:
    hit = m.match(name, parse_ip(ip))
    return hit.entry if hit else None


@pytest.mark.parametrize(
    ("entry", "name", "matches"),
    [
        # a plain domain: itself and everything below it
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", True),
        ("example.com", "a.b.c.example.com", True),
        ("example.com", "notexample.com", False),
        ("example.com", "example.com.evil.net", False),
        ("example.com", "com", False),
        # leading dot and *. : subdomains only, at any depth
        (".example.com", "example.com", False),
        (".example.com", "www.example.com", True),
        (".example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "wwwexample.com", False),
        # a * label matches exactly one label; extra labels on the left still match
        ("api.*.example.com", "api.eu.example.com", True),
        ("api.*.example.com", "x.api.eu.example.com", True),
        ("api.*.example.com", "api.example.com", False),
        ("api.*.example.com", "api.a.b.example.com", False),
        ("api.*.example.com", "web.eu.example.com", False),
        ("*.*.example.com", "a.example.com", False),
        ("*.*.example.com", "a.b.example.com", True),
        ("example.*", "example.org", True),
        ("example.*", "www.example.org", True),
        ("example.*", "example.co.uk", False),
        # case and trailing dots are ignored on both sides
        ("Example.COM.", "www.example.com", True),
        ("example.com", "WWW.Example.Com.", True),
        ("*.example.com.", "a.example.com.", True),
        # IDNA: U-labels in the config compare with A-labels from SNI
        ("bücher.example", "xn--bcher-kva.example", True),
        ("*.bücher.example", "shop.xn--bcher-kva.example", True),
        # single-label names (the corporate-proxy example excludes localhost)
        ("localhost", "localhost", True),
        ("localhost", "foo.localhost", True),
        ("localhost", "localhost.example.com", False),
        # lone * matches every name
        ("*", "anything.example", True),
    ],
)
def test_name_semantics(entry: str, name: str, matches: bool) -> None:
    assert (name_hit(matcher(entry), name) == entry) is matches


@pytest.mark.parametrize(
    ("entry", "ip", "matches"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # IPv4-mapped is IPv4
        ("10.1.2.3/8", "10.200.0.1", True),  # host bits are masked, as Go's ParseCIDR does
        ("192.168.1.10", "192.168.1.10", True),
        ("192.168.1.10", "192.168.1.11", False),
        ("0.0.0.0/0", "203.0.113.9", True),
        ("0.0.0.0/0", "2001:db8::1", False),  # versions never cross
        ("2001:db8::/32", "2001:db8:1::5", True),
        ("2001:db8::/32", "2001:db9::5", False),
        ("2001:DB8::1", "2001:db8::1", True),
        ("[2001:db8::1]", "2001:db8::1", True),
        ("::/0", "10.0.0.1", False),
        ("::ffff:10.0.0.0/104", "10.9.9.9", True),  # mapped CIDR folded to 10.0.0.0/8
        ("::ffff:10.0.0.1", "10.0.0.1", True),
        ("fd00::/8", "fdab::1", True),
    ],
)
def test_ip_semantics(entry: str, ip: str, matches: bool) -> None:
    assert (ip_hit(matcher(entry), ip) == entry) is matches


def test_ip_entries_never_match_names_and_names_never_match_ips() -> None:
    m = matcher("10.0.0.0/8", "example.com")
    assert m.match("10.0.0.1", None) is None  # a name that looks like an IP is not an IP
    assert m.match(None, parse_ip("93.184.216.34")) is None
    assert m.match(None, None) is None


def test_match_reports_entry_and_kind() -> None:
    m = matcher("*.corp.example", "10.0.0.0/8")
    hit = m.match("a.corp.example", parse_ip("203.0.113.1"))
    assert hit is not None
    assert (hit.entry, hit.by, hit.by_name, hit.value) == (
        "*.corp.example",
        "name",
        True,
        "a.corp.example",
    )
    assert hit.describe() == "exclude entry '*.corp.example' matched name 'a.corp.example'"
    hit = m.match("other.example", parse_ip("10.9.8.7"))
    assert hit is not None
    assert (hit.by, hit.by_name) == ("ip", False)
    assert hit.describe() == "exclude entry '10.0.0.0/8' matched ip '10.9.8.7'"


def test_ip_match_preferred_over_name_match() -> None:
    """A match on the original IP needs no name verification, so it is reported first."""
    hit = matcher("corp.example", "10.0.0.0/8").match("a.corp.example", parse_ip("10.0.0.1"))
    assert hit is not None and hit.by == "ip"


def test_first_entry_in_config_order_wins() -> None:
    m = matcher("*.b.example", "a.b.example", "example", "a.*.example")
    assert name_hit(m, "x.a.b.example") == "*.b.example"
    m = matcher("a.*.example", "example", "b.example")
    assert name_hit(m, "a.b.example") == "a.*.example"
    m = matcher("b.example", ".b.example")
    assert name_hit(m, "x.b.example") == "b.example"


def test_empty_matcher() -> None:
    m = ExcludeMatcher([])
    assert not m
    assert m.match("example.com", parse_ip("10.0.0.1")) is None


def test_split_entries() -> None:
    assert split_entries("a.example, b.example\t10.0.0.0/8\n ,,c") == [
        "a.example",
        "b.example",
        "10.0.0.0/8",
        "c",
    ]
    assert split_entries(["a", " b ", ""]) == ["a", "b"]
    assert split_entries("") == []


def test_parse_entry_kinds() -> None:
    assert isinstance(parse_entry("10.0.0.0/8"), IPRange)
    assert isinstance(parse_entry("2001:db8::1"), IPRange)
    p = parse_entry("*.Example.com.")
    assert isinstance(p, NamePattern)
    assert p.labels_rev == ("com", "example") and p.subdomains_only


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.0/33", "bad CIDR '10.0.0.0/33': prefix length must be 0-32"),
        ("2001:db8::/129", "prefix length must be 0-128"),
        ("10.0.0.0/", "prefix length must be"),
        ("10.0.0.0/ 8", "prefix length must be"),
        ("10.0.0.0/255.0.0.0", "prefix length must be"),
        ("10.0.0/8", "bad CIDR '10.0.0/8': '10.0.0' is not an IP address"),
        ("example.com/8", "is not an IP address"),
        ("10.0.0.256", "neither a valid IP address nor a host name"),
        ("10.0.0", "neither a valid IP address nor a host name"),
        ("2001:db8::zz", "not a valid IP address"),
        ("example.com:443", "ports are not supported"),
        ("fe80::1%eth0", "not a valid IP address"),
        ("foo*.example.com", "'*' must be a whole label"),
        ("a_b.example.com", "not a valid host name or domain"),
        ("example..com", "not a valid host name or domain"),
        (".", "names no domain"),
        ("..", "names no domain"),
        ("", "empty entry"),
        ("a" * 64 + ".com", "not a valid host name"),
    ],
)
def test_invalid_entries(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_entry(entry)
    assert message in str(info.value)


def test_from_strings_names_the_index() -> None:
    with pytest.raises(ValueError, match=r"entry 1 \('10.0.0.0/33'\)"):
        ExcludeMatcher.from_strings(["ok.example", "10.0.0.0/33"])


def test_parse_ip() -> None:
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(parse_ip("2001:DB8::1")) == "2001:db8::1"
    assert parse_ip("") is None
    assert parse_ip("not-an-ip") is None
    assert parse_ip("010.0.0.1") is None
