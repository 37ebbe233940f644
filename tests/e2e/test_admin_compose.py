"""The compose example's healthcheck, run as written against the sidecar entrypoint in a
network namespace with the real redirect rules: it passes once the proxy is ready, and a
request to the admin endpoint on loopback stays local (never redirected into the proxy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e import firewall_helpers as h
from tests.e2e.test_firewall_entrypoint import ENTRYPOINT, entry_env, start_entrypoint

pytestmark = pytest.mark.e2e


def compose_healthcheck() -> list[str]:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    test = compose["services"]["airgap-proxy"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "/readyz" in test[1]
    # The image's paths, pointed at this checkout's entrypoint and interpreter.
    script = test[1].replace("/usr/local/bin/airgap-entrypoint", f"sh {ENTRYPOINT}")
    return ["sh", "-c", script.replace("python3 -c", f"{sys.executable} -c")]


def test_the_compose_healthcheck_asks_readyz(workdir: Path) -> None:
    config = h.write_config(workdir)
    env = {**os.environ, **entry_env(workdir, config)}

    def healthy() -> bool:
        cmd = h.in_ns(h.APP, *compose_healthcheck())
        return subprocess.run(cmd, env=env, capture_output=True, timeout=15).returncode == 0

    assert not healthy(), "nothing runs yet"
    entry = start_entrypoint(workdir, config)
    try:
        h.wait_for(healthy, 30, "the compose healthcheck to pass", 0.3)
        assert '"dst":"127.0.0.1:15000"' not in entry.text()  # it never reached the proxy
    finally:
        entry.stop()
