"""system mode: the proxy environment read with curl's conventions."""

from __future__ import annotations

import json

import pytest

from pac.routes import DIRECT, Route
from rules.config import ConfigError, parse_config_text
from rules.exclude import parse_ip
from rules.model import Destination
from rules.policy import Policy
from rules.system_env import read_system_proxy

SYSTEM = json.dumps({"containersProxy": {"mode": "system", "transparentPorts": "*"}})


def policy(environ: dict[str, str]) -> Policy:
    return Policy.from_config(parse_config_text(SYSTEM, "t.json"), environ)


def test_lower_case_http_proxy_only() -> None:
    env = read_system_proxy({"HTTP_PROXY": "http://upper:1"})
    assert env.http is None
    assert any("HTTP_PROXY ignored" in w for w in env.warnings)
    env = read_system_proxy({"http_proxy": "http://lower:1", "HTTP_PROXY": "http://upper:1"})
    assert env.http == Route("PROXY", "lower", 1)


@pytest.mark.parametrize(
    ("environ", "host"),
    [
        ({"https_proxy": "http://lower:1"}, "lower"),
        ({"HTTPS_PROXY": "http://upper:1"}, "upper"),
        ({"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"}, "lower"),
    ],
)
def test_https_proxy_lower_case_first(environ: dict[str, str], host: str) -> None:
    env = read_system_proxy(environ)
    assert env.https is not None and env.https.host == host


def test_shadowed_upper_case_is_warned() -> None:
    env = read_system_proxy({"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"})
    assert any("HTTPS_PROXY ignored, https_proxy takes precedence" in w for w in env.warnings)
    assert env.https_var == "https_proxy"


def test_empty_lower_case_shadows_upper_case_as_in_curl() -> None:
    env = read_system_proxy({"https_proxy": "", "HTTPS_PROXY": "http://upper:1"})
    assert env.https is None


@pytest.mark.parametrize("value", [" ", "\t", "\n", "  \r\n "])
@pytest.mark.parametrize("var", ["http_proxy", "https_proxy", "HTTPS_PROXY"])
def test_whitespace_only_proxy_is_an_error_not_direct(var: str, value: str) -> None:
    """Only the empty string means "no proxy" (curl); curl fails on " ", so it must not
    silently turn into DIRECT here."""
    with pytest.raises(ConfigError, match=var):
        read_system_proxy({var: value})


def test_no_proxy_lower_case_first() -> None:
    env = read_system_proxy({"no_proxy": "a.example", "NO_PROXY": "b.example"})
    assert env.no_proxy.match("a.example", None) is not None
    assert env.no_proxy.match("b.example", None) is None
    env = read_system_proxy({"NO_PROXY": "b.example"})
    assert env.no_proxy.match("x.b.example", None) is not None


def test_nothing_set_is_direct_with_loud_warning() -> None:
    p = policy({})
    assert any("EVERY CONNECTION GOES DIRECT" in w for w in p.warnings)
    d = p.decide_now(Destination("93.184.216.34", 443, "example.com"))
    assert (d.action, d.routes) == ("DIRECT", (DIRECT,))
    assert d.reason == "system mode: https_proxy not set in the environment: direct"


def test_all_proxy_is_ignored_with_warning() -> None:
    env = read_system_proxy({"ALL_PROXY": "socks5://s:1080"})
    assert env.http is None and env.https is None
    assert any("ALL_PROXY ignored" in w for w in env.warnings)


def test_decisions_from_environment() -> None:
    p = policy(
        {
            "http_proxy": "http://web:3128",
            "HTTPS_PROXY": "socks5://user:pw@socks:1080",
            "no_proxy": "localhost, .corp.example,10.0.0.0/8 ,2001:db8::/32",
        }
    )
    d = p.decide_now(Destination("93.184.216.34", 80, "example.com"))
    assert (d.action, d.routes) == ("PROXY", (Route("PROXY", "web", 3128),))
    assert d.reason.startswith("system mode: port 80 uses http_proxy PROXY web:3128")
    d = p.decide_now(Destination("93.184.216.34", 8443))
    assert d.routes == (Route("SOCKS5", "socks", 1080, "user", "pw"),)
    assert "uses HTTPS_PROXY SOCKS5 socks:1080" in d.reason and "pw" not in d.reason
    d = p.decide_now(Destination("192.0.2.1", 443, "corp.example"))  # leading dot: domain too
    assert (d.action, d.name_based) == ("DIRECT", True)
    assert d.reason == "system mode: no_proxy entry '.corp.example' matched name 'corp.example'"
    d = p.decide_now(Destination("::ffff:10.2.3.4", 22))
    assert (d.action, d.name_based) == ("DIRECT", False)
    assert p.decide_now(Destination("2001:db8::9", 443)).action == "DIRECT"
    assert p.decide_now(Destination("192.0.2.1", 443, "notcorp.example")).action == "PROXY"


def test_no_proxy_star_means_everything() -> None:
    p = policy({"https_proxy": "http://p:1", "no_proxy": " * "})
    for dest in (Destination("93.184.216.34", 443, "example.com"), Destination("2001:db8::1", 22)):
        d = p.decide_now(dest)
        assert (d.action, d.name_based) == ("DIRECT", False)
        assert d.reason == "system mode: no_proxy entry 'no_proxy=*' matches every destination"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("*.corp.example", "no wildcards"),
        ("a.example,*", "no wildcards"),
        ("example.com:443", "ports are not supported"),
        ("10.0.0.0/33", "bad CIDR"),
        ("bad_name", "not a valid host name"),
    ],
)
def test_unusable_no_proxy_entries_dropped_with_warning(value: str, fragment: str) -> None:
    env = read_system_proxy({"https_proxy": "http://p:1", "no_proxy": value})
    assert any("no_proxy entry" in w and fragment in w for w in env.warnings)
    assert env.no_proxy.match("x.corp.example", parse_ip("10.0.0.1")) is None


def test_only_one_variable_set_warns() -> None:
    env = read_system_proxy({"https_proxy": "http://p:1"})
    assert any("http_proxy not set: port 80 connections go DIRECT" in w for w in env.warnings)
    env = read_system_proxy({"http_proxy": "http://p:1"})
    assert any("https_proxy not set" in w for w in env.warnings)


def test_malformed_proxy_variable_refused() -> None:
    with pytest.raises(ConfigError) as info:
        policy({"https_proxy": "http://alice:s3cret@proxy:99999"})
    msg = str(info.value)
    assert msg.startswith("environment variable https_proxy: ")
    assert "out of range" in msg and "s3cret" not in msg


def test_bare_host_port_and_ipv6_in_environment() -> None:
    env = read_system_proxy({"https_proxy": "[2001:db8::1]:3128", "http_proxy": "proxy:8080"})
    assert env.https == Route("PROXY", "2001:db8::1", 3128)
    assert env.http == Route("PROXY", "proxy", 8080)


def test_environment_ignored_in_manual_mode() -> None:
    text = json.dumps({"containersProxy": {"mode": "manual"}})
    p = Policy.from_config(parse_config_text(text, "t.json"), {"https_proxy": "http://p:1"})
    assert p.decide_now(Destination("192.0.2.1", 443)).action == "REJECT"
    assert p.warnings == ()


def test_pac_ignored_in_system_mode() -> None:
    text = json.dumps({"containersProxy": {"mode": "system", "pac": "http://p/p.pac"}})
    p = Policy.from_config(parse_config_text(text, "t.json"), {"https_proxy": "http://p:1"})
    assert not p.uses_pac
    assert any("pac: ignored in system mode" in w for w in p.warnings)
    assert p.decide_now(Destination("192.0.2.1", 443)).action == "PROXY"


@pytest.mark.parametrize("token", ["..example.com", "...example.com", "..", "*"])
def test_no_proxy_entry_with_more_than_one_leading_dot_is_dropped(token: str) -> None:
    """curl drops one leading dot; '..example.com' must not come to match example.com."""
    env = read_system_proxy({"https_proxy": "http://p:1", "no_proxy": f"{token},other.example"})
    assert env.no_proxy.match("example.com", None) is None
    assert env.no_proxy.match("other.example", None) is not None
    assert any(repr(token) in w and "ignored" in w for w in env.warnings), env.warnings
