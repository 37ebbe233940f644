"""Where PAC implementations disagree, the answer is Chromium's, on both engines, through the
library and through `pac-eval`; lint names the footguns that come with it.

* `isInNetEx` across address families: Chromium (IPAddressMatchesPrefix) compares an IPv4
  address as `::ffff:a.b.c.d`, so `::/0` matches IPv4 addresses too (pacparser: never).
* `getClientVersion` is not defined in Chromium (pacparser and WinHTTP define it).
* `FindProxyForURLEx` is never called by Chromium: a script with only that entry point does
  not load ("FindProxyForURL() is undefined"); pacparser and WinHTTP would call it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pac.engine import ENGINES, PacLoadError, load_engine
from pac.env import PacEnv
from pac.lint import lint, load_hints, v4_covered
from tests.unit.pac.test_cli import pac_eval

IPV6_DIRECT = """\
function FindProxyForURL(url, host) {
  if (isInNetEx(host, "::/0")) return "DIRECT";
  return "PROXY v4only.example:3128";
}
"""
MAPPED_TEN = """\
function FindProxyForURL(url, host) {
  if (isInNetEx(host, "::ffff:10.0.0.0/104")) return "PROXY mapped-ten.example:1";
  if (isInNetEx(host, "10.0.0.0/8")) return "PROXY ten.example:1";
  return "DIRECT";
}
"""
CLIENT_VERSION = """\
function FindProxyForURL(url, host) {
  if (typeof getClientVersion == "function") return "PROXY winhttp.example:1";
  return "PROXY chromium.example:1";
}
"""
EX_ONLY = 'function FindProxyForURLEx(url, host) { return "DIRECT"; }\n'
EX_AND_PLAIN = """\
function FindProxyForURL(url, host) { return "PROXY plain.example:1"; }
function FindProxyForURLEx(url, host) { return "DIRECT"; }
"""


# ----------------------------------------------------------------- the library


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("script", "host", "chromium"),
    [
        (IPV6_DIRECT, "203.0.113.7", "DIRECT"),  # pacparser: PROXY v4only.example:3128
        (IPV6_DIRECT, "2001:db8::7", "DIRECT"),
        (IPV6_DIRECT, "db.example", "PROXY v4only.example:3128"),  # literals only, no DNS
        (MAPPED_TEN, "10.20.30.40", "PROXY mapped-ten.example:1"),  # pacparser: ten
        (MAPPED_TEN, "::ffff:10.20.30.40", "PROXY mapped-ten.example:1"),
        (MAPPED_TEN, "11.0.0.1", "DIRECT"),
        (CLIENT_VERSION, "a.example", "PROXY chromium.example:1"),  # pacparser: winhttp
        (EX_AND_PLAIN, "a.example", "PROXY plain.example:1"),  # pacparser: DIRECT (the Ex)
    ],
)
def test_library_answers_as_chromium(engine: str, script: str, host: str, chromium: str) -> None:
    with load_engine(engine, script) as pac:
        result = pac.evaluate(f"http://{host}:80", host, PacEnv())
        assert (result.error, result.result) == (None, chromium)


@pytest.mark.parametrize("engine", ENGINES)
def test_library_refuses_a_script_with_only_findproxyforurlex(engine: str) -> None:
    with pytest.raises(PacLoadError) as caught:
        load_engine(engine, EX_ONLY).close()  # closed even where it loads
    error = caught.value.error
    assert (error.kind, error.message) == ("no_entrypoint", "FindProxyForURL() is undefined")
    (hint,) = load_hints(EX_ONLY, error)
    assert "rename it to 'FindProxyForURL'" in hint


# ----------------------------------------------------------------- pac-eval


@pytest.fixture
def pacs(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, text in {
        "ipv6": IPV6_DIRECT,
        "mapped": MAPPED_TEN,
        "version": CLIENT_VERSION,
        "ex-only": EX_ONLY,
        "ex-and-plain": EX_AND_PLAIN,
    }.items():
        path = tmp_path / f"{name}.pac"
        path.write_text(text)
        out[name] = str(path)
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_pac_eval_answers_as_chromium(engine: str, pacs: dict[str, str]) -> None:
    cases = [
        ("ipv6", ["203.0.113.7:8443", "[2001:db8::7]:8443"], ["DIRECT", "DIRECT"]),
        ("mapped", ["10.20.30.40:22", "11.0.0.1:22"], ["PROXY mapped-ten.example:1", "DIRECT"]),
        ("version", ["a.example:443"], ["PROXY chromium.example:1"]),
        ("ex-and-plain", ["a.example:443"], ["PROXY plain.example:1"]),
    ]
    for name, targets, chromium in cases:
        proc = pac_eval(pacs[name], *targets, "--no-dns", "--bare", "--engine", engine)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == chromium, name


@pytest.mark.parametrize("engine", ENGINES)
def test_pac_eval_says_findproxyforurlex_alone_does_not_load(
    engine: str, pacs: dict[str, str]
) -> None:
    proc = pac_eval(pacs["ex-only"], "a.example:443", "--no-dns", "--engine", engine)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert (
        lines[0] == "pac-eval: the PAC does not load: no_entrypoint: FindProxyForURL() is undefined"
    )
    assert lines[1].startswith("pac-eval: hint: the script defines 'FindProxyForURLEx' only")
    assert "rename it to 'FindProxyForURL'" in lines[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_pac_eval_lint_names_the_footguns(engine: str, pacs: dict[str, str]) -> None:
    proc = pac_eval(pacs["ipv6"], "--lint", "--engine", engine)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("line 2: prefix-family: isInNetEx prefix '::/0' also matches")
    assert "every IPv4 address" in proc.stdout
    mapped = pac_eval(pacs["mapped"], "--lint", "--engine", engine).stdout
    assert "line 2: prefix-family" in mapped and "the IPv4 addresses 10.0.0.0/8" in mapped
    assert "line 3" not in mapped  # an IPv4 prefix is what it says
    both = pac_eval(pacs["ex-and-plain"], "--lint", "--engine", engine).stdout
    assert both.startswith("line 2: ex-entry: FindProxyForURLEx is never called")


# ----------------------------------------------------------------- lint


def codes(src: str) -> list[tuple[int, str]]:
    return [(w.line, w.code) for w in lint(src)]


@pytest.mark.parametrize(
    ("prefix", "covered"),
    [
        ("::/0", "0.0.0.0/0"),
        ("::/80", "0.0.0.0/0"),
        ("::/81", None),  # ::ffff:a.b.c.d has ones in bits 80-95
        ("::/96", None),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("0:0:0:0:0:FFFF:0:0/96", "0.0.0.0/0"),
        ("::fffe:0:0/95", "0.0.0.0/0"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:a00:0/104", "10.0.0.0/8"),
        ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
        (" ::/0 ", "0.0.0.0/0"),  # Chromium trims whitespace around each part
        (":: / 0", "0.0.0.0/0"),
        ("::/00000080", "0.0.0.0/0"),  # leading zeros in the length
        ("::/0/0", None),
        ("::/\u00a00", None),  # non-ASCII: the helper answers false
        ("::/+0", None),
        ("::ffff:0:0/129", None),
        ("2000::/3", None),
        ("fd00::/8", None),
        ("10.0.0.0/8", None),  # an IPv4 prefix: no surprise
        ("::/", None),
        ("::/-1", None),
        ("::/" + "9" * 5000, None),
        ("not a prefix", None),
        ("a:b/c", None),
    ],
)
def test_v4_covered(prefix: str, covered: str | None) -> None:
    want = None if covered is None else ipaddress.IPv4Network(covered)
    assert v4_covered(prefix) == want


def test_v4_covered_agrees_with_the_helper() -> None:
    """The lint's reading of a prefix and the helper's answer for IPv4 addresses match."""
    prefixes = ["::/0", "::/80", "::/81", "::/96", "::ffff:0:0/96", "::ffff:10.0.0.0/104",
                "::ffff:10.1.2.3/128", "2000::/3", "::fffe:0:0/95", " ::/ 0", "::/0080",
                "::/0/0", "::/+0", "::ffff:0:0/0129"]  # fmt: skip
    addrs = ["10.1.2.3", "10.200.0.1", "192.0.2.1"]
    probe = "function FindProxyForURL(u, h) { return String(eval(h)); }"
    for engine in ENGINES:
        with load_engine(engine, probe) as pac:
            for prefix in prefixes:
                covered = v4_covered(prefix)
                for addr in addrs:
                    expr = f'isInNetEx("{addr}", "{prefix}")'
                    got = pac.evaluate("http://x:80", expr, PacEnv()).result
                    want = covered is not None and ipaddress.IPv4Address(addr) in covered
                    assert got == str(want).lower(), (engine, expr)


def test_prefix_family_only_in_a_script_that_uses_isinnetex() -> None:
    src = (
        "function FindProxyForURL(url, host) {\n"
        '  var nets = ["::/0", "2001:db8::/32"];\n'
        "  for (var i = 0; i < nets.length; i++)\n"
        '    if (isInNetEx(host, nets[i])) return "DIRECT";\n'
        '  return "PROXY p:1";\n}'
    )
    assert codes(src) == [(2, "prefix-family")]
    assert codes(src.replace("isInNetEx", "myMatch")) == []
    commented = src.replace("isInNetEx(host, nets[i])", "false /* isInNetEx */")
    assert codes(commented) == []


def test_ex_entry() -> None:
    assert codes(EX_AND_PLAIN) == [(2, "ex-entry")]
    assigned = 'function FindProxyForURL(u, h) { return "DIRECT"; }\nFindProxyForURLEx = 1;'
    assert codes(assigned) == [(2, "ex-entry")]
    compared = "function FindProxyForURL(u, h) { return FindProxyForURLEx == 1; }"
    assert codes(compared) == []


def test_lint_reads_parameters_of_findproxyforurl_not_of_the_ex_variant() -> None:
    src = (
        'function FindProxyForURLEx(a, b) { return "DIRECT"; }\n'
        "function FindProxyForURL(url, host) {\n"
        '  if (shExpMatch(url, "*/api/*")) return "x";\n}'
    )
    assert codes(src) == [(1, "ex-entry"), (3, "url-path")]
