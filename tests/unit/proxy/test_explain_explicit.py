"""`airgap-proxy explain --explicit`: decided as the explicit listener decides."""

from __future__ import annotations

from proxy.explain import run_explain_explicit
from rules.config import parse_config_text
from rules.policy import Policy

CONFIG = """{"containersProxy": {"mode": "manual", "http": "", "https": "http://corp:8080",
  "exclude": ["allowed.example", "203.0.113.0/24", "localhost"], "transparentPorts": "80,443"}}"""


def _policy() -> tuple:
    cfg = parse_config_text(CONFIG, "test")
    return cfg, Policy.from_config(cfg, {})


async def test_a_port_outside_transparent_ports_is_decided() -> None:
    cfg, policy = _policy()
    out = await run_explain_explicit(cfg, policy, None, "evil.example:8080", table={})
    assert out["action"] == "PROXY" and out["routes"] == ["PROXY corp:8080"]


async def test_ip_entries_match_the_resolved_address() -> None:
    cfg, policy = _policy()
    table = {"rr.example": ("198.51.100.7", "203.0.113.11")}
    out = await run_explain_explicit(cfg, policy, None, "rr.example:9000", table=table)
    assert out["action"] == "DIRECT"
    assert out["dial"] == [
        {"route": "DIRECT", "target": "203.0.113.11", "audit_route": "DIRECT 203.0.113.11"}
    ]


async def test_loopback_is_refused() -> None:
    cfg, policy = _policy()
    table = {"localhost": ("127.0.0.1",)}
    out = await run_explain_explicit(cfg, policy, None, "localhost:22", table=table)
    assert out["action"] == "REJECT" and out["refused"]
