"""End to end: the admin endpoint of the real proxy (several workers, and one) under real
traffic: exact counts, no counter going down when a worker is killed, readiness following
the PAC, and no credential in /status, /metrics or the logs."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import harness as h
from tests.e2e.test_pac_proxying import FAST, pac_config

pytestmark = pytest.mark.e2e

STATIC = {
    "configurationFileVersion": 2,
    "containersProxy": {
        "mode": "manual",
        "exclude": [f"{h.ORIGIN_A}/32"],
        "transparentPorts": "*",
    },
}


@pytest.fixture
def pac_server() -> Iterator[h.PacServer]:
    server = h.PacServer()
    yield server
    server.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(proxy: h.ProxyProcess) -> Samples:
    status, body = proxy.admin("/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def echo(size: int) -> None:
    """One DIRECT connection through the proxy: `size` bytes up, `size` + 3 down."""
    with h.client_socket(h.ORIGIN_A, h.ECHO_PORT) as sock:
        sock.sendall(b"x" * size)
        sock.shutdown(socket.SHUT_WR)
        assert h.recv_all(sock) == b"x" * size + b"BYE"


def rejected() -> None:
    """One REJECT (not HTTP or TLS: a reset, which may come before connect() returns)."""
    try:
        with h.client_socket(h.ORIGIN_EVIL, h.ECHO_PORT) as sock:
            sock.sendall(b"nope")
            sock.recv(10)
    except OSError:
        pass


def traffic(direct_sizes: list[int], rejects: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(echo, n) for n in direct_sizes]
        jobs += [pool.submit(rejected) for _ in range(rejects)]
        for job in jobs:
            job.result(30)


def wait_counts(proxy: h.ProxyProcess, direct: int, reject: int) -> Samples:
    """Scrape until the decisions add up (workers report about once a second)."""
    seen: list[Samples] = []

    def done() -> bool:
        seen.append(scrape(proxy))
        got = seen[-1]
        return (
            value(got, "airgap_connections_total", path="transparent", decision="DIRECT") >= direct
            and value(got, "airgap_connections_total", path="transparent", decision="REJECT")
            >= reject
        )

    h.wait_for(done, what=f"{direct} DIRECT and {reject} REJECT in /metrics")
    return seen[-1]


def worker_pids(proxy: h.ProxyProcess) -> list[int]:
    status, body = proxy.admin("/status")
    assert status == 200
    return [w["pid"] for w in json.loads(body)["workers"]]


def test_counts_are_exact_over_workers_and_survive_a_killed_worker(start_proxy) -> None:
    proxy = start_proxy(STATIC, "--workers", "2")
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 200, what="readiness")
    sizes = [100 + 37 * i for i in range(40)]
    traffic(sizes, rejects=15)
    got = wait_counts(proxy, 40, 15)
    assert value(got, "airgap_connections_total", path="transparent", decision="DIRECT") == 40
    assert value(got, "airgap_connections_total", path="transparent", decision="REJECT") == 15
    assert value(got, "airgap_connections_total", path="transparent", decision="PROXY") == 0
    assert value(got, "airgap_bytes_total", path="transparent", direction="up") == sum(sizes)
    assert value(got, "airgap_bytes_total", path="transparent", direction="down") == sum(
        n + 3 for n in sizes
    )
    assert value(got, "airgap_setup_seconds_count") == 40  # the relayed ones
    assert value(got, "airgap_connection_duration_seconds_count") == 55
    assert value(got, "airgap_workers") == 2
    status = json.loads(proxy.admin("/status")[1])
    assert status["connections"] == {"DIRECT": 40, "PROXY": 0, "REJECT": 15}

    # Kill a worker outright (no last report): nothing it counted is lost, nothing goes down.
    before = got
    pids = worker_pids(proxy)
    os.kill(pids[0], signal.SIGKILL)
    h.wait_for(
        lambda: proxy.admin("/healthz")[0] == 200 and pids[0] not in worker_pids(proxy),
        what="the killed worker to be replaced",
    )
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 200, what="readiness after the restart")
    traffic([10] * 5, rejects=0)
    after = wait_counts(proxy, 45, 15)
    for key, was in before.items():
        name = key[0]
        if name.startswith("airgap_") and name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert after.get(key, 0.0) >= was, (key, was, after.get(key))
    assert value(after, "airgap_connections_total", path="transparent", decision="DIRECT") == 45
    assert value(after, "airgap_bytes_total", path="transparent", direction="up") == sum(sizes) + 50
    assert value(after, "airgap_worker_restarts_total") == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_readyz_follows_the_pac(start_proxy, pac_server, workers: str) -> None:
    pac_server.script = 'function FindProxyForURL(u, h) { return "DIRECT"; }'
    proxy = start_proxy(pac_config(pac_server.url), *FAST, "--workers", workers)
    # The PAC server is down from the start: alive, but not ready, and the body says why.
    h.wait_for(lambda: b"PAC" in proxy.admin("/readyz")[1], what="every worker listening")
    assert proxy.admin("/healthz")[0] == 200
    status, body = proxy.admin("/readyz")
    assert status == 503 and b"PAC not in force" in body, body
    assert value(scrape(proxy), "airgap_pac_state") == 0
    pac_server.up()
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 200, what="readiness once the PAC loads")
    assert value(scrape(proxy), "airgap_pac_state") == 1
    assert value(scrape(proxy), "airgap_pac_fetches_total", result="ok") >= 1
    doc = json.loads(proxy.admin("/status")[1])
    assert doc["pac"]["state"] == "in_force" and doc["pac"]["sha256"]
    # Down again (no --pac-stale-grace): not ready within a refresh or two.
    pac_server.down()
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 503, what="unreadiness once the PAC fails")
    assert b"PAC" in proxy.admin("/readyz")[1]
    doc = json.loads(proxy.admin("/status")[1])
    assert doc["pac"]["state"] == "failing" and doc["pac"]["last_error"]["message"]


def test_readyz_says_stale_under_the_grace(start_proxy, pac_server) -> None:
    pac_server.script = 'function FindProxyForURL(u, h) { return "DIRECT"; }'
    pac_server.up()
    proxy = start_proxy(pac_config(pac_server.url), *FAST, "--pac-stale-grace", "600")
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 200, what="readiness")
    pac_server.down()
    h.wait_for(lambda: b"stale" in proxy.admin("/readyz")[1], what="the stale script said")
    assert proxy.admin("/readyz")[0] == 200


def test_no_credential_in_status_metrics_or_logs(start_proxy, pac_server) -> None:
    secret_url = f"http://{h.UPSTREAM_USER}:{h.UPSTREAM_PASSWORD}@127.0.0.1:3128"
    static = {
        "configurationFileVersion": 2,
        "containersProxy": {"mode": "manual", "http": secret_url, "https": secret_url,
                            "transparentPorts": "80,443"},
    }  # fmt: skip
    proxy = start_proxy(static, "--workers", "2")
    h.wait_for(lambda: proxy.admin("/readyz")[0] == 200, what="readiness")
    status, body = proxy.admin("/status")
    assert status == 200
    doc = json.loads(body)
    assert doc["policy"]["upstreams"]["http"] == {
        "route": "PROXY 127.0.0.1:3128",
        "credentials": "REDACTED",
    }
    metrics = proxy.admin("/metrics")[1]
    for text in (body, metrics, proxy.log_text().encode()):
        assert h.UPSTREAM_PASSWORD.encode() not in text
        assert f"{h.UPSTREAM_USER}:".encode() not in text

    # A PAC URL's user, password and query (a token) are secrets too, also in errors.
    token = "tok-9f8e7d"
    pac_url = (
        pac_server.url.replace("http://", f"http://{h.UPSTREAM_USER}:{h.UPSTREAM_PASSWORD}@")
        + f"?token={token}"
    )
    proxy = start_proxy(pac_config(pac_url), *FAST, "--workers", "1")
    h.wait_for(lambda: b"PAC" in proxy.admin("/readyz")[1], what="the PAC failing (server down)")
    texts = [proxy.admin(p)[1] for p in ("/status", "/readyz", "/metrics")]
    doc = json.loads(texts[0])
    assert doc["pac"]["source"].startswith("http://REDACTED@127.0.0.1:")
    for text in (*texts, proxy.log_text().encode()):
        for secret in (h.UPSTREAM_PASSWORD, token):
            assert secret.encode() not in text, secret


def test_admin_is_read_only_and_can_be_turned_off(start_proxy) -> None:
    proxy = start_proxy(STATIC, "--workers", "1")
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD"):
        for path in ("/status", "/metrics", "/readyz", "/anything"):
            assert proxy.admin(path, method)[0] == 405, (method, path)
    assert proxy.admin("/nothing-here")[0] == 404
    off = start_proxy(STATIC, "--workers", "2", "--admin-listen", "none")
    assert "admin endpoint" not in off.log_text()
