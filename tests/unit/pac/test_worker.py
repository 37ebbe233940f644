"""A PAC engine process holds no capability, whatever its parent holds.

The sidecar gives the proxy CAP_NET_ADMIN (ambient, so its workers keep it across exec);
under `dev.sh run` the proxy is root. A child inherits that unless it drops it, and the
engine runs a script fetched from the network: with CAP_NET_ADMIN, one engine exploit
could rewrite the redirect rules of the whole namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pac.sandbox import _worker_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_the_worker_drops_every_capability_before_reading_a_script() -> None:
    cmd, env = _worker_command()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b'{"ready": true}\n'
        status = _status(proc.pid)
        for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(status[field], 16) == 0, (field, status[field])
        assert status["NoNewPrivs"] == "1"
        if int(_status(os.getpid())["CapEff"], 16) & (1 << 8):
            # started with CAP_SETPCAP (root): the bounding set is emptied too
            assert int(status["CapBnd"], 16) == 0
    finally:
        proc.kill()
        proc.wait()
