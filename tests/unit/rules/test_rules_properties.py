"""Property tests: configuration text and its small parsers (rules/).

Invariants: any text gives a validated config or a ConfigError (each small parser: its own
ValueError subclass), never another exception; what is accepted is never more open than the
text (no port, exclude entry or DIRECT that the text does not state); canonical forms are
fixed points and round-trip.
"""

from __future__ import annotations

import json

from hypothesis import event, example, given
from hypothesis import strategies as st
from netaddr import IPAddress

from pac.routes import Route
from rules.config import ConfigError, parse_config_text
from rules.exclude import ExcludeMatcher, IPRange, NamePattern, parse_entry, split_entries
from rules.names import MAX_NAME, canonical_hostname
from rules.ports import PortSet, parse_transparent_ports
from rules.proxy_url import ProxyURLError, parse_proxy_url
from rules.settings import KEYS

# --------------------------------------------------------------------------- names

_name_text = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(["a", "B", "xn--", "xn--bcher-kva", "b\u00fccher", "-", "_", "0x1", "1"])
        | st.sampled_from([".", "..", "\u3002", "\uff0e", "*", "%", ":", "[", "]", "\u212a"]),
        max_size=12,
    ).map("".join),
)


@given(st.one_of(_name_text, _name_text.map(lambda t: t.encode("utf-8", "replace"))))
def test_canonical_hostname_is_a_fixed_point(raw: str | bytes) -> None:
    name = canonical_hostname(raw)
    if name is None:
        return
    assert name.isascii() and name == name.lower()
    assert 0 < len(name) <= MAX_NAME and not name.endswith(".")
    assert canonical_hostname(name) == name
    assert canonical_hostname(name + ".") == name
    if isinstance(raw, bytes):
        assert raw.decode("ascii").lower().rstrip(".") == name  # bytes are never remapped


# --------------------------------------------------------------------------- ports

_ports_text = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(["80", "443", "1", "65535", "65536", "0", "00080", "1-1024", "9-3", "*"])
        | st.sampled_from([",", " ", "-", "\u00a0", "\uff18", "\u00b2", "+1", "0x50"]),
        max_size=8,
    ).map("".join),
)


def _naive_ports(text: str) -> set[int] | None:
    """The ports a plain reading of a comma list names (only for ASCII-digit lists)."""
    out: set[int] = set()
    for entry in text.split(","):
        lo, _, hi = entry.strip().partition("-")
        lo, hi = lo.strip(), (hi.strip() or lo.strip())
        if not (lo.isascii() and lo.isdigit() and hi.isascii() and hi.isdigit()):
            return None
        out |= set(range(int(lo), int(hi) + 1))
    return out


@given(_ports_text)
@example("80,\uff18\uff10")  # fullwidth digits
@example("\u00b2")
def test_transparent_ports_are_what_the_text_names(text: str) -> None:
    try:
        ports = parse_transparent_ports(text)
        event("accepted")
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(ports, PortSet)
    assert parse_transparent_ports(str(ports)) == ports  # canonical spelling round-trips
    if text.strip() == "*":
        assert ports.is_all
    elif not text.strip():
        assert ports.is_empty
    else:
        named = _naive_ports(text)
        assert named is not None, (text, ports)  # accepted only plain ASCII numbers
        for lo, hi in ports.ranges():
            assert lo in named and hi in named, (text, lo, hi)
        assert sum(hi - lo + 1 for lo, hi in ports.ranges()) == len(named)


@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 300)), max_size=6))
def test_port_ranges_round_trip(ranges: list[tuple[int, int]]) -> None:
    spans = [(lo, min(lo + n, 65535)) for lo, n in ranges]
    text = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in spans)
    ports = parse_transparent_ports(text)
    expected = set().union(*(range(lo, hi + 1) for lo, hi in spans)) if spans else set()
    for port in {1, 65535, *(lo - 1 for lo, _ in spans), *(hi + 1 for _, hi in spans)}:
        assert (port in ports) == (port in expected)
    assert sum(hi - lo + 1 for lo, hi in ports.ranges()) == len(expected)


# --------------------------------------------------------------------------- proxy URLs

_url_text = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(["http://", "https://", "socks5h://", "socks4://", "ftp://", "://"])
        | st.sampled_from(["user", ":", "p%40ss", "%ff", "@", "[", "]", "::1", "::ffff:1.2.3.4"])
        | st.sampled_from(["proxy.example", "10.0.0.1", "3128", "0", "99999", "/", "?", "#"])
        | st.sampled_from(["\u00b2", "\uff11", " ", "\r\n", "%0d%0a", "\u212a"]),
        max_size=8,
    ).map("".join),
)


@given(_url_text)
@example("http://proxy.example:\uff13\uff11\uff12\uff18")
@example("proxy.example:\u00b2")
def test_proxy_url_is_a_route_or_proxy_url_error(text: str) -> None:
    try:
        route = parse_proxy_url(text)
        event("accepted")
    except ProxyURLError as exc:
        message = str(exc)
        assert message
        if "@" in text:  # credentials never reach the message
            secret = text.rpartition("@")[0].partition("://")[2]
            assert not secret or f"{secret}@" not in message
        return
    assert isinstance(route, Route)
    assert route.kind != "DIRECT"
    assert route.host and route.host.isascii() and 1 <= route.port <= 65535
    # the route, spelled back as a URL, reads the same
    scheme = {"PROXY": "http", "HTTPS": "https", "SOCKS4": "socks4", "SOCKS5": "socks5"}
    host = f"[{route.host}]" if ":" in route.host else route.host
    again = parse_proxy_url(f"{scheme[route.kind]}://{host}:{route.port}")
    assert (again.kind, again.host, again.port) == (route.kind, route.host, route.port)


# --------------------------------------------------------------------------- exclude

_exclude_text = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["example.com", "*.", ".", "*", "a", "10.0.0.0", "/8", "/33", "::1", "["])
        | st.sampled_from(["]", ":80", "\u00a0", "b\u00fccher", "xn--", "_", "0x7f", "1.2.3"]),
        max_size=6,
    ).map("".join),
)


@given(_exclude_text)
def test_exclude_entry_parses_or_value_error(text: str) -> None:
    try:
        entry = parse_entry(text)
    except ValueError as exc:
        assert str(exc)
        return
    if isinstance(entry, NamePattern):
        assert entry.labels_rev
        for label in entry.labels_rev:
            assert label == "*" or canonical_hostname(label + ".x") == f"{label}.x"
    else:
        assert isinstance(entry, IPRange)
        assert entry.version in (4, 6) and entry.first <= entry.last
        assert entry.last < 2 ** (32 if entry.version == 4 else 128)


_dns_names = st.from_regex(
    r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]([a-z0-9]{0,8})){1,3}", fullmatch=True
)


@given(_dns_names, st.lists(_dns_names, max_size=5), st.sampled_from(["", ".", "*."]))
def test_exclude_name_matching(name: str, others: list[str], prefix: str) -> None:
    matcher = ExcludeMatcher.from_strings([prefix + name])
    sub = f"x.{name}"
    # itself only without a subdomains-only prefix, subdomains always
    assert bool(matcher.match(name, None)) == (prefix == "")
    assert matcher.match(sub.upper() + ".", None) is not None
    for other in others:
        hit = matcher.match(other, None)
        covered = (other == name and prefix == "") or other.endswith("." + name)
        assert bool(hit) == covered, (name, other, prefix)
        if hit:
            assert hit.by_name


@given(st.ip_addresses(), st.ip_addresses(), st.integers(0, 128))
def test_exclude_cidr_matches_exactly_its_range(base: object, probe: object, bits: int) -> None:
    width = 32 if base.version == 4 else 128  # type: ignore[attr-defined]
    prefix = min(bits, width)
    matcher = ExcludeMatcher.from_strings([f"{base}/{prefix}"])
    ip = IPAddress(str(probe))
    folded = ip.ipv4() if ip.version == 6 and ip.is_ipv4_mapped() else ip
    hit = matcher.match(None, folded)
    base_ip = IPAddress(str(base))
    base_folded = base_ip.ipv4() if base_ip.version == 6 and base_ip.is_ipv4_mapped() else base_ip
    if folded.version == base_folded.version and base_folded is base_ip:
        same = (int(folded) >> (width - prefix)) == (int(base_ip) >> (width - prefix))
        assert bool(hit) == same, (str(base), prefix, str(probe))
    if hit:
        assert hit.by == "ip"


# --------------------------------------------------------------------------- whole configs

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_good_values = {
    "locked": st.booleans(),
    "mode": st.sampled_from(["manual", "system", "Manual", ""]),
    "http": _url_text,
    "https": _url_text,
    "exclude": st.lists(_exclude_text, max_size=3) | _exclude_text,
    "pac": st.sampled_from(["", "http://pac.example/p.pac", "file:///p.pac", "ftp://x", "http://"]),
    "embeddedPac": st.sampled_from(["", "function FindProxyForURL(u, h) {}", "x"]),
    "transparentPorts": _ports_text,
}
_sections = st.fixed_dictionaries(
    {},
    optional={k: st.one_of(v, _json_values) for k, v in _good_values.items()},
).flatmap(
    lambda d: (
        st.dictionaries(st.text(max_size=8), _json_values, max_size=2).map(
            lambda extra: {**d, **extra}
        )
        | st.just(d)
    )
)
_documents = st.one_of(
    _sections,
    st.builds(
        lambda s, v: {"configurationFileVersion": v, "containersProxy": s},
        _sections,
        st.sampled_from([2, 1, "2", True, 2.0]),
    ),
    _json_values,
)


@given(st.one_of(_documents.map(json.dumps), st.text(max_size=80)))
@example('{"containersProxy": {"http": "", "https": ""}}')
@example('{"transparentPorts": "80", "transparentPorts": "*"}')
@example('{"exclude": [1]}')
@example("[" * 5000)
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        config = parse_config_text(text, "test.json")
    except ConfigError as exc:
        assert str(exc).startswith("test.json")
        event("refused")
        return
    event("accepted")
    doc = json.loads(text)
    section = doc.get("containersProxy", doc)
    assert set(section) <= set(KEYS)
    assert config.mode == section.get("mode", "manual")
    # no port, exclude entry or proxy the text does not state
    assert config.transparent_ports == parse_transparent_ports(
        section.get("transparentPorts", "80,443")
    )
    assert list(config.exclude_entries) == split_entries(section.get("exclude", []))
    for key in ("http", "https"):
        value = section.get(key, "").strip()
        assert (getattr(config, key) is None) == (not value)
    assert config.uses_pac == (
        config.mode == "manual"
        and bool(section.get("pac", "").strip() or section.get("embeddedPac", "").strip())
    )
