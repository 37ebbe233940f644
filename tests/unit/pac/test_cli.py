"""`pac-eval`: exit statuses, output shapes, inputs, batch behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pac.cli import main
from tests.conftest import PAC_CORPUS, REPO

PACS = PAC_CORPUS / "pacs"
CAMPUS = str(PACS / "campus.pac")


def pac_eval(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, as a developer runs it."""
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "pac.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )


def test_ok_prints_one_line_per_target_in_order() -> None:
    proc = pac_eval(
        CAMPUS, "torrent.example.com:443", "10.100.4.2:22", "opac.lib.campus.example:443"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "PROXY reject.docker.internal:1234",
        "SOCKS5 research-gw.campus.example:1080",
        "DIRECT",
    ]
    assert proc.stderr == ""


def test_json_shape() -> None:
    proc = pac_eval(
        str(PACS / "dns.pac"),
        "www.example.org:443",
        "--json",
        "--resolve",
        "www.example.org=198.51.100.10",
        "--resolve",
        "wpad.example.net=10.0.0.2",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"url", "host", "result", "error", "routes", "warnings"} <= set(out)
    assert out["url"] == "https://www.example.org:443"
    assert out["host"] == "www.example.org"
    assert out["result"] == "PROXY wan-198-51-100-10.example.net:3128"
    assert out["error"] is None
    assert out["routes"] == ["PROXY wan-198-51-100-10.example.net:3128"]
    assert out["warnings"] == []
    assert out["reads"]["dns"] == {
        "www.example.org": ["198.51.100.10"],
        "wpad.example.net": ["10.0.0.2"],
    }
    assert out["decision"]["rejected"] is False


def test_evaluation_failure_does_not_stop_the_batch(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text(
        'function FindProxyForURL(u, h) { if (h == "bad.example") throw "no"; return "DIRECT"; }'
    )
    proc = pac_eval(
        str(pac), "a.example:80", "bad.example:80", "c.example:80", "--json", "--no-dns"
    )
    assert proc.returncode == 3
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["result"] for line in lines] == ["DIRECT", None, "DIRECT"]
    assert lines[1]["error"]["kind"] == "exception"
    assert "no" in lines[1]["error"]["message"]
    assert "1 of 3 evaluations failed" in proc.stderr


def test_plain_output_marks_failures(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text("function FindProxyForURL(u, h) { return 1; }")
    proc = pac_eval(str(pac), "a.example:80", "--no-dns")
    assert proc.returncode == 3
    assert proc.stdout.startswith("ERROR non_string:")


def test_timeout_is_exit_3(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text("function FindProxyForURL(u, h) { while (true) {} }")
    proc = pac_eval(str(pac), "a.example:80", "--no-dns", "--timeout", "0.3", "--json")
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["error"]["kind"] == "timeout"


def test_expect() -> None:
    ok = pac_eval(CAMPUS, "opac.lib.campus.example:443", "--expect", "DIRECT")
    assert ok.returncode == 0
    bad = pac_eval(CAMPUS, "torrent.example.com:443", "--expect", "DIRECT")
    assert bad.returncode == 1
    assert "expected 'DIRECT', got 'PROXY reject.docker.internal:1234'" in bad.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([str(PACS / "error-syntax.pac"), "a.example:80"], "does not load: script_error"),
        (["/nonexistent.pac", "a.example:80"], "cannot read the PAC"),
        ([CAMPUS], "no TARGET"),
        ([CAMPUS, "not-a-target"], "expected host:port"),
        ([CAMPUS, "a.example:0"], "port"),
        ([CAMPUS, "a.example:80", "--now", "yesterday"], "--now"),
        ([CAMPUS, "a.example:80", "--resolve", "nonsense"], "--resolve"),
        ([CAMPUS, "a.example:80", "--pac-max-bytes", "100"], "--pac-max-bytes"),
        (["-", "--urls", "-"], "both be stdin"),
        ([CAMPUS, "a.example:80", "--engine", "v8"], "invalid choice"),
        ([CAMPUS, "a.example:80", "--timeout", "nan"], "finite"),
        ([CAMPUS, "a.example:80", "--timeout", "inf"], "finite"),
        ([CAMPUS, "a.example:80", "--fetch-timeout", "-1"], "finite"),
    ],
)
def test_usage_and_load_errors_exit_2(args: list[str], needle: str) -> None:
    proc = pac_eval(*args, stdin="")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert proc.stdout == ""


def test_pac_from_stdin_and_urls_file(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "# comment\n10.100.4.2:22\n\nhttps://x.tracker.example/path  override.example\n"
    )
    proc = pac_eval("-", "--urls", str(urls), "--json", stdin=Path(CAMPUS).read_text())
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["result"] == "SOCKS5 research-gw.campus.example:1080"
    assert lines[1]["url"] == "https://x.tracker.example:443"
    assert lines[1]["host"] == "override.example"
    assert any("path" in w for w in lines[1]["warnings"])


def test_path_is_dropped_with_a_note_unless_raw_url() -> None:
    pac = str(PACS / "shexp.pac")
    dropped = pac_eval(pac, "https://docs.docker.com/get-started/", "--no-dns")
    assert dropped.stdout.strip() == "PROXY docs-exact.example.net:3128"
    assert "never sees a path" in dropped.stderr
    raw = pac_eval(pac, "https://docs.docker.com:443/get-started/", "--no-dns", "--raw-url")
    assert raw.stdout.strip() == "DIRECT"


def test_explain_goes_to_stderr() -> None:
    proc = pac_eval(
        CAMPUS, "dl.update.example.com:443", "--explain", "--now", "2025-01-15T03:15:00"
    )
    assert proc.returncode == 0
    assert proc.stdout == "DIRECT\n"
    assert (
        "FindProxyForURL('https://dl.update.example.com:443', 'dl.update.example.com')"
        in proc.stderr
    )
    assert "lint: line" in proc.stderr and "clock" in proc.stderr
    assert "read: clock" in proc.stderr


def test_lint_only() -> None:
    proc = pac_eval(str(PACS / "shexp.pac"), "--lint")
    assert proc.returncode == 0
    assert "url-path" in proc.stdout and "name-port" in proc.stdout


def test_main_in_process_and_several_addresses(capsys: pytest.CaptureFixture) -> None:
    status = main(
        [
            str(PACS / "ipv6-ext.pac"),
            "dual.example.org:443",
            "--resolve",
            "dual.example.org=198.51.100.1",
            "--resolve",
            "dual.example.org=2001:db8::1",
        ]
    )
    assert status == 0
    assert capsys.readouterr().out == "PROXY v6ok-2001-db8--1.example.net:3128\n"


def test_alerts_go_to_stderr(capsys: pytest.CaptureFixture) -> None:
    status = main([str(PACS / "misc.pac"), "alert.misc.test:443", "--no-dns"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out == "PROXY alert-undefined.pac.test:3128\n"
    assert "alert: checking alert.misc.test" in captured.err


def test_a_hostile_script_cannot_drive_the_terminal_or_split_lines(tmp_path: Path) -> None:
    """Results, alerts, exceptions and DNS names come from the script: control characters
    (terminal escape sequences, newlines) are shown escaped, one line per target kept."""
    pac = tmp_path / "esc.pac"
    pac.write_text(
        "function FindProxyForURL(url, host) {\n"
        '  alert("\\x1b]0;owned\\x07\\x1b[2J");\n'
        '  dnsResolve("x\\x1b[31m.example");\n'
        '  if (host == "boom") throw "\\x1b[31mred\\u202e";\n'
        '  return "DIRECT\\nPROXY evil.example:1\\x1b[2J";\n}\n'
    )
    proc = pac_eval(str(pac), "a.example:80", "boom:80", "b.example:80", "--explain", "--no-dns")
    assert proc.returncode == 3, proc.stderr
    for text in (proc.stdout, proc.stderr):
        assert not any(c in text for c in "\x1b\x07\u202e\r"), text
    assert proc.stdout.splitlines() == [
        "DIRECT\\nPROXY evil.example:1\\x1b[2J",
        "ERROR exception: \\x1b[31mred\\u202e",
        "DIRECT\\nPROXY evil.example:1\\x1b[2J",
    ]
    assert "alert: \\x1b]0;owned\\x07\\x1b[2J" in proc.stderr
    assert "dns: x\\x1b[31m.example -> (does not resolve)" in proc.stderr
