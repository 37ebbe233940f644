"""The image's files, checked where the image cannot be built: shellcheck on the entrypoint
and on every RUN of the Dockerfile, the compose example's sidecar shape, the example policy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.firewall_helpers import REPO

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

DOCKER = REPO / "docker"


def shellcheck(path: Path, *args: str) -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing (dev.sh installs it)"
    proc = subprocess.run(
        ["shellcheck", *args, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_entrypoint_passes_shellcheck() -> None:
    shellcheck(DOCKER / "entrypoint.sh")


def dockerfile_runs() -> list[str]:
    """The shell of every RUN instruction, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    runs = [line[4:] for line in logical.splitlines() if line.startswith("RUN ")]
    assert all(not run.lstrip().startswith("[") for run in runs), "exec-form RUN has no shell"
    return runs


def test_dockerfile_run_shell_passes_shellcheck(tmp_path: Path) -> None:
    runs = dockerfile_runs()
    assert len(runs) >= 2
    for i, run in enumerate(runs):
        script = tmp_path / f"run{i}.sh"
        script.write_text(f"#!/bin/sh\n{run}\n")
        shellcheck(script, "--shell=sh")


def test_dockerfile_shape() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    for package in ("iptables", "nftables", "util-linux"):
        assert package in text
    assert "--uid 10001" in text
    assert 'ENTRYPOINT ["/usr/local/bin/airgap-entrypoint"]' in text
    assert "HEALTHCHECK" in text and "healthcheck" in text
    assert "\nUSER " not in text  # the entrypoint needs root for the rules; the proxy drops it


def test_compose_is_the_sidecar_pattern() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "network_mode: service:airgap-proxy" in text
    assert "cap_drop: [NET_ADMIN, NET_RAW]" in text
    assert "cap_add: [NET_ADMIN]" in text
    assert "condition: service_healthy" in text
    assert "admin-settings.json:/etc/airgap-proxy/admin-settings.json:ro" in text
    assert 'command: ["--explicit-listen", "127.0.0.1:3128"]' in text
    assert "\t" not in text


def test_example_policy_loads() -> None:
    from rules.config import load_config

    cfg = load_config(DOCKER / "admin-settings.json")
    assert str(cfg.transparent_ports) == "80,443"
