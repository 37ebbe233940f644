"""The lint pass and the normalisation of `pac-eval` targets."""

from __future__ import annotations

import time

import pytest

from pac.lint import lint
from pac.target import TargetError, parse_target, proxy_url


def codes(src: str) -> list[tuple[int, str]]:
    return [(w.line, w.code) for w in lint(src)]


def test_url_pattern_with_path() -> None:
    src = 'function FindProxyForURL(url, host) {\n  if (shExpMatch(url, "*/api/*")) return "x";\n}'
    assert codes(src) == [(2, "url-path")]


def test_url_pattern_without_port_and_renamed_parameters() -> None:
    src = (
        'function FindProxyForURL(u, h) {\n\n  if (shExpMatch(u, "https://a.example")) return 1;\n}'
    )
    assert codes(src) == [(3, "url-port")]


def test_url_patterns_that_can_match_are_quiet() -> None:
    src = (
        "function FindProxyForURL(url, host) {\n"
        '  if (shExpMatch(url, "https://*:443")) return "a";\n'
        '  if (shExpMatch(url, "http://*")) return "b";\n'
        '  if (url.indexOf("https:") == 0) return "c";\n'
        '  return "DIRECT";\n}'
    )
    assert codes(src) == []


def test_name_rules_and_clock() -> None:
    src = (
        "function FindProxyForURL(url, host) {\n"
        '  if (dnsDomainIs(host, ".corp.example")) return "a";\n'
        '  if (host == "intranet") return "b";\n'
        '  if (isInNet(host, "10.0.0.0", "255.0.0.0")) return "c";\n'
        '  if (timeRange(8, 18) || new Date().getDay() == 0) return "d";\n'
        '  return "DIRECT";\n}'
    )
    found = lint(src)
    assert [(w.line, w.code) for w in found] == [(2, "name-port"), (5, "clock"), (5, "clock")]
    assert "lines 2, 3" in found[0].message


def test_comments_are_ignored() -> None:
    src = (
        '// shExpMatch(url, "*/x/*") timeRange(1)\n'
        '/* new Date() */ function FindProxyForURL(url, host) { return "DIRECT"; }'
    )
    assert lint(src) == []


@pytest.mark.parametrize(
    ("text", "url", "host"),
    [
        ("example.com:443", "https://example.com:443", "example.com"),
        ("Example.COM.:8080", "http://example.com:8080", "example.com"),
        ("[2001:DB8::1]:22", "http://[2001:db8::1]:22", "2001:db8::1"),
        ("[::ffff:192.0.2.1]:80", "http://192.0.2.1:80", "192.0.2.1"),
        ("192.0.2.1:443", "https://192.0.2.1:443", "192.0.2.1"),
        ("https://bücher.example/", "https://xn--bcher-kva.example:443", "xn--bcher-kva.example"),
        ("http://example.com", "http://example.com:80", "example.com"),
        ("wss://example.com", "https://example.com:443", "example.com"),
    ],
)
def test_targets_normalise_like_the_proxy(text: str, url: str, host: str) -> None:
    target = parse_target(text)
    assert (target.url, target.host) == (url, host)


def test_notes() -> None:
    assert "never sees a path" in (parse_target("https://example.com/a?b").note or "")
    assert "scheme from the port" in (parse_target("http://example.com:443").note or "")
    assert parse_target("https://example.com:443").note is None
    raw = parse_target("https://example.com/a?b", raw_url=True)
    assert (raw.url, raw.host, raw.note) == ("https://example.com/a?b", "example.com", None)


@pytest.mark.parametrize(
    "text",
    [
        "example.com",
        "example.com:0",
        "example.com:70000",
        "2001:db8::1:80",
        "under_score.example:80",
        "1.2.3:80",
        "[::1:80",
        "ftp2://x.example",
        "a\x00b:80",
        "-bad.example:80",
        # found by fuzzing: ValueError escaped as a traceback, or a non-ASCII port was read
        "a:\u00b2",
        "a:\uff11\uff12",
        "http://[::1",
        "[fe80::1%eth0]:80",
        "http://[fe80::1%25eth0]:80",
    ],
)
def test_bad_targets(text: str) -> None:
    with pytest.raises(TargetError):
        parse_target(text)


def test_proxy_url() -> None:
    assert proxy_url("::1", 443) == "https://[::1]:443"
    assert proxy_url("example.com", 8443) == "http://example.com:8443"


def test_lint_backslash_run_in_an_unterminated_string_is_linear() -> None:
    # `(?:\\.|.)*` split each backslash two ways: 36 backslashes took 5 s, 50 about an hour
    src = 'function FindProxyForURL(url, host) {\n  shExpMatch(url, "' + "\\" * 5000 + "x\n}"
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    assert lint(src) == []
    assert time.process_time() - started < 1


def test_lint_with_many_findings_is_linear() -> None:
    # the line of each finding was found by counting newlines from the start (quadratic)
    src = "function FindProxyForURL(url, host) {\n" + "x = new Date();\n" * 50_000
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    found = lint(src)
    assert len(found) == 50_000 and found[-1].line == 50_001
    assert time.process_time() - started < 5


def test_lint_escaped_quote_does_not_end_a_string() -> None:
    src = 'function FindProxyForURL(url, host) {\n  shExpMatch(url, "a\\"/b/*");\n}'
    assert [(w.line, w.code) for w in lint(src)] == [(2, "url-path")]
