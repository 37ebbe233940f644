"""admin-settings.json / containersProxy loading: accepted shapes and every refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pac.routes import Route
from rules.config import ConfigError, load_config, parse_config_text
from rules.exclude import parse_ip

DOCS_EXAMPLE = """{
  "configurationFileVersion": 2,
  "containersProxy": {
    "locked": true,
    "mode": "manual",
    "http": "",
    "https": "",
    "exclude": [],
    "pac": "http://192.168.1.16:62039/proxy.pac",
    "transparentPorts": "*"
  }
}"""


def parse(obj: object) -> object:
    return parse_config_text(json.dumps(obj), "test.json")


def refused(obj: object | str) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "test.json")
    return str(info.value)


def test_docs_example_whole_file() -> None:
    cfg = parse_config_text(DOCS_EXAMPLE, "admin-settings.json")
    assert cfg.locked is True
    assert cfg.mode == "manual"
    assert cfg.http is None and cfg.https is None
    assert cfg.pac == "http://192.168.1.16:62039/proxy.pac"
    assert cfg.embedded_pac is None
    assert cfg.uses_pac
    assert cfg.transparent_ports.is_all
    assert cfg.exclude_entries == ()
    assert cfg.warnings == ()
    assert cfg.source == "admin-settings.json"


def test_bare_containers_proxy_object() -> None:
    cfg = parse({"mode": "manual", "https": "http://proxy.corp:3128", "exclude": "a.example b"})
    assert cfg.https == Route("PROXY", "proxy.corp", 3128)
    assert cfg.exclude_entries == ("a.example", "b")
    assert cfg.exclude.match("x.a.example", None) is not None


def test_version_absent_is_accepted() -> None:
    cfg = parse({"containersProxy": {"mode": "manual"}, "enhancedContainerIsolation": {"value": 1}})
    assert cfg.mode == "manual"


def test_other_top_level_keys_are_ignored() -> None:
    cfg = parse(
        {
            "configurationFileVersion": 2,
            "proxy": {"locked": True, "mode": "system", "windowsDockerdPort": 65000},
            "enhancedContainerIsolation": {"locked": True, "value": True},
            "containersProxy": {"mode": "manual"},
        }
    )
    assert cfg.mode == "manual"


def test_defaults_fail_closed() -> None:
    cfg = parse({"containersProxy": {}})
    assert cfg.mode == "manual"
    assert cfg.http is None and cfg.https is None
    assert cfg.pac is None and not cfg.uses_pac
    assert cfg.transparent_ports.ranges() == [(80, 80), (443, 443)]
    assert cfg.locked is False


def test_all_fields() -> None:
    cfg = parse(
        {
            "containersProxy": {
                "locked": False,
                "mode": "manual",
                "http": "http://u:p%40ss@proxy.corp:3128",
                "https": "socks5://[2001:db8::5]:1080",
                "exclude": ["*.corp.example", "10.0.0.0/8", "2001:db8::/32"],
                "pac": "",
                "embeddedPac": "",
                "transparentPorts": "80,443,8000-8100",
            }
        }
    )
    assert cfg.http == Route("PROXY", "proxy.corp", 3128, "u", "p@ss")
    assert cfg.https == Route("SOCKS5", "2001:db8::5", 1080)
    assert cfg.exclude.match(None, parse_ip("2001:db8::9")) is not None
    assert 8050 in cfg.transparent_ports and 8101 not in cfg.transparent_ports
    assert cfg.pac is None and cfg.embedded_pac is None


def test_utf8_bom_accepted_with_warning() -> None:
    cfg = parse_config_text("\ufeff" + DOCS_EXAMPLE, "bom.json")
    assert cfg.pac is not None
    assert any("byte order mark" in w for w in cfg.warnings)


def test_embedded_pac_takes_precedence_with_warning() -> None:
    script = "function FindProxyForURL(url, host) { return 'DIRECT'; }"
    cfg = parse({"embeddedPac": script, "pac": "https://pac.corp/p.pac", "https": "p:1"})
    assert cfg.embedded_pac == script and cfg.uses_pac
    joined = "\n".join(cfg.warnings)
    assert "embeddedPac takes precedence" in joined
    assert "https: ignored because a PAC is set" in joined


def test_system_mode_warns_about_ignored_keys() -> None:
    cfg = parse({"mode": "system", "pac": "http://pac.corp/p.pac", "exclude": ["a"]})
    assert not cfg.uses_pac
    joined = "\n".join(cfg.warnings)
    assert "pac: ignored in system mode" in joined
    assert "exclude: ignored in system mode" in joined


def test_empty_transparent_ports_warns() -> None:
    cfg = parse({"transparentPorts": ""})
    assert cfg.transparent_ports.is_empty
    assert any("no connection is subject to the policy" in w for w in cfg.warnings)


def test_lone_star_exclude_warns() -> None:
    cfg = parse({"exclude": ["*"]})
    assert any("matches every sniffed name" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    "pac",
    ["http://pac.corp/proxy.pac", "https://[2001:db8::1]:8443/p.pac", "file:///etc/proxy.pac"],
)
def test_valid_pac_urls(pac: str) -> None:
    assert parse({"pac": pac}).pac == pac


@pytest.mark.parametrize(
    "path",
    ["/etc/airgap-proxy/proxy.pac", "/p.pac", "/srv/pac dir/proxy%20v2.pac", "//srv/p.pac"],
)
def test_absolute_path_is_a_file_pac(path: str) -> None:
    # the README and Docker's overrideProxyPAC say a path; it was refused as "not a URL"
    cfg = parse({"pac": f"  {path} "})
    assert cfg.pac == path and cfg.uses_pac


@pytest.mark.parametrize(
    "path", ["proxy.pac", "./proxy.pac", "../etc/proxy.pac", "~/proxy.pac", "etc/p.pac"]
)
def test_relative_path_is_refused_with_a_clear_message(path: str) -> None:
    msg = refused({"pac": path})
    assert f"containersProxy.pac: {path!r}: a PAC file path must be absolute" in msg
    assert "/etc/airgap-proxy/proxy.pac" in msg


@pytest.mark.parametrize("path", ["/etc/proxy\n.pac", "/etc/\x00proxy.pac", "/etc/p\x7f.pac"])
def test_pac_location_with_control_characters_is_refused(path: str) -> None:
    assert "control characters" in refused({"pac": path})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        # unknown keys
        ({"containersProxy": {"mdoe": "manual"}}, "containersProxy.mdoe: unknown key"),
        ({"mode": "manual", "transparentport": "80"}, "containersProxy.transparentport: unknown"),
        ({"transparent_ports": "80"}, "no 'containersProxy' object found (top-level keys: 'tra"),
        # strict types
        ({"locked": "yes"}, "containersProxy.locked: expected true or false, got a string"),
        ({"locked": 1}, "containersProxy.locked: expected true or false, got a number"),
        ({"mode": "Manual"}, "containersProxy.mode: expected 'system' or 'manual', got 'Manual'"),
        ({"mode": "pac"}, "expected 'system' or 'manual', got 'pac'"),
        ({"mode": None}, "containersProxy.mode: expected 'system' or 'manual', got null"),
        ({"http": 3128}, "containersProxy.http: expected a proxy URL string ('' for none), got a"),
        (
            {"http": None},
            "containersProxy.http: expected a proxy URL string ('' for none), got null",
        ),
        ({"exclude": 5}, "containersProxy.exclude: expected an array of strings or a comma"),
        ({"exclude": ["a", 3]}, "containersProxy.exclude[1]: expected a string, got a number"),
        ({"exclude": {"a": 1}}, "containersProxy.exclude: expected an array of strings"),
        ({"transparentPorts": 80}, "containersProxy.transparentPorts: expected a string"),
        ({"transparentPorts": ["80"]}, 'transparentPorts: expected a string: "*"'),
        ({"pac": False}, "containersProxy.pac: expected a PAC URL string"),
        ({"embeddedPac": 1}, "containersProxy.embeddedPac: expected a PAC script string"),
        (
            {"http": {"locked": True, "value": "http://p:1"}},
            "per-key {locked, value} wrapping is not used inside containersProxy",
        ),
        # bad values
        (
            {"http": "ftp://p:21"},
            "containersProxy.http: proxy URL 'ftp://p:21': unsupported scheme",
        ),
        (
            {"https": "http://p:0"},
            "containersProxy.https: proxy URL 'http://p:0': port 0 out of range",
        ),
        ({"https": "http://p:70000"}, "port 70000 out of range (1-65535)"),
        ({"https": "proxy.corp"}, "containersProxy.https: proxy address 'proxy.corp': a port is"),
        ({"exclude": ["ok", "10.0.0.0/33"]}, "containersProxy.exclude[1]: bad CIDR '10.0.0.0/33'"),
        ({"exclude": "ok 10.0.0.0/33"}, "containersProxy.exclude: bad CIDR"),
        ({"exclude": ["foo*.example"]}, "'*' must be a whole label"),
        ({"transparentPorts": "80,99999"}, "containersProxy.transparentPorts: port 99999"),
        (
            {"transparentPorts": "80;443"},
            "containersProxy.transparentPorts: '80;443' is not a port",
        ),
        (
            {"pac": "ftp://pac.corp/p.pac"},
            "containersProxy.pac: 'ftp://pac.corp/p.pac': expected an",
        ),
        ({"pac": "http:///p.pac"}, "containersProxy.pac: 'http:///p.pac': no host"),
        (
            {"pac": "http://pac.corp:99999/p"},
            "containersProxy.pac: 'http://pac.corp:99999/p': not a",
        ),
        ({"pac": "file://server/share/p.pac"}, "a file URL needs an absolute local path"),
        ({"pac": "proxy.pac"}, "expected an http://, https:// or file:/// URL"),
        ({"pac": "C:\\proxy.pac"}, "a PAC file path must be absolute"),
        ({"embeddedPac": "return 'DIRECT';"}, "embeddedPac: the script does not define Find"),
        # versions and shape
        (
            {"configurationFileVersion": 1, "containersProxy": {}},
            "configurationFileVersion 1 is not",
        ),
        (
            {"configurationFileVersion": 3, "containersProxy": {}},
            "configurationFileVersion 3 is not",
        ),
        (
            {"configurationFileVersion": "2", "containersProxy": {}},
            "expected the number 2, got a str",
        ),
        (
            {"configurationFileVersion": True, "containersProxy": {}},
            "expected the number 2, got a boo",
        ),
        ({"configurationFileVersion": 2}, "no 'containersProxy' key in this admin-settings.json"),
        ({"enhancedContainerIsolation": {"value": True}}, "no 'containersProxy' object found"),
        ({"containersProxy": []}, "containersProxy: expected an object, got an array"),
        ({"containersProxy": None}, "containersProxy: expected an object, got null"),
        ([], "expected a JSON object at top level, got an array"),
    ],
)
def test_refused(doc: object, message: str) -> None:
    msg = refused(doc)
    assert msg.startswith("test.json: ")
    assert message in msg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "mode": "manual",\n  "http": "",\n}', "invalid JSON at line 4 column 1"),
        ('{"mode": "manual"', "invalid JSON at line 1 column 18"),
        ("", "invalid JSON at line 1 column 1"),
        ('{"exclude": NaN}', "NaN is not valid JSON"),
        ('{"mode": "manual", "mode": "system"}', "containersProxy.mode: key appears more than"),
        (
            '{"containersProxy": {}, "containersProxy": {"mode": "system"}}',
            "key 'containersProxy' appears more than once",
        ),
        ("\ufeff\ufeff{}", "invalid JSON"),
    ],
)
def test_refused_text(text: str, message: str) -> None:
    assert message in refused(text)


def test_a_bad_mode_is_quoted_but_bounded_in_the_message() -> None:
    assert "got 'auto'" in refused({"containersProxy": {"mode": "auto"}})
    message = refused({"containersProxy": {"mode": "x" * 100_000}})
    assert len(message) < 300 and "100000 characters" in message


def test_credentials_never_in_messages() -> None:
    msg = refused({"http": "http://alice:s3cret@proxy.corp:99999"})
    assert "s3cret" not in msg and "alice" not in msg
    msg = refused({"pac": "ftp://alice:s3cret@pac.corp/x"})
    assert "s3cret" not in msg


# -- files ------------------------------------------------------------------------------------


def write(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "admin-settings.json"
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_load_config_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DOCS_EXAMPLE.encode()))
    assert cfg.transparent_ports.is_all
    assert cfg.source.endswith("admin-settings.json")


def test_load_config_bom_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, b"\xef\xbb\xbf" + DOCS_EXAMPLE.encode()))
    assert any("byte order mark" in w for w in cfg.warnings)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o777])
def test_group_or_world_writable_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, DOCS_EXAMPLE.encode(), mode)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "writable by group or others" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o644, 0o444])
def test_safe_modes_accepted(tmp_path: Path, mode: int) -> None:
    assert load_config(write(tmp_path, DOCS_EXAMPLE.encode(), mode)).mode == "manual"


def test_symlink_target_mode_counts(tmp_path: Path) -> None:
    target = write(tmp_path, DOCS_EXAMPLE.encode(), 0o666)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(link)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open config file: No such file"):
        load_config(tmp_path / "nope.json")


def test_directory_refused(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o755)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(d)


def test_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte offset 10\)"):
        load_config(write(tmp_path, b'{"http": "\xff"}'))


def test_json_error_in_file_has_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, b'{\n  "containersProxy": {\n    "mode": manual\n  }\n}'))
    assert "invalid JSON at line 3 column 13" in str(info.value)


def test_a_key_written_as_a_lone_surrogate_is_one_message_naming_it() -> None:
    text = '{"configurationFileVersion": 2, "containersProxy": {"\\ud800": 1}}'
    message = refused(text)
    assert message.startswith("test.json: containersProxy.'\\ud800': ")
    assert "unpaired surrogate" in message
    message.encode("utf-8")  # printable as it is


def test_a_value_holding_a_lone_surrogate_is_refused_naming_its_key() -> None:
    text = '{"embeddedPac": "function FindProxyForURL(u, h) { return \\"\\udc00\\"; }"}'
    assert refused(text).startswith("test.json: containersProxy.embeddedPac: ")
    assert refused('{"exclude": ["a.example", "\\ud83d"]}').startswith(
        "test.json: containersProxy.exclude[1]: "
    )


def test_a_huge_value_gives_a_bounded_message_that_still_names_the_key() -> None:
    message = refused({"containersProxy": {"http": "http://" + "a" * 100_000}})
    assert message.startswith("test.json: containersProxy.http: ")
    assert len(message) < 700 and "message cut" in message


def test_a_key_with_a_newline_is_shown_escaped_on_one_line() -> None:
    message = refused('{"containersProxy": {"a\\nb": 1}}')
    assert message.startswith("test.json: containersProxy.'a\\nb': unknown key")
    assert "\n" not in message


def test_nesting_and_number_size_limits_are_messages() -> None:
    assert refused("[" * 100_000) == "test.json: invalid JSON: nested too deeply"
    assert refused('{"locked": ' + "9" * 5000 + "}") == (
        "test.json: invalid JSON: a number has too many digits"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_says_so(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(DOCS_EXAMPLE.encode(encoding))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=f"encoded as {encoding.upper()}"):
        load_config(path)
