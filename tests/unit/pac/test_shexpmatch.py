"""shExpMatch keeps Chromium's answers (a glob turned into an anchored regular expression:
`.` escaped, `*` -> `.*`, `?` -> `.`) without its exponential time on hostile names, in
both engines (pacparser's own built-in shExpMatch is replaced as well)."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pac.engine import ENGINES, PacEngine, load_engine
from pac.env import PacEnv
from pac.sandbox import Limits, PacSandbox

# Chromium's shExpMatch verbatim (services/proxy_resolver/pac_js_library.h), as the
# reference; the case arrives URL-encoded in `host`, so it may hold any character.
COMPARE = r"""
function chromium(url, pattern) {
  pattern = pattern.replace(/\./g, '\\.');
  pattern = pattern.replace(/\*/g, '.*');
  pattern = pattern.replace(/\?/g, '.');
  var newRe = new RegExp('^' + pattern + '$');
  return newRe.test(url);
}
function outcome(f, s, p) { try { return String(f(s, p)); } catch (e) { return "throws"; } }
function FindProxyForURL(url, host) {
  var c = JSON.parse(decodeURIComponent(host));
  return "PROXY " + outcome(shExpMatch, c[0], c[1]) + ":" + outcome(chromium, c[0], c[1]);
}
"""

HOSTILE_PATTERN = "*.*.*.*.*.*.*.*.corp.example"
HOSTILE_NAME = "a." * 40 + "b"  # 81 characters: Chromium's regex backtracks for hours


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[PacEngine]:
    pac = load_engine(request.param, COMPARE)
    yield pac
    pac.close()


def both(engine: PacEngine, text: str, pattern: str) -> tuple[str, str]:
    """(ours, Chromium's) for one case, each "true", "false" or "throws"."""
    arg = urllib.parse.quote(json.dumps([text, pattern]))
    result = engine.evaluate("http://probe.invalid:80", arg, PacEnv())
    assert result.result is not None, result.error
    ours, _, theirs = result.result.removeprefix("PROXY ").partition(":")
    return ours, theirs


TEXT = st.text(st.sampled_from("ab.*?-\n\r\u2028\u2029é"), max_size=8)
GLOB = st.text(st.sampled_from("ab.*?-\n\u2028é"), max_size=7)
# Anything else a pattern can hold stays a regular expression, as in Chromium.
REGEX = st.text(st.sampled_from("ab.*?+()[]|\\^${}"), max_size=6)


@settings(max_examples=400, deadline=None)
@given(text=TEXT, pattern=GLOB | REGEX)
@example(text="a\nb", pattern="a*b")  # `*` does not cross a line terminator
@example(text="a\nb", pattern="a?b")
@example(text="a\nb", pattern="a\n*")
@example(text="\u2028", pattern="*")
@example(text="aXb", pattern="a.b")  # "." is literal
@example(text="a*b", pattern="a*b")
@example(text="", pattern="")
@example(text="", pattern="**")
@example(text="ab", pattern="*?*?*")
@example(text="aab", pattern="*ab")  # a mismatch after the star resumes one further on
def test_agrees_with_chromiums_regex(engine: PacEngine, text: str, pattern: str) -> None:
    ours, theirs = both(engine, text, pattern)
    assert ours == theirs, (text, pattern)


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("www.example.com", "*.example.com", "true"),
        ("example.com", "*.example.com", "false"),
        ("srv-01x", "srv-???", "true"),
        ("a.b.c.d.e.f.g.h.corp.example", HOSTILE_PATTERN, "true"),
        ("static.example.com", "(www|static).example.com", "true"),
        ("a+b", "a+b", "false"),
        ("a", "[a-z", "throws"),
    ],
)
def test_known_answers(engine: PacEngine, text: str, pattern: str, expected: str) -> None:
    assert both(engine, text, pattern) == (expected, expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('shExpMatch(42, "4*")', "true"),  # a non-string url is converted, as by RegExp.test
        ('shExpMatch("x.y", new String("*.y"))', "true"),  # a String object pattern
    ],
)
def test_non_string_arguments_keep_chromiums_answers(expr: str, expected: str) -> None:
    src = f'function FindProxyForURL(u, h) {{ return "PROXY " + ({expr}) + ":1"; }}'
    for name in ENGINES:
        pac = load_engine(name, src)
        try:
            result = pac.evaluate("http://x:80", "x", PacEnv())
        finally:
            pac.close()
        assert result.result == f"PROXY {expected}:1", (name, result)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_hostile_name_is_matched_at_once(engine_name: str) -> None:
    """The glob with eight `*` and an 81-character `a.a.a...b` took Chromium's regex past
    the 1 s bound (and every connection with such a name cost an engine restart)."""
    src = (
        "function FindProxyForURL(url, host) {"
        f' return shExpMatch(host, "{HOSTILE_PATTERN}") ? "DIRECT" : "PROXY no.example:1"; }}'
    )
    with PacSandbox(src, engine_name, Limits(time=1.0)) as sandbox:
        started = time.monotonic()
        for name in (HOSTILE_NAME, "b." * 2000 + "a", "x.corp.example." * 100 + "y"):
            result = sandbox.evaluate(f"http://{name}:80", name)
            assert result.result == "PROXY no.example:1", result.error
        assert time.monotonic() - started < 0.5
        assert sandbox.respawns == 0


@pytest.mark.parametrize("engine_name", ENGINES)
def test_other_helpers_take_linear_time_on_long_hostile_strings(engine_name: str) -> None:
    """The helpers a script applies to the client's name, on 60,000-character strings of
    dots, colons or digits: each well inside the bound (no helper is super-linear, and an
    IPv6 parse refuses anything longer than the longest literal before splitting it)."""
    calls = [
        'dnsDomainIs(host, ".a.b")',
        'localHostOrDomainIs(host, host + "x")',
        'isInNet(host, "10.0.0.0", "255.0.0.0")',
        "isInNet(host, host, host)",
        "dnsDomainLevels(host)",
        "isPlainHostName(host)",
        "sortIpAddressList(host)",
        "isInNetEx(host, host)",
        "isResolvable(host)",
        "dnsResolveEx(host)",
        "weekdayRange(host, host)",
        "dateRange(host, host, host, host)",
        "timeRange(host, host, host, host)",
    ]
    body = "".join(f"try {{ {call}; }} catch (e) {{}}\n" for call in calls)
    src = f'function FindProxyForURL(url, host) {{\n{body} return "DIRECT"; }}'
    with PacSandbox(src, engine_name, Limits(time=5.0)) as sandbox:
        for host in ("a." * 30000, "1:" * 30000, "1.2.3." * 10000, "::" + "f:" * 30000):
            started = time.monotonic()
            result = sandbox.evaluate("http://x:80", host)
            assert result.result == "DIRECT", result.error
            assert time.monotonic() - started < 0.5, host[:10]
