"""The leak guard against an upstream proxy in the sidecar namespace itself, on real packets.

Real tinyproxy runs in APP under a uid of its own (exempted with `--exclude-uid`, as the
README allows), bound to the wildcard address as it is by default. Whatever address the
upstream was configured as, a client must not reach it on any local address of either
family: another loopback address, ::1 (or IPv4 through a `[::]` socket), the namespace's
interface addresses, nor through the redirect to the proxy; a client behind
`--from-interface` neither. The proxy's own (marked) traffic must still reach it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import firewall_helpers as h

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e

BACKENDS = ("iptables", "nft")
PORT = 3128
#: Every way a process in APP can address APP itself.
LOCAL = (
    "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.2",
    h.APP_V4, h.APP_V6, h.APP_PEER_V4, h.APP_PEER_V6,
)  # fmt: skip
#: APP's addresses as a client behind `--from-interface` sees them.
FROM_PEER = (h.APP_PEER_V4, h.APP_PEER_V6, h.APP_V4, h.APP_V6)
GUARD = (
    "--block-unredirected",
    "--dns-server", h.DNS_V4, "--dns-server", h.DNS_V6,
    "--exclude-uid", str(h.LOCAL_UPSTREAM_UID),
)  # fmt: skip


@pytest.fixture
def upstream(workdir: Path) -> Iterator[h.Background]:
    bg = h.start_local_upstream(workdir, PORT)
    yield bg
    bg.stop()


def tunnels(
    ns: str, addresses: tuple[str, ...], port: int = PORT, **who: int | None
) -> dict[str, dict]:
    """CONNECT to the origin's port 8080 through the upstream at each address."""
    mark = who.pop("mark", None)
    extra = ("--mark", hex(mark)) if mark is not None else ()
    args = ("tunnel", str(port), h.ORIGIN_V4, "8080", *addresses, *extra)
    return h.probe(ns, *args, **who)


def reached(answers: dict[str, dict]) -> list[str]:
    return [a for a, r in answers.items() if r.get("reply", "").startswith("ORIGIN ")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "where",
    ["127.0.0.1:3128", "localhost:3128", "[::1]:3128", f"{h.APP_V4}:3128"],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback", "interface-address"],
)
def test_a_local_upstream_is_closed_on_every_local_address(
    upstream: h.Background, backend: str, where: str
) -> None:
    # before: the wildcard-bound upstream answers on all of them (so the rules are tested)
    assert reached(tunnels(h.APP, LOCAL, uid=h.CLIENT_UID)) == list(LOCAL)
    done = h.firewall(h.APP, "apply", "--backend", backend, "--upstream", where, *GUARD)
    answers = tunnels(h.APP, LOCAL, uid=h.CLIENT_UID)
    assert reached(answers) == [], answers
    assert all(r.get("error") == "ConnectionRefusedError" for r in answers.values()), answers
    assert "guarded on every local address" in done.stderr
    # the proxy's marked sockets still reach it, on whatever address it was given
    marked = tunnels(h.APP, ("127.0.0.1", "::1", h.APP_V4), mark=h.MARK)
    assert reached(marked) == ["127.0.0.1", "::1", h.APP_V4], marked


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_proxy_uses_a_local_upstream_that_clients_cannot(
    upstream: h.Background, workdir: Path, backend: str
) -> None:
    config = json.loads(json.dumps(h.PROXY_CONFIG))
    config["containersProxy"].update(
        http=f"http://127.0.0.1:{PORT}", https=f"http://127.0.0.1:{PORT}", exclude=[]
    )
    path = h.write_config(workdir, config)
    h.firewall(h.APP, "apply", "--backend", backend, "--config", str(path), *GUARD)
    proxy = h.start_proxy(path)
    try:
        # client -> redirect -> proxy (uid 10001, marked) -> local tinyproxy -> origin
        answer = h.probe(h.APP, "tcp", h.ORIGIN_V4, "80", uid=h.CLIENT_UID)
        assert answer.get("reply") == f"ORIGIN {h.ORIGIN_V4} 80 FROM {h.APP_V4}\n", answer
        assert reached(tunnels(h.APP, LOCAL, uid=h.CLIENT_UID)) == []
        # the proxy's start-up hint points to the real rules, not a hand-written one
        assert "airgap-proxy iptables apply --config" in proxy.text()
        assert "--gid-owner" not in proxy.text()
    finally:
        proxy.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_local_upstream_on_a_transparent_port_is_not_reached_through_the_proxy(
    workdir: Path, backend: str
) -> None:
    # With every port transparent, a connection to APP's own address on the upstream's port
    # would be redirected to the proxy, whose policy allows APP's range DIRECT: the proxy
    # itself would carry the client to the upstream. It must be rejected instead.
    upstream = h.start_local_upstream(workdir, 8080)
    proxy = h.start_proxy(h.write_config(workdir))
    try:
        options = ("--transparent-ports", "*", "--upstream", "127.0.0.1:8080", *GUARD)
        h.firewall(h.APP, "apply", "--backend", backend, *options)
        answers = tunnels(h.APP, LOCAL, port=8080, uid=h.CLIENT_UID)
        assert reached(answers) == [], answers
        assert not [r for r in h.proxy_records(proxy) if r["dst"].endswith(":8080")]
        # other destinations on that port are still redirected to the proxy
        answer = h.probe(h.APP, "tcp", h.ORIGIN_V4, "8080", uid=h.CLIENT_UID)
        assert answer.get("reply", "").startswith(f"ORIGIN {h.ORIGIN_V4} 8080 "), answer
        h.wait_for(lambda: h.proxy_records(proxy), 5, "the proxy's audit record")
    finally:
        proxy.stop()
        upstream.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_local_upstream_is_closed_to_clients_behind_from_interface(
    upstream: h.Background, backend: str
) -> None:
    assert reached(tunnels(h.PEER, FROM_PEER)) == list(FROM_PEER)
    options = ("--from-interface", h.PEER_IF, "--upstream", f"127.0.0.1:{PORT}", *GUARD)
    h.firewall(h.APP, "apply", "--backend", backend, *options)
    answers = tunnels(h.PEER, FROM_PEER)
    assert reached(answers) == [], answers
    # and from inside APP as before
    assert reached(tunnels(h.APP, LOCAL, uid=h.CLIENT_UID)) == []


def test_a_local_upstream_on_the_proxy_port_is_refused(workdir: Path) -> None:
    # its guard would reject every redirected connection, which arrives on that port
    done = h.firewall(h.APP, "apply", "--upstream", "127.0.0.1:15001", *GUARD, check=False)
    assert done.returncode == 2 and "the proxy's own port" in done.stderr, done.stderr
    assert "AIRGAP" not in h.saved_rules(h.APP)
