"""Where the reload and the shadow policy meet the admin plane: the reload counter and the
version `/status` shows follow every reload result; shadow disagreements are counted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

from proxy import shadow
from proxy.audit import ConnectionRecord
from proxy.config import DEFAULTS
from proxy.fleet import Fleet
from proxy.launch import PolicyOwner, count_shadow_disagreements, run_state
from proxy.metrics import METRICS
from proxy.reload import read_version
from rules.model import Decision


def _version(path: Path, **section: object):  # type: ignore[no-untyped-def]
    path.write_text(json.dumps({"configurationFileVersion": 2, "containersProxy": section}))
    path.chmod(0o600)
    return read_version(str(path))


def _reloads(result: str) -> float:
    return METRICS.snapshot().count("airgap_config_reloads", result=result)


def test_reload_results_are_counted_and_status_follows_the_version_in_force(
    tmp_path: Path,
) -> None:
    first = _version(tmp_path / "a.json", exclude=["a.example"])
    second = _version(tmp_path / "b.json", exclude=["b.example", "c.example"])
    settings = dataclasses.replace(DEFAULTS, config_path=str(tmp_path / "a.json"))
    owner = PolicyOwner(first, None, settings)
    state = run_state(owner, Fleet(1, False, own=None))
    assert state.in_force.config_sha256 == first.sha256
    owner.feeds = [SimpleNamespace(version=second, source=None)]  # type: ignore[list-item]
    ok, invalid = _reloads("ok"), _reloads("invalid")
    owner.state.record("ok", second.sha256, None)
    assert _reloads("ok") == ok + 1
    assert state.in_force.config_sha256 == second.sha256
    assert state.in_force.describe()["exclude_count"] == 2
    owner.state.record("invalid", None, "containersProxy.exclude: not a list")
    assert _reloads("invalid") == invalid + 1
    assert state.in_force.config_sha256 == second.sha256, "a refused file changes nothing"
    shown = state.board.render()
    assert isinstance(shown, dict) and shown["reload"]["last_result"] == "invalid"


def test_shadow_disagreements_are_counted_by_their_two_actions() -> None:
    count_shadow_disagreements()
    count_shadow_disagreements()  # registered once: one count per disagreement
    enforced = Decision("DIRECT", (), "exclude entry", "https://a.example:443", "a.example")
    rejected = Decision("REJECT", (), "no proxy", "https://a.example:443", "a.example")

    def seen() -> float:
        return METRICS.snapshot().count(
            "airgap_shadow_disagreements", enforced="DIRECT", shadow="REJECT"
        )

    before = seen()
    shadow.compare(ConnectionRecord("10.0.0.1", 1), enforced, rejected)
    shadow.compare(ConnectionRecord("10.0.0.1", 2), enforced, enforced)  # agrees: not counted
    assert seen() == before + 1
