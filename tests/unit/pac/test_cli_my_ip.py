"""`pac-eval --my-ip`: what myIpAddress()/myIpAddressEx() report, as the proxy would."""

from __future__ import annotations

from pathlib import Path

import pytest

from pac.cli import main

SCRIPT = """
function FindProxyForURL(url, host) {
  var me = myIpAddress(), all = myIpAddressEx();
  if (me == "2001:db8::7" && all == "2001:db8::7") return "DIRECT";
  return "PROXY " + me.replace(/:/g, "-") + ".me.test:1; " +
    "PROXY " + all.replace(/[:;]/g, "-") + ".all.test:2";
}
"""


@pytest.fixture
def pac(tmp_path: Path) -> str:
    path = tmp_path / "me.pac"
    path.write_text(SCRIPT)
    path.chmod(0o644)
    return str(path)


@pytest.mark.parametrize(
    ("my_ip", "expected"),
    [
        # only an IPv6 address: myIpAddress() is it, as in Chromium (it was 127.0.0.1)
        (["2001:db8::7"], "DIRECT"),
        (["10.0.0.5"], "PROXY 10.0.0.5.me.test:1; PROXY 10.0.0.5.all.test:2"),
        (
            ["2001:db8::7", "10.0.0.5"],
            "PROXY 10.0.0.5.me.test:1; PROXY 2001-db8--7-10.0.0.5.all.test:2",
        ),
        ([], "PROXY 127.0.0.1.me.test:1; PROXY .all.test:2"),
    ],
)
def test_my_ip(pac: str, my_ip: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    args = [pac, "example.com:443", "--no-dns"]
    for ip in my_ip:
        args += ["--my-ip", ip]
    assert main(args) == 0
    assert capsys.readouterr().out == expected + "\n"
