"""`airgap-proxy iptables` on real packets: redirect, no loop, no leak, exact removal.

Each test starts from an empty rule set in the sidecar namespace (APP), applies rules with
the real command, and probes with real sockets as other uids; the real proxy runs as its own
uid and marks its upstream sockets (see firewall_helpers for the topology).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import firewall_helpers as h

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e

BACKENDS = ("iptables", "nft")
GUARD = (
    "--block-unredirected",
    "--dns-server", h.DNS_V4, "--dns-server", h.DNS_V6,
    "--upstream", f"{h.UPSTREAM_V4}:{h.UPSTREAM_PORT}",
    "--upstream", f"[{h.UPSTREAM_V6}]:{h.UPSTREAM_PORT}",
)  # fmt: skip


@pytest.fixture
def proxy(workdir: Path) -> Iterator[h.Background]:
    bg = h.start_proxy(h.write_config(workdir))
    yield bg
    bg.stop()


def client(host: str, port: int, uid: int = h.CLIENT_UID) -> dict:
    return h.probe(h.APP, "tcp", host, str(port), uid=uid)


def via_proxy(proxy: h.Background, host: str, port: int) -> list[dict]:
    return [r for r in h.proxy_records(proxy) if host in r["dst"] and r["dst"].endswith(f":{port}")]


def wait_record(proxy: h.Background, host: str, port: int) -> list[dict]:
    """The proxy's records for host:port, waiting (bounded) for the first to be written."""

    def found() -> bool:
        return bool(via_proxy(proxy, host, port))

    h.wait_for(found, 5, f"an audit record for {host}:{port}")
    return via_proxy(proxy, host, port)


def assert_reached_origin(answer: dict, host: str, port: int) -> None:
    assert answer.get("reply", "").startswith(f"ORIGIN {host} {port} FROM "), answer


def assert_blocked(answer: dict) -> None:
    assert "error" in answer, f"expected the connection to be refused, got {answer}"


# ---------------------------------------------------------------- redirect


@pytest.mark.parametrize("backend", BACKENDS)
def test_transparent_ports_reach_the_proxy_ipv4_and_ipv6(proxy: h.Background, backend: str) -> None:
    h.firewall(h.APP, "apply", "--backend", backend, "--transparent-ports", "80,443", *GUARD)
    for host, source in ((h.ORIGIN_V4, h.APP_V4), (h.ORIGIN_V6, h.APP_V6)):
        for port in (80, 443):
            answer = client(host, port)
            # The origin answered the proxy's own (marked) connection: it was not looped
            # back into the proxy, which would have refused it as a connection to itself.
            assert answer.get("reply") == f"ORIGIN {host} {port} FROM {source}\n", answer
            (record,) = wait_record(proxy, host, port)
            assert record["decision"] == "DIRECT" and not record.get("error"), record


@pytest.mark.parametrize("backend", BACKENDS)
def test_mark_mode_redirects_the_proxy_uid_but_not_the_mark(
    proxy: h.Background, backend: str
) -> None:
    h.firewall(h.APP, "apply", "--backend", backend, *GUARD)
    # an application running under the proxy's own uid gains nothing in mark mode
    assert_reached_origin(client(h.ORIGIN_V4, 80, uid=h.PROXY_UID), h.ORIGIN_V4, 80)
    wait_record(proxy, h.ORIGIN_V4, 80)
    # only a socket carrying the mark (which needs CAP_NET_ADMIN) goes around the proxy
    marked = h.probe(h.APP, "tcp", h.ORIGIN_V6, "80", "--mark", hex(h.MARK))
    assert_reached_origin(marked, h.ORIGIN_V6, 80)
    assert via_proxy(proxy, h.ORIGIN_V6, 80) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_ports_outside_transparent_ports_are_untouched(proxy: h.Background, backend: str) -> None:
    h.firewall(h.APP, "apply", "--backend", backend, *GUARD)
    for host in (h.ORIGIN_V4, h.ORIGIN_V6):
        assert_reached_origin(client(host, 8080), host, 8080)
        assert via_proxy(proxy, host, 8080) == []


def test_all_ports_redirects_every_tcp_port(proxy: h.Background) -> None:
    h.firewall(h.APP, "apply", "--transparent-ports", "*", *GUARD)
    assert_reached_origin(client(h.ORIGIN_V4, 8080), h.ORIGIN_V4, 8080)
    wait_record(proxy, h.ORIGIN_V4, 8080)


def test_uid_exclusion_exempts_that_uid_and_warns(workdir: Path) -> None:
    done = h.firewall(h.APP, "apply", "--proxy-uid", str(h.PROXY_UID), *GUARD)
    assert "bypasses the proxy" in done.stderr
    # no proxy is running: the exempt uid reaches the origin, anyone else is refused
    assert_reached_origin(client(h.ORIGIN_V4, 80, uid=h.PROXY_UID), h.ORIGIN_V4, 80)
    assert_blocked(client(h.ORIGIN_V4, 80))


def test_config_file_drives_the_ports(workdir: Path) -> None:
    config = dict(h.PROXY_CONFIG)
    config["containersProxy"] = {**h.PROXY_CONFIG["containersProxy"], "transparentPorts": "8080"}
    path = h.write_config(workdir, config)
    shown = h.firewall(h.APP, "show", "--config", str(path)).stdout
    assert "--dports 8080 " in shown and "--dports 80," not in shown
    h.firewall(h.APP, "apply", "--config", str(path))
    # 8080 is now redirected to a proxy that is not running: refused; 80 is left alone
    assert_blocked(client(h.ORIGIN_V4, 8080))
    assert_reached_origin(client(h.ORIGIN_V4, 80), h.ORIGIN_V4, 80)


# ---------------------------------------------------------------- remove, apply twice


def _add_user_rules() -> None:
    """Rules of someone else's, which apply and remove must leave exactly as they are."""
    for tool in ("iptables", "ip6tables"):
        h.sh(*h.in_ns(h.APP, tool, "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"))
        h.sh(*h.in_ns(h.APP, tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "7"))
    h.sh(
        *h.in_ns(h.APP, "nft", "-f", "-"),
        stdin="table inet user {\n chain c { type filter hook output priority 0; }\n}\n"
        "add rule inet user c udp dport 9 accept\n",
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "options",
    [GUARD, (*GUARD, "--from-interface", h.PEER_IF, "--ipv6", "drop"), ("--lockdown",)],
    ids=["guard", "interface-ipv6-drop", "lockdown"],
)
def test_apply_twice_changes_nothing_and_remove_restores(
    workdir: Path, backend: str, options: tuple[str, ...]
) -> None:
    _add_user_rules()
    before = (h.saved_rules(h.APP), h.nft_rules(h.APP))
    h.firewall(h.APP, "apply", "--backend", backend, *options)
    once = (h.saved_rules(h.APP), h.nft_rules(h.APP))
    assert once != before
    h.firewall(h.APP, "apply", "--backend", backend, *options)
    assert (h.saved_rules(h.APP), h.nft_rules(h.APP)) == once
    h.firewall(h.APP, "remove", "--backend", backend)
    after_iptables = h.saved_rules(h.APP)
    assert after_iptables == before[0]
    if backend == "nft":
        # nft leaves no empty table behind: the whole ruleset is as before
        assert h.nft_rules(h.APP) == before[1]
    h.firewall(h.APP, "remove", "--backend", backend)  # removing twice is harmless
    assert h.saved_rules(h.APP) == before[0]


def test_apply_replaces_an_earlier_different_apply(workdir: Path) -> None:
    h.firewall(h.APP, "apply", "--transparent-ports", "*", *GUARD, "--from-interface", h.PEER_IF)
    h.firewall(h.APP, "apply", "--transparent-ports", "80")
    replaced = h.saved_rules(h.APP)
    h.firewall(h.APP, "remove")
    h.firewall(h.APP, "apply", "--transparent-ports", "80")
    assert h.saved_rules(h.APP) == replaced
    assert "AIRGAP-GUARD" not in replaced and "AIRGAP-NAT-PRE" not in replaced


def _jumps(saved: str) -> list[str]:
    """Every jump into a chain of ours, as (tool, table, rule) text."""
    out: list[str] = []
    tool = table = ""
    for line in saved.splitlines():
        if line.startswith("# "):
            tool = line[2:]
        elif line.startswith("*"):
            table = line
        elif " -j AIRGAP-" in line and not line.startswith("-A AIRGAP-"):
            out.append(f"{tool} {table} {line}")
    return out


@pytest.mark.parametrize(
    "options",
    [GUARD, ("--lockdown",), (*GUARD, "--from-interface", h.PEER_IF, "--ipv6", "drop")],
    ids=["guard", "lockdown", "interface-ipv6-drop"],
)
def test_show_prints_what_apply_runs_and_can_be_run_again(
    workdir: Path, options: tuple[str, ...]
) -> None:
    _add_user_rules()
    script = h.firewall(h.APP, "show", *options).stdout
    h.sh(*h.in_ns(h.APP, "sh", "-e", "-c", script))  # runnable as printed
    by_show = h.saved_rules(h.APP)
    # run again by hand: still one jump into each chain of ours, nothing duplicated
    h.sh(*h.in_ns(h.APP, "sh", "-e", "-c", script))
    assert h.saved_rules(h.APP) == by_show
    jumps = _jumps(by_show)
    assert jumps and len(jumps) == len(set(jumps)), jumps
    h.flush_rules(h.APP)
    _add_user_rules()
    h.firewall(h.APP, "apply", *options)
    assert h.saved_rules(h.APP) == by_show
    # and over a different earlier apply it replaces that one, as apply does
    h.firewall(h.APP, "apply", "--transparent-ports", "*", *GUARD, "--from-interface", h.PEER_IF)
    h.sh(*h.in_ns(h.APP, "sh", "-e", "-c", script))
    assert h.saved_rules(h.APP) == by_show


@pytest.mark.parametrize("backend", BACKENDS)
def test_remove_with_nothing_installed_says_so(workdir: Path, backend: str) -> None:
    done = h.firewall(h.APP, "remove", "--backend", backend)
    assert done.returncode == 0
    assert "nothing to remove" in done.stderr and "rules removed" not in done.stderr
    h.firewall(h.APP, "apply", "--backend", backend)
    assert "rules removed" in h.firewall(h.APP, "remove", "--backend", backend).stderr


@pytest.mark.parametrize("action", ["apply", "show"])
def test_an_unsafe_policy_file_is_a_one_line_refusal(workdir: Path, action: str) -> None:
    path = h.write_config(workdir)
    path.chmod(0o664)  # group-writable: `run` refuses it, and so must the rules
    done = h.firewall(h.APP, action, "--config", str(path), check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "writable by group" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    missing = h.firewall(h.APP, action, "--config", str(workdir / "none.json"), check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert "AIRGAP" not in h.saved_rules(h.APP)


# ---------------------------------------------------------------- the leak guard


TRACKER = """table inet tracker {
\tchain output {
\t\ttype filter hook output priority 0; policy accept;
\t\tct state established counter
\t}
}
"""


@pytest.mark.parametrize("host", [h.ORIGIN_V4, h.ORIGIN_V6])
@pytest.mark.parametrize("guard", [True, False], ids=["guard", "no-guard"])
def test_flow_opened_before_apply(proxy: h.Background, host: str, guard: bool) -> None:
    # Conntrack only runs in a namespace once some stateful rule needs it; in a container it
    # usually does already, and then an older flow stays ESTABLISHED and never meets the
    # redirect (a flow conntrack never saw is picked up mid-stream and redirected, and dies).
    # Start from the situation where the guard is needed.
    h.sh(*h.in_ns(h.APP, "nft", "-f", "-"), stdin=TRACKER)
    with h.held_flow(host, 80) as flow:
        assert_reached_origin(h.held_answer(flow), host, 80)
        h.firewall(h.APP, "apply", *(GUARD if guard else ()))
        assert flow.stdin is not None
        flow.stdin.write("again\n")
        flow.stdin.flush()
        answer = h.held_answer(flow)
    if guard:
        assert_blocked(answer)  # conntrack would have kept it alive around the proxy
    else:
        assert_reached_origin(answer, host, 80)  # the hole the guard closes
    assert via_proxy(proxy, host, 80) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_guard_blocks_udp_icmp_and_upstream_but_not_dns(workdir: Path, backend: str) -> None:
    def udp(host: str, port: int) -> dict:
        return h.probe(h.APP, "udp", host, str(port), uid=h.CLIENT_UID)

    # before: everything flows (so the assertions below are about the rules)
    for host in (h.ORIGIN_V4, h.ORIGIN_V6):
        assert udp(host, h.UDP_PORT).get("reply", "").startswith("UDP "), host
        assert h.probe(h.APP, "icmp", host) == {"reply": "echo-reply"}
    h.firewall(h.APP, "apply", "--backend", backend, *GUARD)
    for host, dns, upstream in (
        (h.ORIGIN_V4, h.DNS_V4, h.UPSTREAM_V4),
        (h.ORIGIN_V6, h.DNS_V6, h.UPSTREAM_V6),
    ):
        assert_blocked(udp(host, h.UDP_PORT))  # QUIC-style UDP cannot go around the proxy
        assert udp(dns, 53).get("reply", "").startswith(f"UDP {dns} 53"), dns
        assert_blocked(h.probe(h.APP, "icmp", host))  # other protocols (root, unmarked)
        # an application may not use the upstream proxy itself; the marked proxy may
        assert_blocked(client(upstream, h.UPSTREAM_PORT))
        marked = h.probe(h.APP, "tcp", upstream, str(h.UPSTREAM_PORT), "--mark", hex(h.MARK))
        assert_reached_origin(marked, upstream, h.UPSTREAM_PORT)
        # ports outside transparentPorts are still left alone
        assert_reached_origin(client(host, 8080), host, 8080)


def test_ipv6_drop_rejects_ipv6_and_keeps_ipv4_redirect(proxy: h.Background) -> None:
    h.firewall(h.APP, "apply", "--ipv6", "drop", *GUARD)
    assert_blocked(client(h.ORIGIN_V6, 80))
    assert_blocked(client(h.ORIGIN_V6, 8080))
    assert_reached_origin(client(h.ORIGIN_V4, 80), h.ORIGIN_V4, 80)
    wait_record(proxy, h.ORIGIN_V4, 80)
    assert via_proxy(proxy, h.ORIGIN_V6, 80) == []


def test_lockdown_rejects_everything_but_loopback(workdir: Path) -> None:
    h.firewall(h.APP, "apply", *GUARD)
    h.firewall(h.APP, "apply", "--lockdown")
    for host, dns in ((h.ORIGIN_V4, h.DNS_V4), (h.ORIGIN_V6, h.DNS_V6)):
        assert_blocked(client(host, 8080))
        assert_blocked(client(host, 80))
        assert_blocked(h.probe(h.APP, "udp", dns, "53", uid=h.CLIENT_UID))
        marked = h.probe(h.APP, "tcp", host, "8080", "--mark", hex(h.MARK))
        assert_blocked(marked)  # no exemption: the proxy is gone


# ---------------------------------------------------------------- forwarded traffic


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_interface_redirects_forwarded_traffic(workdir: Path, backend: str) -> None:
    config = h.write_config(workdir)
    proxy = h.start_proxy(config, "0.0.0.0:15001", "[::]:15001")
    try:
        done = h.firewall(
            h.APP, "apply", "--backend", backend, "--from-interface", h.PEER_IF, *GUARD
        )
        assert f"primary address {h.APP_PEER_V4}:15001" in done.stderr
        for host, source in ((h.ORIGIN_V4, h.APP_V4), (h.ORIGIN_V6, h.APP_V6)):
            # redirected to the proxy, which connects from APP's own address
            answer = h.probe(h.PEER, "tcp", host, "80")
            assert answer.get("reply") == f"ORIGIN {host} 80 FROM {source}\n", answer
            wait_record(proxy, host, 80)
            # outside transparentPorts: forwarded as it is, from the peer's own address
            answer = h.probe(h.PEER, "tcp", host, "8080")
            peer = h.PEER_V4 if host == h.ORIGIN_V4 else h.PEER_V6
            assert answer.get("reply") == f"ORIGIN {host} 8080 FROM {peer}\n", answer
            assert_blocked(h.probe(h.PEER, "udp", host, str(h.UDP_PORT)))
        assert_blocked(h.probe(h.PEER, "tcp", h.UPSTREAM_V4, str(h.UPSTREAM_PORT)))
    finally:
        proxy.stop()
