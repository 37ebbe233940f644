"""Property tests: `pac-eval` targets (pac/target.py) and the lint pass (pac/lint.py).

A target is user input on the command line: anything unusable is a TargetError (pac-eval
prints it), never a traceback. The lint pass reads hostile scripts: bounded time, no raise.
"""

from __future__ import annotations

import re
import time

from hypothesis import example, given
from hypothesis import strategies as st

from pac.lint import LintWarning, lint
from pac.target import Target, TargetError, canonical_host, parse_target, proxy_url

_URL = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+):([0-9]{1,5})")

_target_pieces = st.one_of(
    st.sampled_from(["http://", "https://", "ftp://", "ws://", "[", "]", ":", "@", "/", "?"]),
    st.sampled_from(
        ["a.example", "A.Example.", "b\u00fccher.de", "10.0.0.1", "::1", "::ffff:1.2.3.4"]
    ),
    st.sampled_from(["fe80::1%eth0", "%25", "80", "443", "0", "65536", "\u00b2", "\uff11", "xn--"]),
    st.text(max_size=5),
)
targets = st.one_of(st.lists(_target_pieces, max_size=8).map("".join), st.text(max_size=60))


def _check_target(target: Target, raw_url: bool) -> None:
    assert isinstance(target, Target)
    assert target.host and target.host.isascii()
    assert canonical_host(target.host) == target.host  # canonical: a fixed point
    if raw_url:
        return
    m = _URL.fullmatch(target.url)
    assert m, target
    port = int(m.group(3))
    assert 1 <= port <= 65535
    assert target.url == proxy_url(target.host, port)


@given(targets, st.booleans())
@example("a:\u00b2", False)  # str.isdigit() digit that int() refuses: ValueError
@example("a:\uff11\uff12", False)  # fullwidth digits were read as port 12
@example("http://[::1", False)  # urlsplit's ValueError
@example("[fe80::1%eth0]:80", False)  # a scope id the proxy never passes
def test_parse_target_gives_a_canonical_target_or_target_error(text: str, raw: bool) -> None:
    try:
        target = parse_target(text, raw_url=raw)
    except TargetError as exc:
        assert str(exc)
        return
    _check_target(target, raw)


@given(
    st.one_of(
        st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}\.[a-z]{2,5}", fullmatch=True),
        st.ip_addresses().map(str),
    ),
    st.integers(1, 65535),
)
def test_host_port_round_trip(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    target = parse_target(f"{shown}:{port}")
    assert target.url == proxy_url(target.host, port)
    assert parse_target(target.url) == Target(target.url, target.host)


# ----------------------------------------------------------------- lint

_js_pieces = st.one_of(
    st.sampled_from(["shExpMatch(url, ", "shExpMatch(host, ", "dnsDomainIs(host, ", "host == "]),
    st.sampled_from(
        ["url.indexOf(", "function FindProxyForURL(u, h) {", "new Date(", "timeRange("]
    ),
    st.sampled_from(
        ["isInNetEx(host, ", "::/0", "::ffff:0:0/", "/96", "/1000", "FindProxyForURLEx = "]
    ),
    st.sampled_from(['"', "'", "`", "\\", "\\\\", "//", "/*", "*/", "\n", "*/api/*", "http://a"]),
    st.text(max_size=5),
)
scripts = st.one_of(st.lists(_js_pieces, max_size=30).map("".join), st.text(max_size=300))


@given(scripts)
def test_lint_never_raises_and_points_at_real_lines(src: str) -> None:
    found = lint(src)
    assert all(isinstance(w, LintWarning) for w in found)
    assert found == sorted(found, key=lambda w: (w.line, w.code))
    lines = src.count("\n") + 1
    for w in found:
        assert 1 <= w.line <= lines, (w, src)
        assert w.code in ("url-path", "url-port", "name-port", "clock", "prefix-family", "ex-entry")


@given(st.sampled_from(['shExpMatch(url, "', 'url.indexOf("', "host == '", 'dnsDomainIs(host, "']))
def test_lint_is_linear_on_runs_of_backslashes(call: str) -> None:
    # an unterminated string of backslashes backtracked exponentially (36 took 5 s)
    src = "function FindProxyForURL(url, host) {\n  " + call + "\\" * 20_000 + "x\n}"
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    assert lint(src) == []
    assert time.process_time() - started < 1.0
