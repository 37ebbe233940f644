"""Warnings for PAC rules that cannot work as the container proxy calls the script.

Browsers pass full URLs; the proxy passes `scheme://host:port` only, and on ports other
than 80/443 it knows no name, only the IP. A script written for browsers can therefore
contain rules that silently never match. This pass finds the common shapes statically
(it reads the text; it never runs the script):

* `url-path`: a pattern on the URL that expects a path (`shExpMatch(url, "*/api/*")`);
* `url-port`: a URL pattern with a host but no port, which never matches `host:port`;
* `name-port`: name rules (`dnsDomainIs(host, ...)`, `host == "..."`, ...) only fire on
  ports 80/443, where a name is sniffed; elsewhere `host` is an IP;
* `clock`: time functions or `Date`, whose answers change with the clock (such results
  are never cached).

And two places where Chromium's answer surprises authors who tested elsewhere (we answer
as Chromium does, and say so here):

* `prefix-family`: an IPv6 prefix given to `isInNetEx` that also matches IPv4 addresses
  (`::/0` to `::/80`, `::ffff:0:0/96` and its sub-prefixes): Chromium compares an IPv4
  address as `::ffff:a.b.c.d`, so `isInNetEx(host, "::/0")` is true for every address;
* `ex-entry`: `FindProxyForURLEx` is defined, but Chromium only ever calls
  `FindProxyForURL` (pacparser and WinHTTP prefer the `Ex` one).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LintWarning:
    """One finding: script line (1-based), a stable code, and what to do about it."""

    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.code}: {self.message}"


def _strip_comments(src: str) -> str:
    """Blank out comments (keeping line breaks and string literals) so they never match."""
    out: list[str] = []
    i, n = 0, len(src)
    quote: str | None = None
    while i < n:
        c = src[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(src[i + 1])
                i += 2
                continue
            if c == quote or c == "\n":
                quote = None
            i += 1
        elif c in "\"'`":
            quote = c
            out.append(c)
            i += 1
        elif src.startswith("//", i):
            end = src.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif src.startswith("/*", i):
            end = src.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in src[i:end]))
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)


class _Lines:
    """Line numbers of offsets in `src`, by bisection (counting newlines per finding made a
    script with many findings quadratic)."""

    def __init__(self, src: str) -> None:
        self._breaks = [m.start() for m in re.finditer("\n", src)]

    def of(self, pos: int) -> int:
        return bisect.bisect_left(self._breaks, pos) + 1


_ENTRY = re.compile(r"function\s+FindProxyForURL\s*\(\s*([\w$]+)\s*,\s*([\w$]+)\s*\)")
_EX_ENTRY = re.compile(r"\bfunction\s+FindProxyForURLEx\b|\bFindProxyForURLEx\s*=(?!=)")
_IS_IN_NET_EX = re.compile(r"\bisInNetEx\b")
_PREFIX_LEN = re.compile(r"0*([0-9]{1,3})")  # decimal, leading zeros allowed, then <= 128
_ASCII_SPACE = " \t\n\v\f\r"
#: IPv4 addresses as Chromium's isInNetEx compares them with an IPv6 prefix.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
# A string literal on one line. A backslash is only ever read as an escape (`[^\\\n]`
# excludes it from the other branch): with `.` there, a run of backslashes before a missing
# quote could be split two ways per backslash, and the match backtracked exponentially.
_STR = r"""(?P<q>["'])(?P<s>(?:\\.|(?!(?P=q))[^\\\n])*)(?P=q)"""
_CLOCK = re.compile(
    r"\b(weekdayRange|dateRange|timeRange)\s*\(|\bnew\s+Date\s*\(|\bDate\s*\.\s*now\b"
)


def _url_pattern_problem(pattern: str) -> tuple[str, str] | None:
    """(code, why) when a URL pattern cannot match `scheme://host:port`."""
    _, sep, rest = pattern.partition("://")
    if not sep:
        rest = pattern.lstrip("*")
        if "/" in rest:
            return "url-path", "expects a path"
        return None
    if "/" in rest.rstrip("*") or rest.endswith("/"):
        return "url-path", "expects a path"
    host_part = rest
    if host_part and "*" not in host_part and "?" not in host_part and ":" not in host_part:
        return "url-port", "has no port, but the proxy's URL always carries one"
    return None


def v4_covered(prefix: str) -> ipaddress.IPv4Network | None:
    """The IPv4 addresses an IPv6 `isInNetEx` prefix also matches in Chromium, else None.

    Chromium (IPAddressMatchesPrefix) turns an IPv4 address into `::ffff:a.b.c.d` before
    comparing it with an IPv6 prefix, so any prefix that overlaps `::ffff:0:0/96` covers
    IPv4 addresses: all of them up to /96 (`::/0` .. `::/80`, `::ffff:0:0/96`), part of
    them beyond (`::ffff:10.0.0.0/104` is 10.0.0.0/8). The text is read as the helper
    reads it, which is Chromium's ParseCIDRBlock (ASCII whitespace around either part
    ignored, leading zeros in the length).
    """
    parts = prefix.split("/")
    if len(parts) != 2 or not prefix.isascii():  # the helper refuses non-ASCII text
        return None
    addr_text, len_text = (part.strip(_ASCII_SPACE) for part in parts)
    length = _PREFIX_LEN.fullmatch(len_text)
    if ":" not in addr_text or length is None:
        return None
    bits = int(length.group(1))
    try:
        net = ipaddress.IPv6Network(f"{addr_text}/{bits}", strict=False)
    except ValueError:
        return None
    if not net.overlaps(_MAPPED):
        return None
    if bits <= 96:
        return ipaddress.IPv4Network("0.0.0.0/0")
    return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, bits - 96))


def _prefix_warnings(code: str, lines: _Lines) -> list[LintWarning]:
    """`prefix-family`: string literals that are such prefixes, in a script using isInNetEx."""
    if not _IS_IN_NET_EX.search(code):
        return []
    out = []
    for m in re.finditer(_STR, code):
        text = m.group("s")
        covered = v4_covered(text)
        if covered is None:
            continue
        if covered.prefixlen == 0:
            which, fix = "every IPv4 address", "to match IPv6 addresses only, test for a ':' first"
        else:
            which, fix = f"the IPv4 addresses {covered}", f"write {str(covered)!r} if that is meant"
        out.append(
            LintWarning(
                lines.of(m.start()),
                "prefix-family",
                f"isInNetEx prefix {text!r} also matches {which} (Chromium compares an IPv4 "
                f"address as ::ffff:a.b.c.d); {fix}",
            )
        )
    return out


def lint(src: str) -> list[LintWarning]:
    """All findings, in line order."""
    code = _strip_comments(src)
    lines = _Lines(code)
    url_name, host_name = "url", "host"
    entry = _ENTRY.search(code)
    if entry:
        url_name, host_name = entry.group(1), entry.group(2)
    warnings: list[LintWarning] = []

    url_calls = re.compile(
        rf"(?:shExpMatch\s*\(\s*{re.escape(url_name)}\s*,|"
        rf"\b{re.escape(url_name)}\s*\.\s*(?:indexOf|includes|startsWith|endsWith|match)\s*\()"
        rf"\s*{_STR}"
    )
    for m in url_calls.finditer(code):
        problem = _url_pattern_problem(m.group("s"))
        if problem:
            kind, why = problem
            warnings.append(
                LintWarning(
                    lines.of(m.start()),
                    kind,
                    f"URL pattern {m.group('s')!r} {why}; the container proxy passes "
                    "only scheme://host:port, so this rule never matches",
                )
            )

    h = re.escape(host_name)
    name_rules = [
        re.compile(rf"(?:dnsDomainIs|localHostOrDomainIs|shExpMatch)\s*\(\s*{h}\s*,\s*{_STR}"),
        re.compile(rf"\b{h}\s*===?\s*{_STR}"),
    ]
    name_lines = []
    for rule in name_rules:
        for m in rule.finditer(code):
            if re.search(r"[a-zA-Z]", m.group("s")):
                name_lines.append(lines.of(m.start()))
    if name_lines:
        name_lines.sort()
        shown = ", ".join(str(n) for n in sorted(set(name_lines))[:10])
        warnings.append(
            LintWarning(
                name_lines[0],
                "name-port",
                f"name rules (lines {shown}) only fire on ports 80/443: on other ports the "
                "proxy knows no name and passes the destination IP as host",
            )
        )

    for m in _CLOCK.finditer(code):
        what = m.group(1) or "Date"
        warnings.append(
            LintWarning(
                lines.of(m.start()),
                "clock",
                f"{what} makes the answer depend on the clock; such results are not cached",
            )
        )
    warnings.extend(_prefix_warnings(code, lines))
    for m in _EX_ENTRY.finditer(code):
        warnings.append(
            LintWarning(
                lines.of(m.start()),
                "ex-entry",
                "FindProxyForURLEx is never called: Chromium (and the proxy) call "
                "FindProxyForURL only; pacparser and WinHTTP would call FindProxyForURLEx",
            )
        )
    return sorted(warnings, key=lambda w: (w.line, w.code))


_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_HTML = re.compile(r"\s*(?:<!doctype\s+html|<html|<head|<body|<\?xml|<!--|<[a-z])", re.I)


def load_hints(script: str, error: object) -> list[str]:
    """What probably went wrong when a script does not load, for the error message.

    Three mistakes that the engine's own message hides: an entry point spelled with another
    case (`FindProxyforURL`: JavaScript names are case-sensitive, so "FindProxyForURL() is
    undefined"); only `FindProxyForURLEx` defined, which pacparser and WinHTTP call but
    Chromium never does; and an HTML page (a login or error page) served in place of the
    PAC, which fails with a syntax error at its first `<`.
    """
    kind = getattr(error, "kind", None)
    hints: list[str] = []
    if kind == "no_entrypoint":
        code = _strip_comments(script)
        near = sorted(
            {
                m.group()
                for m in _IDENT.finditer(code)
                if m.group().lower() in ("findproxyforurl", "findproxyforurlex")
                and m.group() != "FindProxyForURL"
            }
        )
        for name in near:
            if name == "FindProxyForURLEx":
                hints.append(
                    "the script defines 'FindProxyForURLEx' only: Chromium (and the proxy)"
                    " call 'FindProxyForURL' and never the Ex variant (pacparser and WinHTTP"
                    " do); rename it to 'FindProxyForURL'"
                )
            else:
                hints.append(
                    f"the script names {name!r}: did you mean 'FindProxyForURL'? (names are"
                    " case-sensitive, and Chromium calls no other entry point)"
                )
    if kind in ("script_error", "no_entrypoint") and _HTML.match(script.lstrip("\ufeff")):
        hints.append(
            "the PAC looks like an HTML page, not JavaScript (a login, error or directory"
            " page served instead of the script?): check the URL or file"
        )
    return hints
