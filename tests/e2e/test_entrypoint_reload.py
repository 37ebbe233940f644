"""docker/entrypoint.sh on SIGHUP: the redirect rules re-applied from the new policy file
(one transaction), then the proxy reloads it; `docker compose kill -s HUP` does both."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e import firewall_helpers as h
from tests.e2e.test_firewall_entrypoint import healthy, reaches, start_entrypoint

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e


def test_sighup_reapplies_the_rules_then_reloads_the_proxy(workdir: Path) -> None:
    config = h.write_config(workdir)  # 80 and 443 policed, the test ranges DIRECT
    entry = start_entrypoint(workdir, config)
    try:
        h.wait_for(lambda: healthy(workdir, config), 20, "the entrypoint's healthcheck", 0.2)
        assert reaches(h.ORIGIN_V4, 80)
        assert reaches(h.ORIGIN_V4, 8080)  # not redirected: outside transparentPorts
        # Every port policed now, and nothing allowed. Written the way an operator's tool
        # does (a new file renamed over the old), root's and readable by the proxy's uid.
        tmp = config.with_name("new.json")
        section = {"mode": "manual", "exclude": [], "transparentPorts": "*"}
        tmp.write_text(json.dumps({"configurationFileVersion": 2, "containersProxy": section}))
        tmp.chmod(0o644)
        os.replace(tmp, config)
        os.kill(entry.proc.pid, signal.SIGHUP)  # what `docker compose kill -s HUP` sends
        h.wait_for(lambda: "redirect rules re-applied" in entry.text(), 20, "the re-apply", 0.1)
        h.wait_for(lambda: "config reloaded: " in entry.text(), 10, "the proxy's reload", 0.1)
        # 8080 is redirected now (the rules) and REJECTed (the proxy's new policy).
        assert not reaches(h.ORIGIN_V4, 8080), entry.text()
        assert not reaches(h.ORIGIN_V4, 80)
        assert entry.proc.poll() is None  # the HUP stopped neither of them
        assert healthy(workdir, config)
    finally:
        entry.stop(signal.SIGKILL)
