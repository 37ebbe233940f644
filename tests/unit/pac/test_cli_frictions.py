"""`pac-eval` for a first-time user: help, version, labelled batch output, and messages that
say what is wrong (dropped entries, names on unsniffed ports, mis-cased entry points, HTML
served as a PAC, refused downloads)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from pac.cli import _parser, main, run
from tests.unit.pac.test_cli import CAMPUS, pac_eval


def test_help_shows_defaults_exit_codes_and_examples() -> None:
    proc = pac_eval("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # however argparse wraps it
    assert "seconds per evaluation, also for loading (default: 1)" in text
    assert "--fetch-timeout" in text and "whole download of an http(s) PAC (default: 10)" in text
    assert "exit status:" in text and "3 at least one evaluation failed" in text
    assert proc.stdout.count("\n  pac-eval ") >= 2  # two examples


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == "pac-eval (airgap-proxy) 9.8.7\n"

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "unknown (not installed)" in capsys.readouterr().out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


TARGETS = ["torrent.example.com:443", "10.100.4.2:22"]


def _run(*argv: str, out: io.StringIO) -> tuple[int, str]:
    err = io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO(b""))
    status = run(_parser().parse_args(list(argv)), out, err, stdin)
    return status, err.getvalue()


def test_batch_lines_name_their_target_on_a_terminal_and_stay_bare_for_scripts() -> None:
    tty = _Tty()
    assert _run(CAMPUS, *TARGETS, out=tty)[0] == 0
    assert tty.getvalue().splitlines() == [
        "torrent.example.com:443\tPROXY reject.docker.internal:1234",
        "10.100.4.2:22\tSOCKS5 research-gw.campus.example:1080",
    ]
    bare_tty = _Tty()
    _run(CAMPUS, *TARGETS, "--bare", out=bare_tty)
    assert "\t" not in bare_tty.getvalue()
    one = _Tty()
    _run(CAMPUS, TARGETS[0], out=one)  # a single answer needs no label
    assert one.getvalue() == "PROXY reject.docker.internal:1234\n"
    # A pipe (scripts) keeps the bare lines unless asked.
    piped = pac_eval(CAMPUS, *TARGETS)
    assert piped.stdout.splitlines() == [
        "PROXY reject.docker.internal:1234",
        "SOCKS5 research-gw.campus.example:1080",
    ]
    shown = pac_eval(CAMPUS, *TARGETS, "--show-target")
    assert shown.stdout.splitlines()[1] == "10.100.4.2:22\tSOCKS5 research-gw.campus.example:1080"


def test_urls_lines_are_labelled_with_their_host_column(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("10.100.4.2:22\nhttps://x.example/  torrent.example.com\n")
    proc = pac_eval(CAMPUS, "--urls", str(urls), "--show-target")
    assert proc.stdout.splitlines()[1].startswith("https://x.example/ torrent.example.com\t")


def test_dropped_entries_warn_on_stderr_in_plain_mode(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text(
        'function FindProxyForURL(u, h) { return "PROXY  p1:8080 ;; BOGUS thing; DIRECT"; }'
    )
    proc = pac_eval(str(pac), "a.example:443", "--no-dns")
    assert proc.returncode == 0
    assert proc.stdout == "PROXY  p1:8080 ;; BOGUS thing; DIRECT\n"
    assert "entry 'BOGUS thing' dropped" in proc.stderr


def test_a_name_on_an_unsniffed_port_says_the_proxy_decides_on_the_ip(tmp_path: Path) -> None:
    proc = pac_eval(CAMPUS, "corp.example:8443", "other.example:8443", "10.1.2.3:8443")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "never sees a host name" in line]
    assert len(notes) == 1  # one note per port, however many targets
    assert "corp.example:8443" in notes[0] and "port 8443" in notes[0]
    assert "decides on the destination IP" in notes[0] and "1 more target" in notes[0]
    quiet = pac_eval(CAMPUS, "corp.example:443", "10.1.2.3:8443")
    assert "never sees" not in quiet.stderr
    as_json = pac_eval(CAMPUS, "corp.example:8443", "--json")
    assert "never sees a host name on port 8443" in as_json.stdout
    assert "never sees" not in as_json.stderr


def test_a_mis_cased_entry_point_is_named(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text('function FindProxyforURL(url, host) { return "DIRECT"; }\n')
    proc = pac_eval(str(pac), "a.example:443", "--no-dns")
    assert proc.returncode == 2
    assert "FindProxyForURL() is undefined" in proc.stderr
    assert "'FindProxyforURL': did you mean 'FindProxyForURL'?" in proc.stderr


def test_an_html_page_is_called_html(tmp_path: Path) -> None:
    pac = tmp_path / "p.pac"
    pac.write_text("<!DOCTYPE html>\n<html><body>Please log in</body></html>\n")
    proc = pac_eval(str(pac), "a.example:443", "--no-dns")
    assert proc.returncode == 2
    assert "SyntaxError" in proc.stderr
    assert "looks like an HTML page" in proc.stderr
    ok = tmp_path / "bad.pac"
    ok.write_text("function FindProxyForURL(u, h) { return ; ; )\n")
    assert "HTML" not in pac_eval(str(ok), "a.example:443").stderr


def test_a_refused_download_says_so_in_our_words() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = pac_eval(f"http://127.0.0.1:{port}/proxy.pac", "a.example:443")
    assert proc.returncode == 2
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in proc.stderr
    assert "ssl:default" not in proc.stderr and "Connect call failed" not in proc.stderr
