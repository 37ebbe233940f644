"""Property tests: PAC result strings (pac/routes.py) and the engine envelope (pac/result.py).

The invariant that matters: text that is not understood never becomes DIRECT, and a list
with nothing usable in it is a REJECT.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from pac.result import Envelope, ProtocolError, decode_envelope
from pac.routes import (
    DIRECT,
    REJECT_HOST,
    Route,
    RouteVerdict,
    decide_routes,
    parse_pac_result,
)
from pac.sentinel import names_reject_sentinel

_WS = " \t\r\n\f\v"
_KEYWORDS = ["DIRECT", "PROXY", "HTTP", "HTTPS", "SOCKS", "SOCKS4", "SOCKS5", "direct", "Proxy"]

# Text that looks like a PAC result: keywords, hosts, ports, separators, whitespace of every
# kind (ASCII, the ASCII separators Python also calls whitespace, Unicode spaces) and junk.
_pieces = st.one_of(
    st.sampled_from(_KEYWORDS),
    st.sampled_from([";", " ", "\t", ":", "[", "]", "@", ".", "\r\n", "\x1c", "\x1f", "\x85"]),
    st.sampled_from(["\xa0", "\u2028", "\u3000", "\u212a", "\u0130", "\uff11", "reject"]),
    st.sampled_from(["a.example", "10.0.0.1", "::1", "2001:db8::1", "80", "65536", "0"]),
    st.sampled_from([REJECT_HOST, REJECT_HOST.upper() + ".", "1080", "3128"]),
    st.text(max_size=4),
)
pac_like = st.lists(_pieces, max_size=12).map("".join)
any_text = st.one_of(pac_like, st.text(max_size=200))


def _direct_entries(text: str) -> int:
    """Entries that read exactly as DIRECT (trimmed of HTTP whitespace, any case)."""
    return sum(1 for e in text.split(";") if e.strip(_WS).lower() == "direct")


def _check_route(route: Route) -> None:
    assert route.kind in ("DIRECT", "PROXY", "HTTPS", "SOCKS4", "SOCKS5")
    if route.kind == "DIRECT":
        assert route == DIRECT
        return
    assert route.host and route.host.isascii(), route
    assert route.host == route.host.lower(), route
    assert not any(c.isspace() for c in route.host), route
    assert 1 <= route.port <= 65535, route
    # a route reads back as itself
    assert parse_pac_result(route.pac_spelling()).routes == (route,), route


@given(any_text)
@example("\x1cDIRECT")  # Python's str.split() whitespace is wider than HTTP whitespace
@example("DIRECT\x1f")
@example("\xa0DIRECT")
@example("DIRECT\u2028")
@example("PROXY\x1da.example:80")
@example("PROXY \u212a.example:80")  # KELVIN SIGN lower-cases to ASCII "k"
def test_decide_routes_never_opens_what_it_does_not_understand(text: str) -> None:
    verdict = decide_routes(text)
    assert isinstance(verdict, RouteVerdict)
    assert isinstance(verdict.reason, str) and verdict.reason
    # fail closed: not rejected means at least one route to try
    assert verdict.rejected or verdict.routes
    # DIRECT only where the text literally says DIRECT
    assert list(verdict.routes).count(DIRECT) <= _direct_entries(text), (text, verdict)
    for route in verdict.routes:
        _check_route(route)
        assert not names_reject_sentinel(route.pac_spelling()), (text, route)


def _has_sentinel_entry(text: str) -> bool:
    return any(names_reject_sentinel(entry) for entry in text.split(";"))


@given(any_text)
def test_parse_pac_result_and_decision_agree(text: str) -> None:
    parsed = parse_pac_result(text)
    assert parsed.chromium_routes  # Chromium's reading never empty (DIRECT fallback)
    for route in parsed.routes:
        _check_route(route)
    # the canonical spelling reads back as the same list
    assert parse_pac_result(parsed.pac_spelling()).chromium_routes == parsed.chromium_routes
    verdict = decide_routes(text)
    if not _has_sentinel_entry(text):
        # no sentinel: our decision is Chromium's reading, with an empty list refused
        assert verdict.routes == parsed.routes
        assert verdict.rejected == (not parsed.routes)
        assert verdict.dropped == parsed.dropped
    else:
        # the sentinel can only shorten the list, never add to it
        assert verdict.routes == parsed.routes[: len(verdict.routes)]


_hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
).filter(lambda h: not names_reject_sentinel(h))
_routes = st.one_of(
    st.just(DIRECT),
    st.builds(
        Route,
        st.sampled_from(["PROXY", "HTTPS", "SOCKS4", "SOCKS5"]),
        _hosts,
        st.integers(1, 65535),
    ),
)
_seps = st.sampled_from([";", "; ", " ;\t", ";;", "\n;\r\n"])


@given(st.lists(_routes, min_size=1, max_size=6), st.data())
def test_round_trip_of_well_formed_lists(routes: list[Route], data: st.DataObject) -> None:
    text = ""
    for i, route in enumerate(routes):
        spelled = route.pac_spelling()
        if data.draw(st.booleans()):
            spelled = spelled.lower() if route.kind != "DIRECT" else spelled.swapcase()
        text += (data.draw(_seps) if i else "") + spelled
    verdict = decide_routes(text)
    assert not verdict.rejected
    assert list(verdict.routes) == routes
    assert verdict.dropped == ()


_sentinels = st.tuples(
    st.sampled_from(["PROXY", "SOCKS5", "HTTPS", "socks", "FOO"]),
    st.sampled_from(["", "user:pw@", "@"]),
    st.sampled_from(
        [
            REJECT_HOST,
            REJECT_HOST.upper(),
            REJECT_HOST + ".",
            "Reject.Docker.Internal",
            "." + REJECT_HOST,
            "*." + REJECT_HOST,
            REJECT_HOST + "-",
            "-" + REJECT_HOST,
            REJECT_HOST + "._",
        ]
    ),
    st.sampled_from(["", ":", ":1", ":99999", ":x", "]"]),
).map(lambda t: f"{t[0]} {t[1]}{t[2]}{t[3]}")


@given(st.lists(_routes, max_size=3), _sentinels, st.lists(_routes, max_size=3))
def test_sentinel_blocks_however_it_is_spelled(
    before: list[Route], sentinel: str, after: list[Route]
) -> None:
    text = "; ".join(
        [*(r.pac_spelling() for r in before), sentinel, *(r.pac_spelling() for r in after)]
    )
    verdict = decide_routes(text)
    assert verdict.rejected, text
    assert list(verdict.routes) == before, text


# Ways an author's sentinel can come out spelled: per letter (case, fullwidth form, percent
# escape, a look-alike or a combining mark after it, an invisible character after it) and
# per dot (other full stops, escapes, doubled, other separators).
_FULLWIDTH = 0xFEE0  # U+FF01..U+FF5E are U+0021..U+007E shifted by this
_LOOKALIKE = {"e": "\u0435", "o": "\u03bf", "c": "\u0441", "i": "\u0131", "k": "\u212a"}
_INVISIBLE = ["", "", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f"]


@st.composite
def _disguised_letter(draw: st.DrawFn, c: str) -> str:
    how = draw(st.sampled_from(["plain", "upper", "fullwidth", "percent", "lookalike", "mark"]))
    if how == "upper":
        out = c.upper()
    elif how == "fullwidth":
        out = chr(ord(draw(st.sampled_from([c, c.upper()]))) + _FULLWIDTH)
    elif how == "percent":
        out = f"%{ord(c):02{draw(st.sampled_from(['x', 'X']))}}"
    elif how == "lookalike":
        out = _LOOKALIKE.get(c, c)
    elif how == "mark":
        out = c + draw(st.sampled_from(["\u0301", "\u0308", "\u0327"]))
    else:
        out = c
    return out + draw(st.sampled_from(_INVISIBLE))


_dots = st.sampled_from([".", ".", "\u3002", "\uff0e", "\uff61", "%2e", "%2E", "..", "-", "_"])


@st.composite
def _disguised_sentinel(draw: st.DrawFn) -> str:
    parts = []
    for c in REJECT_HOST:
        parts.append(draw(_dots) if c == "." else draw(_disguised_letter(c)))
    text = "".join(parts)
    if draw(st.booleans()):  # percent-encode the percent signs too: double encoding
        text = text.replace("%", "%25")
    return text


# Junk that may stand next to the name: no entry separator (`;` starts another entry).
_junk = st.text(st.characters(blacklist_characters=";", blacklist_categories=["Cs"]), max_size=6)


@given(
    st.lists(_routes, max_size=3),
    st.sampled_from(["PROXY ", "SOCKS5 ", "HTTPS u:p@", "", "proxy\t", "FOO "]),
    _junk,
    _disguised_sentinel(),
    _junk,
    st.lists(_routes, max_size=3),
)
@example([], "PROXY ", ".", REJECT_HOST, "", [DIRECT])
@example([], "PROXY ", "*.", REJECT_HOST, "", [DIRECT])
@example([], "PROXY ", "-", REJECT_HOST, "", [DIRECT])
@example([], "PROXY ", "", REJECT_HOST, "-", [DIRECT])
@example([], "PROXY ", "", REJECT_HOST, "._", [DIRECT])
@example([], "PROXY ", "xn--", REJECT_HOST, "", [DIRECT])  # not to be read as punycode only
def test_disguised_sentinel_blocks(
    before: list[Route],
    keyword: str,
    prefix: str,
    sentinel: str,
    suffix: str,
    after: list[Route],
) -> None:
    """However the author's sentinel came out spelled, the list stops there."""
    entry = f"{keyword}{prefix}{sentinel}{suffix}"
    assert names_reject_sentinel(entry), entry
    text = "; ".join(
        [*(r.pac_spelling() for r in before), entry, *(r.pac_spelling() for r in after)]
    )
    verdict = decide_routes(text)
    assert verdict.rejected, text
    assert list(verdict.routes) == before, text


@given(st.lists(_routes, min_size=1, max_size=6))
def test_no_route_that_can_be_spelled_is_mistaken_for_the_sentinel(routes: list[Route]) -> None:
    """The check errs towards blocking, but hosts without the sentinel's letters in a row
    are never touched (the round trip above covers their decision)."""
    for route in routes:
        assert not names_reject_sentinel(route.pac_spelling()), route


# ----------------------------------------------------------------- the engine envelope

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "r": _json | st.text(max_size=40),
        "k": st.sampled_from(["exception", "timeout", "crash", "bogus"]) | _json,
        "m": _json,
        "l": _json,
        "d": _json
        | st.lists(st.tuples(st.text(max_size=5), st.lists(st.text(max_size=5))).map(list)),
        "c": _json,
        "i": _json,
        "x": _json,
        "a": _json,
        "miss": _json,
    },
)


@given(st.one_of(_envelopes.map(json.dumps), st.text(max_size=50), _json))
@example('{"k": []}')  # an unhashable kind raised TypeError
@example('{"k": {}}')
def test_decode_envelope_raises_only_protocol_error(reply: object) -> None:
    try:
        envelope = decode_envelope(reply)
    except ProtocolError:
        return
    assert isinstance(envelope, Envelope)
    outcome = envelope.outcome
    assert outcome.result is None or outcome.error is None
    assert outcome.error is None or isinstance(outcome.error.message, str)
    if outcome.result is not None:
        assert isinstance(outcome.result, str) and outcome.result.isascii()
    verdict = outcome.verdict()
    assert verdict.rejected or verdict.routes
    if outcome.error is not None or outcome.result is None:
        assert verdict.rejected and not verdict.routes
