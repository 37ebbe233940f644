"""The `airgap-proxy` command line: argument parsing and `explain` (no network)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import (
    DEFAULT_POLICY,
    OneLineFormatter,
    _setup_logging,
    main,
    parse_hostport,
    redirect_hint,
)
from rules.config import parse_config_text
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:15001", ("127.0.0.1", 15001)),
        ("[::1]:80", ("::1", 80)),
        ("proxy.example:3128", ("proxy.example", 3128)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", "host", "::1:80", "[::1]80", "h:0", "h:65536", "h:x", ":80"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)


def _config(tmp_path: Path, section: dict) -> str:
    path = tmp_path / "admin-settings.json"
    path.write_text(json.dumps({"configurationFileVersion": 2, "containersProxy": section}))
    path.chmod(0o600)
    return str(path)


def _explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "explain", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_explain_prints_the_decision_as_json(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {
            "mode": "manual",
            "http": "http://proxy.corp.example:3128",
            "https": "socks5://10.0.0.1:1080",
            "exclude": ["*.internal.example", "10.0.0.0/8"],
            "transparentPorts": "*",
        },
    )
    out = _explain(
        "--config",
        cfg,
        "build.internal.example:443",
        "--resolve",
        "build.internal.example=10.1.2.3",
    )
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["action"] == "DIRECT" and decision["routes"] == ["DIRECT"]
    assert decision["url"] == "https://build.internal.example:443"
    out = _explain("--config", cfg, "www.example.org:80")
    assert json.loads(out.stdout)["routes"] == ["PROXY proxy.corp.example:3128"]
    out = _explain("--config", cfg, "[2001:db8::1]:22")
    decision = json.loads(out.stdout)
    assert decision["routes"] == ["SOCKS5 10.0.0.1:1080"]
    assert decision["url"] == "http://[2001:db8::1]:22" and decision["host"] == "2001:db8::1"


def test_explain_of_the_bundled_default_rejects() -> None:
    out = _explain("www.example.org:443")
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["action"] == "REJECT" and decision["routes"] == []


@pytest.mark.parametrize("dest", ["www.example.org", "www.example.org:0", "[::1:443", "a b:80"])
def test_explain_refuses_bad_destinations(dest: str) -> None:
    out = _explain(dest)
    assert out.returncode == 2
    assert out.stdout == "" and "explain:" in out.stderr


def test_explain_refuses_a_bad_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"mode": "manual", "transparentPorts": 443})
    out = _explain("--config", cfg, "example.org:443")
    assert out.returncode == 2 and "transparentPorts" in out.stderr
    out = _explain("--config", str(tmp_path / "missing.json"), "example.org:443")
    assert out.returncode == 2


def test_run_refuses_an_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, {"mode": "manual", "unknownKey": True})
    assert main(["run", "--config", cfg]) == 2
    assert "unknownKey" in capsys.readouterr().err


def test_redirect_hint_is_the_iptables_apply_command_for_this_run() -> None:
    cfg = parse_config_text(DEFAULT_POLICY, "default")
    hint = redirect_hint(None, cfg, 15001, 0x4147)
    # not a hand-written IPv4-only rule: the command that installs the real rule set
    assert hint == "airgap-proxy iptables apply --transparent-ports '*' --block-unredirected"
    assert "--gid-owner" not in hint
    ports = parse_config_text('{"transparentPorts": "80,443,8000-8100"}', "x")
    assert "--transparent-ports 80,443,8000-8100 " in redirect_hint(None, ports, 1, 0x4147)
    hint = redirect_hint("/etc/my policy.json", ports, 15002, 0x10)
    assert hint == (
        "airgap-proxy iptables apply --config '/etc/my policy.json' --proxy-port 15002"
        " --mark 0x10 --block-unredirected"
    )
    # a proxy that cannot mark its sockets must be exempted by its uid
    assert f"--proxy-uid {os.getuid()} " in redirect_hint("/p.json", ports, 15001, None)


def test_explain_evaluates_an_embedded_pac(tmp_path: Path) -> None:
    script = (
        "function FindProxyForURL(url, host) {"
        ' if (dnsDomainIs(host, ".corp.example")) return "DIRECT";'
        ' if (isInNet(host, "198.51.100.0", "255.255.255.0")) return "SOCKS5 s.example:1080";'
        ' return "PROXY reject.docker.internal:80"; }'
    )
    cfg = _config(tmp_path, {"mode": "manual", "embeddedPac": script, "transparentPorts": "*"})
    resolve = ("--resolve", "git.corp.example=198.51.100.9")
    decision = json.loads(_explain("--config", cfg, "git.corp.example:443", *resolve).stdout)
    assert decision["action"] == "DIRECT"
    assert "PAC returned 'DIRECT'" in decision["reason"]
    decision = json.loads(_explain("--config", cfg, "198.51.100.7:22").stdout)
    assert decision["routes"] == ["SOCKS5 s.example:1080"]
    decision = json.loads(_explain("--config", cfg, "www.example.org:443").stdout)
    assert decision["action"] == "REJECT" and decision["routes"] == []
    assert "reject.docker.internal" in decision["reason"]


def test_explain_with_an_unreachable_pac_says_it_blocks(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path, {"mode": "manual", "pac": "http://127.0.0.1:9/p.pac", "transparentPorts": "*"}
    )
    out = _explain("--config", cfg, "--pac-timeout", "2", "www.example.org:443")
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["action"] == "REJECT"
    assert decision["reason"].startswith("PAC unavailable: ")


def test_mark_defaults_to_the_one_the_redirect_rules_exempt() -> None:
    from proxy.cli import can_mark, resolve_mark
    from rules.redirect_rules import DEFAULT_MARK

    assert os.geteuid() == 0, "the suite runs as root (tests/run.sh)"
    assert can_mark(DEFAULT_MARK)
    assert resolve_mark(None) == DEFAULT_MARK
    assert resolve_mark(0) is None
    assert resolve_mark(0x2A) == 0x2A


def test_mark_must_be_a_32_bit_number(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-1", "0x100000000", "mark"):
        with pytest.raises(SystemExit):
            main(["run", "--mark", bad])
        assert "--mark" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("--workers", "0"),
        ("--workers", "-3"),
        ("--pac-evaluators", "0"),
        ("--pac-queue", "0"),
        ("--pac-memory-mib", "0"),
        ("--pac-max-bytes", "0"),
        ("--max-connections", "-5"),
        ("--max-connections", "many"),
        ("--pac-eval-timeout", "inf"),
        ("--peek-timeout", "inf"),
        ("--pac-stale-grace", "inf"),
    ],
)
def test_run_refuses_counts_and_bounds_that_would_switch_a_limit_off(
    option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", option, bad])
    assert info.value.code == 2
    assert option in capsys.readouterr().err


def test_splice_shrinks_the_default_connection_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import cli

    monkeypatch.setattr(cli.resource, "getrlimit", lambda _which: (20_000, 20_000))
    assert cli.max_connections(0, splice=False) == (20_000 - 64) // 2
    assert cli.max_connections(0, splice=True) == (20_000 - 64) // 6 == 3322
    assert cli.max_connections(3322, splice=True) == 3322
    assert cli.max_connections(9968, splice=False) == 9968
    with pytest.raises(ValueError, match=r"--max-connections 3323 with --splice .* at most 3322"):
        cli.max_connections(3323, splice=True)
    with pytest.raises(ValueError, match=r"--max-connections 9969 needs 2 .* at most 9968; raise"):
        cli.max_connections(9969, splice=False)


def test_run_refuses_splice_beyond_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy import cli

    monkeypatch.setattr(cli.resource, "getrlimit", lambda _which: (1024, 1024))
    assert main(["run", "--splice", "--max-connections", "1000", "--mark", "0"]) == 2
    assert "raise the limit, lower the value, or drop --splice" in capsys.readouterr().err


def test_run_refuses_splice_where_the_kernel_has_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy import splice_relay

    monkeypatch.setattr(splice_relay.sys, "platform", "darwin")
    assert main(["run", "--splice", "--mark", "0"]) == 2
    assert "--splice: os.splice is not available here (darwin" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "extra", "warned"),
    [
        ({"embeddedPac": "function FindProxyForURL(u, h) { return 'PROXY corp:3128'; }"}, [], True),
        ({"pac": "https://pac.example/proxy.pac"}, [], True),
        ({"pac": "https://pac.example/proxy.pac"}, ["--upstream", "192.0.2.8:3128"], False),
        ({"https": "192.0.2.8:3128"}, [], False),  # the config's proxies are guarded already
    ],
)
def test_iptables_warns_that_a_pacs_proxies_are_open_to_applications(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: dict, extra: list, warned: bool
) -> None:
    # The guard rejects applications' own connections to the upstream proxies, but a PAC
    # names its proxies only at run time: one it sends some names to (PROXY corp:3128) could
    # be used directly for every other name, unless the operator lists it.
    from proxy import firewall_apply
    from proxy.cli import build_parser

    path = tmp_path / "admin-settings.json"
    path.write_text(json.dumps({"configurationFileVersion": 2, "containersProxy": section}))
    path.chmod(0o600)
    options = ["--block-unredirected", "--ipv6", "drop", "--dns-server", "192.0.2.53", *extra]
    args = build_parser().parse_args(["iptables", "show", "--config", str(path), *options])
    firewall_apply.build_spec(args)
    assert ("the policy is a PAC" in capsys.readouterr().err) is warned


def test_log_lines_stay_one_printable_line_whatever_they_quote() -> None:
    """A PAC error, an upstream reply or a client's bytes may hold a newline or an escape
    sequence: logged raw, it could forge lines or drive the operator's terminal."""
    hostile = "boom\n2026-11-28 INFO airgap.proxy: forged\r\x1b[2J\x85\u2028end"
    record = logging.LogRecord("airgap.proxy", logging.ERROR, __file__, 1, "PAC failed: %s",
                               (hostile,), None)  # fmt: skip
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "ERROR PAC failed: boom\\x0a2026-11-28 INFO airgap.proxy: forged\\x0d\\x1b[2J\\x85"
        "\\u2028end"
    )
    try:
        raise ValueError("traceback lines are kept")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "\nTraceback" in OneLineFormatter("%(message)s").format(record)
    root, audit = logging.getLogger(), logging.getLogger("airgap.conn")
    saved = root.handlers[:], root.level, audit.handlers[:], audit.propagate
    try:
        for json_logs in (False, True):
            _setup_logging("info", json_logs)
            for logger in (root, audit):
                assert all(isinstance(h.formatter, OneLineFormatter) for h in logger.handlers)
    finally:
        root.handlers[:], root.level, audit.handlers[:], audit.propagate = saved


# explain runs the proxy's route selection on the decision: where the proxy REJECTs a DIRECT
# or PROXY decision (the name check), explain says REJECT too, and says what it could not check.

IP_BOUND_PAC = (
    "function FindProxyForURL(url, host) {"
    ' if (isInNet(dnsResolve(host), "10.0.0.0", "255.0.0.0")) return "DIRECT";'
    ' return "PROXY reject.docker.internal:1"; }'
)


def _pac_config(tmp_path: Path, script: str) -> str:
    return _config(tmp_path, {"mode": "manual", "embeddedPac": script, "transparentPorts": "*"})


def test_explain_rejects_an_ip_bound_decision_for_an_address_the_name_does_not_have(
    tmp_path: Path,
) -> None:
    """The PAC was told dnsResolve(host) is the dialled 10.0.0.5 and allowed it; github.com
    really is 140.82.112.3, so the proxy refuses to connect anywhere: REJECT, not DIRECT."""
    cfg = _pac_config(tmp_path, IP_BOUND_PAC)
    args = ("--config", cfg, "github.com:443", "--ip", "10.0.0.5")
    out = json.loads(_explain(*args, "--resolve", "github.com=140.82.112.3").stdout)
    assert out["action"] == "REJECT" and out["routes"] == []
    assert "10.0.0.5 is not an address of github.com" in out["reason"]
    assert out["dns"] == {"github.com": ["140.82.112.3"]}
    out = json.loads(_explain(*args, "--resolve", "github.com=10.0.0.5").stdout)
    assert out["action"] == "DIRECT" and out["dial"][0]["target"] == "10.0.0.5"


def test_explain_rejects_a_name_that_resolves_only_to_loopback(tmp_path: Path) -> None:
    cfg = _pac_config(tmp_path, 'function FindProxyForURL(u, h) { return "DIRECT"; }')
    args = ("--config", cfg, "localhost:443", "--ip", "203.0.113.5")
    out = json.loads(_explain(*args, "--resolve", "localhost=127.0.0.1").stdout)
    assert out["action"] == "REJECT"
    assert "resolves only to the proxy host's own addresses" in out["reason"]
    # Static policies too: Docker's own example excludes localhost.
    static = _config(
        tmp_path, {"mode": "manual", "exclude": ["localhost"], "transparentPorts": "*"}
    )
    out = json.loads(
        _explain("--config", static, "localhost:80", "--resolve", "localhost=::1").stdout
    )
    assert out["action"] == "REJECT" and "proxy host's own addresses" in out["reason"]


def test_explain_shows_a_spoofed_name_dialled_by_name(tmp_path: Path) -> None:
    cfg = _pac_config(tmp_path, 'function FindProxyForURL(u, h) { return "DIRECT"; }')
    out = json.loads(
        _explain(
            *("--config", cfg, "allowed.example:443", "--ip", "203.0.113.66"),
            *("--resolve", "allowed.example=203.0.113.10"),
        ).stdout
    )
    assert out["action"] == "DIRECT"
    assert out["dial"] == [
        {
            "route": "DIRECT",
            "target": "203.0.113.10",
            "audit_route": "DIRECT 203.0.113.10 (by name)",
        }
    ]


def test_explain_without_a_lookup_answer_says_the_proxy_would_reject(tmp_path: Path) -> None:
    """The hermetic table has no answer for the name: the proxy would REJECT it."""
    cfg = _pac_config(tmp_path, 'function FindProxyForURL(u, h) { return "DIRECT"; }')
    out = json.loads(
        _explain(
            "--config", cfg, "nx.example:443", "--ip", "203.0.113.5", "--resolve", "a.b=1.2.3.4"
        ).stdout
    )
    assert out["action"] == "REJECT" and "does not resolve" in out["reason"]
    assert any("does not resolve with the --resolve table" in n for n in out["unchecked"])


def test_explain_says_what_it_could_not_check_without_ip(tmp_path: Path) -> None:
    cfg = _pac_config(tmp_path, IP_BOUND_PAC)
    out = json.loads(
        _explain("--config", cfg, "github.com:443", "--resolve", "github.com=10.0.0.7").stdout
    )
    assert any("no --ip given" in note for note in out["unchecked"])


def test_explain_client_reproduces_a_my_ip_address_rule(tmp_path: Path) -> None:
    script = (
        "function FindProxyForURL(url, host) {"
        ' if (isInNet(myIpAddress(), "10.1.0.0", "255.255.0.0")) return "PROXY gw.example:3128";'
        ' return "PROXY reject.docker.internal:1"; }'
    )
    cfg = _pac_config(tmp_path, script)
    out = json.loads(_explain("--config", cfg, "203.0.113.5:22", "--client", "10.1.2.3").stdout)
    assert out["action"] == "PROXY" and out["routes"] == ["PROXY gw.example:3128"]
    assert "failover" in out and "407 included" in out["failover"]
    out = json.loads(_explain("--config", cfg, "203.0.113.5:22").stdout)
    assert out["action"] == "REJECT"
    assert any("no --client was given" in note for note in out["unchecked"])
    bad = _explain("--config", cfg, "203.0.113.5:22", "--client", "nope")
    assert bad.returncode == 2 and "--client 'nope' is not an IP address" in bad.stderr


@pytest.mark.parametrize("item", ["github.com", "=1.2.3.4", "github.com=nope", "bad_name=1.2.3.4"])
def test_explain_refuses_a_bad_resolve(item: str) -> None:
    out = _explain("www.example.org:443", "--resolve", item)
    assert out.returncode == 2 and "--resolve" in out.stderr


def test_iptables_forwarded_only_shows_no_output_rules_and_needs_an_interface(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A node-wide proxy: only the bridge's traffic; `show` prints no OUTPUT jump at all.
    from proxy.cli import main

    base = ["iptables", "show", "--transparent-ports", "80,443", "--ipv6", "drop"]
    base += ["--block-unredirected", "--dns-server", "192.0.2.53", "--forwarded-only"]
    assert main([*base, "--from-interface", "cni0"]) == 0
    out = capsys.readouterr()
    assert "only from cni0; this host's own not" in out.out
    assert "-I PREROUTING 1 -j AIRGAP-NAT-PRE" in out.out and "FORWARD 1" in out.out
    assert "OUTPUT" not in out.out.replace("# airgap", "")
    assert main(base) == 2
    assert "forwarded-only rules need at least one --from-interface" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "explain"])
def test_a_lone_surrogate_key_is_one_message_and_exit_2(tmp_path: Path, command: str) -> None:
    """The JSON escape of an unpaired surrogate as a key: the loader's one message naming the
    key, no traceback, for both commands that read the policy."""
    path = tmp_path / "admin-settings.json"
    path.write_text('{"configurationFileVersion": 2, "containersProxy": {"\\ud800": 1}}')
    path.chmod(0o600)
    args = ["--config", str(path), *(["example.com:443"] if command == "explain" else [])]
    if command == "run":  # a free port of its own: the run must fail on the config, not the port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        args += ["--listen", f"127.0.0.1:{free}", "--admin-listen", "none"]
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", command, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "containersProxy.'\\ud800': the key holds an unpaired surrogate" in lines[0]


def test_admin_listen_default_none_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import parse_admin_listen
    from proxy.config import DEFAULTS

    assert parse_admin_listen(None) == DEFAULTS.admin_listen == ("127.0.0.1", 15000)
    assert parse_admin_listen("none") is None and parse_admin_listen("NONE") is None
    assert parse_admin_listen("[::1]:9901") == ("::1", 9901)
    assert main(["run", "--admin-listen", "localhost", "--mark", "0"]) == 2
    assert "--admin-listen" in capsys.readouterr().err
    assert main(["run", "--admin-listen", "127.0.0.1:99999", "--mark", "0"]) == 2
