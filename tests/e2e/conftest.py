"""Fixtures of the end-to-end rig (see harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e import harness


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
