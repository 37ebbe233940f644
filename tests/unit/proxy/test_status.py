"""/status: the policy's shape with credentials redacted, secrets scrubbed everywhere."""

from __future__ import annotations

import json

from proxy.redact import redact_url, url_secrets
from proxy.status import InForce, StatusBoard, scrub
from rules.config import parse_config_text
from rules.policy import Policy


def _in_force(section: dict, environ: dict[str, str] | None = None) -> InForce:
    text = json.dumps({"configurationFileVersion": 2, "containersProxy": section})
    cfg = parse_config_text(text, "test")
    return InForce("/etc/x.json", "ab" * 32, cfg, Policy.from_config(cfg, environ or {}))


def test_upstream_credentials_are_redacted() -> None:
    state = _in_force({"mode": "manual", "http": "http://agent:pw-123@10.0.0.5:3128",
                       "https": "socks5://10.0.0.6:1080", "exclude": ["a.example", "b.example"],
                       "transparentPorts": "80,443,8000-8100"})  # fmt: skip
    doc = state.describe()
    assert doc["upstreams"]["http"] == {"route": "PROXY 10.0.0.5:3128", "credentials": "REDACTED"}
    assert doc["upstreams"]["https"] == {"route": "SOCKS5 10.0.0.6:1080", "credentials": None}
    assert doc["exclude_count"] == 2 and doc["transparentPorts"] == "80,443,8000-8100"
    assert "pw-123" not in json.dumps(doc) and "agent" not in json.dumps(doc)
    assert {"agent", "pw-123"} <= set(state.secrets())


def test_system_mode_credentials_from_the_environment_are_secrets_too() -> None:
    state = _in_force({"mode": "system"}, {"HTTPS_PROXY": "http://env-user:env-pw@10.1.1.1:8080"})
    doc = state.describe()
    assert doc["upstreams"]["https"]["credentials"] == "REDACTED"
    assert "env-pw" in state.secrets()


def test_pac_url_loses_user_password_query_and_fragment() -> None:
    url = "https://u:p%40ss@pac.example:8443/corp/proxy.pac?token=abc#frag"
    assert redact_url(url) == "https://REDACTED@pac.example:8443/corp/proxy.pac?REDACTED"
    assert redact_url("http://pac.example/proxy.pac") == "http://pac.example/proxy.pac"
    assert redact_url("file:///etc/proxy.pac") == "file:///etc/proxy.pac"
    assert redact_url("/etc/proxy.pac") == "/etc/proxy.pac"
    assert redact_url("http://[::1]:8/p.pac") == "http://[::1]:8/p.pac"
    assert redact_url("http://[bad") == "REDACTED"
    assert set(url_secrets(url)) == {"u", "p%40ss", "token=abc", "frag"}
    state = _in_force({"mode": "manual", "pac": url})
    assert state.describe()["pac_source"].startswith("https://REDACTED@")


def test_scrub_replaces_secrets_in_every_string_of_the_document() -> None:
    doc = {"pac": {"last_error": {"message": "GET https://u:hunter2@x/p.pac: 401"}},
           "list": ["hunter2", 3, None], "hunter2": True}  # fmt: skip
    out = scrub(doc, ["hunter2", ""])
    assert "hunter2" not in json.dumps(out)
    assert out["list"][1:] == [3, None]


def test_the_board_is_sections_and_scrubbed() -> None:
    board = StatusBoard(secrets=lambda: ["s3cret"])
    board.add("config", lambda: {"path": "/x"})
    board.add("reload", lambda: {"last": "refused: s3cret is wrong"})
    doc = board.render()
    assert isinstance(doc, dict)
    assert list(doc)[:3] == ["version", "started", "uptime_seconds"]
    assert doc["config"] == {"path": "/x"}
    assert doc["reload"] == {"last": "refused: REDACTED is wrong"}
