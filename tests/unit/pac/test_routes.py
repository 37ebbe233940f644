"""PAC result strings: Chromium's reading (corpus `parsed`) and our decision on top of it."""

from __future__ import annotations

import pytest

from pac.routes import DIRECT, Route, decide_routes, parse_pac_result
from tests.unit.pac.conftest import CASES

PARSED = [c for c in CASES if "parsed" in c]


def test_corpus_has_parsed_cases() -> None:
    assert len(PARSED) >= 8


@pytest.mark.parametrize("case", PARSED, ids=[c["id"] for c in PARSED])
def test_corpus_parsed(case: dict) -> None:
    assert parse_pac_result(case["expected"]).pac_spelling() == case["parsed"]


@pytest.mark.parametrize(
    ("text", "routes"),
    [
        ("PROXY a.example:3128", [Route("PROXY", "a.example", 3128)]),
        ("HTTP a.example:8080", [Route("PROXY", "a.example", 8080)]),
        ("proxy A.Example", [Route("PROXY", "a.example", 80)]),
        ("SOCKS s:1", [Route("SOCKS4", "s", 1)]),
        ("SOCKS4 s", [Route("SOCKS4", "s", 1080)]),
        ("socks5 s", [Route("SOCKS5", "s", 1080)]),
        ("HTTPS h", [Route("HTTPS", "h", 443)]),
        ("PROXY [2001:DB8::1]:8080", [Route("PROXY", "2001:db8::1", 8080)]),
        ("PROXY [::1]", [Route("PROXY", "::1", 80)]),
        ("\tDIRECT\t;;  ", [DIRECT]),
        ("PROXY  a:1 ;\nSOCKS5 b:2", [Route("PROXY", "a", 1), Route("SOCKS5", "b", 2)]),
    ],
)
def test_valid_entries(text: str, routes: list[Route]) -> None:
    parsed = parse_pac_result(text)
    assert list(parsed.routes) == routes
    assert parsed.dropped == ()


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("FOO bar:1", "unknown type"),
        ("DIRECT x:1", "DIRECT takes no host"),
        ("PROXY", "without host"),
        ("PROXY a:", "port"),
        ("PROXY a:0", "port"),
        ("PROXY a:65536", "port"),
        ("PROXY a:-1", "port"),
        ("PROXY a:8o", "port"),
        ("PROXY u:p@a:1", "credentials"),
        ("PROXY 2001:db8::1:80", "without brackets"),
        ("PROXY [2001:db8::1", "unterminated"),
        ("PROXY [nothex::1]:1", "IPv6"),
        ("PROXY a:1 b:2", "unexpected text"),
        ("PROXY a b:1", "unexpected text"),
        ("PROXY bad/host:1", "invalid host"),
        ("QUIC q:443", "unknown type"),
    ],
)
def test_dropped_entries_say_why(entry: str, why: str) -> None:
    parsed = parse_pac_result(f"{entry}; PROXY ok:1")
    assert parsed.routes == (Route("PROXY", "ok", 1),)
    assert len(parsed.dropped) == 1
    assert parsed.dropped[0].entry == entry
    assert why in parsed.dropped[0].reason


def test_empty_list_reads_as_direct_in_chromium_but_rejects_here() -> None:
    for text in ("", " ; ;", "FOO bar", "PROXY"):
        assert parse_pac_result(text).chromium_routes == (DIRECT,)
        verdict = decide_routes(text)
        assert verdict.rejected and verdict.routes == ()
        assert "no usable route" in verdict.reason


@pytest.mark.parametrize(
    "sentinel",
    [
        "PROXY reject.docker.internal:1234",
        "PROXY REJECT.Docker.Internal:1",
        "PROXY reject.docker.internal.:80",
        "PROXY reject.docker.internal",
        "PROXY reject.docker.internal:",
        "PROXY reject.docker.internal:notaport",
        "PROXY reject.docker.internal:99999",
        "SOCKS5 reject.docker.internal:1",
        "HTTPS user:pw@reject.docker.internal:1",
        "FOO reject.docker.internal:1",
        "PROXY [reject.docker.internal]:1",
        "reject.docker.internal:1234",  # the keyword forgotten
        "reject.docker.internal",
    ],
)
def test_sentinel_recognised_before_validation(sentinel: str) -> None:
    verdict = decide_routes(f"PROXY a.example:3128; {sentinel}; DIRECT")
    assert verdict.rejected
    assert verdict.routes == (Route("PROXY", "a.example", 3128),)  # tried first, DIRECT never
    assert "reject.docker.internal" in verdict.reason


def test_sentinel_first_rejects_at_once() -> None:
    verdict = decide_routes("PROXY reject.docker.internal:9; DIRECT")
    assert verdict.rejected and verdict.routes == ()


@pytest.mark.parametrize(
    "entry",
    [
        "PROXY reject.docker.internal.example:1",
        "PROXY xreject.docker.internal:1",
        "PROXY a.reject.docker.internal:1",
        "PROXY reject.docker.internal-x:1",
    ],
)
def test_longer_names_containing_the_sentinel_block(entry: str) -> None:
    # these were valid routes to names nobody owns: the author meant block, so block
    verdict = decide_routes(f"PROXY a.example:1; {entry}; DIRECT")
    assert verdict.rejected
    assert verdict.routes == (Route("PROXY", "a.example", 1),)


def test_names_near_the_sentinel_are_routes() -> None:
    verdict = decide_routes(
        "PROXY docker.internal:1; PROXY reject.docker:1; PROXY eject.docker.x:1"
    )
    assert not verdict.rejected
    assert [r.host for r in verdict.routes] == [
        "docker.internal",
        "reject.docker",
        "eject.docker.x",
    ]


def test_plain_decision_keeps_order_and_reports_drops() -> None:
    verdict = decide_routes("PROXY a:1; FOO; SOCKS b; DIRECT")
    assert not verdict.rejected
    assert [str(r) for r in verdict.routes] == ["PROXY a:1", "SOCKS4 b:1080", "DIRECT"]
    assert [d.entry for d in verdict.dropped] == ["FOO"]


# ----------------------------------------------------------------- regressions (fuzzing)


@pytest.mark.parametrize("text", ["\x1c", "\xa0", "PROXY a:1;\x1f", "\x1e;DIRECT"])
def test_entry_of_python_only_whitespace_is_dropped_not_a_crash(text: str) -> None:
    # str.split() found no keyword in these (IndexError); they are junk entries.
    verdict = decide_routes(text)
    assert verdict.routes == tuple(parse_pac_result(text).routes)
    assert len(verdict.dropped) == 1


@pytest.mark.parametrize(
    "text",
    [
        "\x1cDIRECT",
        "DIRECT\x1f",
        "\xa0DIRECT",
        "DIRECT\u2028",
        "direct\x85",
        "PROXY\x1da.example:80",
    ],
)
def test_only_http_whitespace_separates_or_trims(text: str) -> None:
    # \x1c-\x1f, \x85 and Unicode spaces are not whitespace to a PAC reader: a lone entry
    # spelled with them was read as DIRECT (or PROXY) and allowed; it is junk, so REJECT.
    verdict = decide_routes(text)
    assert verdict.rejected and verdict.routes == ()


def test_non_ascii_host_does_not_lower_case_into_ascii() -> None:
    # KELVIN SIGN lower-cases to "k": the host was accepted as "k.example"
    verdict = decide_routes("PROXY \u212a.example:80")
    assert verdict.rejected and verdict.routes == ()
    assert "non-ASCII" in verdict.dropped[0].reason


@pytest.mark.parametrize(
    "sentinel",
    [
        "PROXY reject.docker.internal]",
        "PROXY reject.docker.internal/",
        "PROXY reject.docker.internal\x00:1",
        "PROXY\xa0reject.docker.internal:1",
        "PROXY\x1creject.docker.internal",
        "reject.docker.internal:1",
    ],
)
def test_sentinel_with_junk_around_it_still_blocks(sentinel: str) -> None:
    # these were dropped as invalid entries, so the DIRECT after them was used
    verdict = decide_routes(f"{sentinel}; DIRECT")
    assert verdict.rejected and verdict.routes == ()


@pytest.mark.parametrize(
    "sentinel",
    [
        # a leading "." or "*." was read as "a subdomain, so not the sentinel", then dropped
        "PROXY .reject.docker.internal",
        "PROXY *.reject.docker.internal",
        "PROXY .reject.docker.internal:1",
        # junk next to the name made a valid-looking route to an invalid host
        "PROXY reject.docker.internal-",
        "PROXY -reject.docker.internal",
        "PROXY reject.docker.internal._",
        "PROXY reject.docker.internal-:80",
        "PROXY _reject.docker.internal:80",
    ],
)
def test_sentinel_with_a_prefix_or_suffix_blocks(sentinel: str) -> None:
    verdict = decide_routes(f"{sentinel}; DIRECT")
    assert verdict.rejected and verdict.routes == ()
    assert "reject.docker.internal" in verdict.reason


@pytest.mark.parametrize(
    "sentinel",
    [
        "PROXY \uff52\uff45\uff4a\uff45\uff43\uff54.docker.internal:1",  # fullwidth
        "PROXY reject.doc\u212aer.internal:1",  # KELVIN SIGN
        "PROXY reject.docker.\u0131nternal:1",  # dotless i
        "PROXY reject.docker.\u0130nternal:1",  # capital I with dot
        "PROXY r\u0435ject.docker.internal:1",  # Cyrillic ie
        "PROXY reje\u0301ct.docker.internal:1",  # combining accent
        "PROXY re\u200bject.docker.internal:1",  # zero-width space
        "PROXY reject\u2060.docker.internal:1",  # word joiner
        "PROXY reject\u00ad.docker.internal:1",  # soft hyphen
        "PROXY reject\u3002docker\uff0einternal:1",  # ideographic / fullwidth full stops
        "PROXY xn--rject-zwe.docker.internal:1",  # punycode of a Cyrillic look-alike
        "PROXY %72eject.docker.internal:1",
        "PROXY reject%2Edocker%2Einternal:1",
        "PROXY reject%252Edocker%252Einternal:1",  # double encoding
        "PROXY \\x72eject.docker.internal:1",  # an escape left in the string as text
        "PROXY reject.docker.internal.....:1",
        "PROXY reject..docker.internal:1",
        "PROXY REJECT-DOCKER_INTERNAL:1",
    ],
)
def test_disguised_sentinel_blocks(sentinel: str) -> None:
    # each was dropped as an invalid entry (or taken as a route), so the DIRECT after it won
    verdict = decide_routes(f"PROXY a.example:1; {sentinel}; DIRECT")
    assert verdict.rejected
    assert verdict.routes == (Route("PROXY", "a.example", 1),)
