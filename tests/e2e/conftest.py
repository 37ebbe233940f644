"""Fixtures of the end-to-end rig (see harness.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import firewall_helpers, harness


@pytest.fixture(scope="session")
def network() -> None:
    harness.require_private_netns()
    harness.setup_network()


@pytest.fixture(scope="session")
def origins(network: None) -> Iterator[harness.Origins]:
    servers = harness.Origins()
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def upstreams(network: None) -> Iterator[harness.Upstreams]:
    ups = harness.Upstreams()
    ups.start()
    yield ups
    ups.stop()


@pytest.fixture(params=["default", "splice"])
def relay(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The relay under test: the default Protocol pair, or `--splice`, which must pass the
    same end-to-end tests. Pass as `start_proxy(config, *relay)`."""
    return ("--splice",) if request.param == "splice" else ()


@pytest.fixture
def start_proxy(origins: harness.Origins) -> Iterator[Callable[..., harness.ProxyProcess]]:
    """Start the real proxy with a config; marked client traffic is redirected to it."""
    started: list[tuple[harness.ProxyProcess, object]] = []

    def start(config: dict | None, *extra: str, **kwargs: object) -> harness.ProxyProcess:
        proxy = harness.ProxyProcess(config, *extra, **kwargs)  # type: ignore[arg-type]
        redirect = harness.redirect_to(proxy.port)
        redirect.__enter__()
        started.append((proxy, redirect))
        return proxy.start()

    yield start
    for proxy, redirect in reversed(started):
        proxy.stop()
        redirect.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def topology() -> Iterator[None]:
    """The namespaces of the redirect-rule tests (firewall_helpers.py), per module."""
    assert os.geteuid() == 0, "the e2e tests run as root (tests/run.sh)"
    firewall_helpers.setup_topology()
    origins = firewall_helpers.start_origins()
    yield
    origins.stop()
    firewall_helpers.teardown_topology()


@pytest.fixture
def workdir(topology: None) -> Iterator[Path]:
    """A directory the proxy's uid can read; the APP rule set is empty before and after."""
    firewall_helpers.flush_rules(firewall_helpers.APP)
    path = Path(tempfile.mkdtemp(prefix="agfw-"))
    path.chmod(0o755)
    yield path
    firewall_helpers.flush_rules(firewall_helpers.APP)
    shutil.rmtree(path, ignore_errors=True)
