"""The admin endpoint's HTTP: four GET routes, everything else 405, bodies from providers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.admin import Endpoints, is_loopback, make_app
from proxy.fleet import Fleet, Verdict
from proxy.metrics import ProcessMetrics
from proxy.operate import RunState
from proxy.status import InForce
from rules.config import parse_config_text
from rules.policy import Policy


def _state() -> RunState:
    text = json.dumps({"configurationFileVersion": 2, "containersProxy": {
        "mode": "manual", "http": "http://agent:pw-123@10.0.0.5:3128"}})  # fmt: skip
    cfg = parse_config_text(text, "test")
    in_force = InForce("/etc/x.json", "cd" * 32, cfg, Policy.from_config(cfg, {}))
    return RunState(in_force, Fleet(1, uses_pac=False, own=None))


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, RunState, list[int]]]:
    state = _state()
    refreshed: list[int] = []
    worker = ProcessMetrics()
    worker.connection_ended("transparent", "DIRECT", None, 5, 7, 0.1)

    def refresh() -> None:
        refreshed.append(1)
        state.fleet.reported(0, 42, {"listening": True, "active": {"transparent": 1},
                                     "totals": worker.snapshot().to_json()})  # fmt: skip

    state.fleet.started(0, 42)
    async with TestClient(TestServer(make_app(state.endpoints(refresh)))) as c:
        yield c, state, refreshed


async def test_health_ready_status_metrics(client) -> None:
    c, state, refreshed = client
    response = await c.get("/healthz")
    assert response.status == 200 and await response.text() == "ok\n"
    response = await c.get("/readyz")
    assert response.status == 200 and await response.text() == "ready\n"
    state.fleet.draining = True
    response = await c.get("/readyz")
    assert response.status == 503 and "draining" in await response.text()
    response = await c.get("/status")
    assert response.status == 200 and response.content_type == "application/json"
    doc = await response.json()
    assert doc["config"] == {"path": "/etc/x.json", "sha256": "cd" * 32}
    assert doc["connections"] == {"DIRECT": 1, "PROXY": 0, "REJECT": 0}
    assert doc["workers"][0]["pid"] == 42 and doc["workers"][0]["connections"] == 1
    assert doc["reload"] is None and doc["pac"] is None
    assert "pw-123" not in json.dumps(doc) and "agent" not in json.dumps(doc)
    response = await c.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'airgap_connections_total{decision="DIRECT",path="transparent"} 1.0' in text
    assert 'airgap_connections_active{path="transparent"} 1.0' in text
    assert "process_cpu_seconds_total" in text
    assert f'airgap_policy_info{{config_sha256="{"cd" * 32}",pac_sha256=""}} 1.0' in text
    assert len(refreshed) == 5  # before each request


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/status", "/metrics", "/x"])
async def test_every_other_method_is_405(client, method: str, path: str) -> None:
    c, _state, refreshed = client
    response = await c.request(method, path, data=b"x")
    assert response.status == 405 and response.headers["Allow"] == "GET"
    assert not refreshed, "nothing is read for a refused request"


async def test_unknown_path_is_404_and_verdicts_pass_through() -> None:
    endpoints = Endpoints(
        health=lambda: Verdict(False, "worker 1 is not running"),
        ready=lambda: Verdict(False, "PAC not in force"),
        status=lambda: {},
        metrics=lambda: (b"", "text/plain"),
    )
    async with TestClient(TestServer(make_app(endpoints))) as c:
        assert (await c.get("/nope")).status == 404
        response = await c.get("/healthz")
        assert response.status == 503 and "worker 1" in await response.text()
        assert (await c.get("/readyz")).status == 503


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("::")


async def test_a_non_loopback_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    from proxy.admin import start

    endpoints = Endpoints(
        health=lambda: Verdict(True, "ok"),
        ready=lambda: Verdict(True, "ready"),
        status=lambda: {},
        metrics=lambda: (b"", "text/plain"),
    )
    with caplog.at_level("WARNING", logger="airgap.proxy"):
        runner = await start("127.0.0.1", 0, endpoints)
        await runner.cleanup()
        assert "reachable from outside" not in caplog.text
        runner = await start("0.0.0.0", 0, endpoints)
        await runner.cleanup()
    assert "reachable from outside this host" in caplog.text
