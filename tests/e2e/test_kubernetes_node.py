"""docker/kubernetes/node-daemonset.yaml in the rig: the node's namespace (APP) with a pods'
bridge `cni0`, and a pod's namespace joined to it by a veth pair, as a bridge CNI makes it.

    POD eth0 198.51.100.10/29 -- veth -- [cni0 198.51.100.9/29]  APP (the node)  eth0 -- NET

The rules init container and the proxy run in the node's namespace as the manifest says
(hostNetwork). A pod's TCP to the transparent ports is redirected to the proxy and decided
there (the origin sees the node's address), the rest it forwards is guarded; the node's own
traffic, the proxy's upstream connections included, is neither redirected nor guarded.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.configmap import write_volume
from tests.e2e import firewall_helpers as h
from tests.e2e import kube_pod as k

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e

MANIFEST = "node-daemonset.yaml"
KEY = "admin-settings.json"
POD = "agk8s-pod"
BRIDGE_V4, POD_V4 = "198.51.100.9", "198.51.100.10"
BRIDGE_V6, POD_V6 = "2001:db8:3::1", "2001:db8:3::2"


@pytest.fixture(scope="module")
def bridge(topology: None) -> Iterator[str]:
    """The pods' bridge in the node's namespace and one pod behind it."""
    spec = k.pod_spec(MANIFEST, "DaemonSet")
    words = shlex.split(k.container(spec, "airgap-rules")["env"][1]["value"])
    name = words[words.index("--from-interface") + 1]
    h.sh("ip", "netns", "add", POD)
    node = lambda *a: h.sh(*h.in_ns(h.APP, "ip", *a))  # noqa: E731
    pod = lambda *a: h.sh(*h.in_ns(POD, "ip", *a))  # noqa: E731
    pod("link", "set", "lo", "up")
    node("link", "add", name, "type", "bridge")
    node("addr", "add", f"{BRIDGE_V4}/29", "dev", name)
    node("-6", "addr", "add", f"{BRIDGE_V6}/64", "dev", name, "nodad")
    node("link", "add", "vethpod0", "type", "veth", "peer", "eth0", "netns", POD)
    node("link", "set", "vethpod0", "master", name)
    node("link", "set", "vethpod0", "up")
    node("link", "set", name, "up")
    pod("addr", "add", f"{POD_V4}/29", "dev", "eth0")
    pod("-6", "addr", "add", f"{POD_V6}/64", "dev", "eth0", "nodad")
    pod("link", "set", "eth0", "up")
    pod("route", "add", "default", "via", BRIDGE_V4)
    pod("-6", "route", "add", "default", "via", BRIDGE_V6)
    h.sh(*h.in_ns(h.NET, "ip", "route", "add", "198.51.100.8/29", "via", h.APP_V4))
    h.sh(*h.in_ns(h.NET, "ip", "-6", "route", "add", "2001:db8:3::/64", "via", h.APP_V6))
    yield name
    h.sh("ip", "netns", "del", POD, check=False)


def rig_policy() -> str:
    doc = json.loads(k.configmap_data(MANIFEST)[KEY])
    doc["containersProxy"]["exclude"] = [h.ORIGIN_V4]
    return json.dumps(doc)


def from_pod(proto: str, host: str, port: int) -> dict:
    return h.probe(POD, proto, host, str(port), uid=h.CLIENT_UID)


def from_node(proto: str, host: str, port: int) -> dict:
    return h.probe(h.APP, proto, host, str(port), uid=h.CLIENT_UID)


def origin_saw(answer: dict, host: str, port: int) -> str | None:
    """The client address the origin saw, or None when it did not answer."""
    reply = answer.get("reply", "")
    prefix = f"ORIGIN {host} {port} FROM "
    return reply[len(prefix) :].strip() if reply.startswith(prefix) else None


def test_node_daemonset_redirects_the_pods_and_leaves_the_node_alone(
    bridge: str, workdir: Path
) -> None:
    spec = k.pod_spec(MANIFEST, "DaemonSet")
    source = workdir / "configmap"
    write_volume(source, {KEY: rig_policy()})
    volumes = {name: workdir / "volumes" / name for name in ("policy", "state", "tmp")}
    k.read_only_bind(source, volumes["policy"])
    for name in ("state", "tmp"):
        volumes[name].mkdir(parents=True)
    volumes["tmp"].chmod(0o777)
    rules = k.Container(spec, "airgap-rules", volumes)
    proxy = k.Container(spec, "airgap-proxy", volumes)
    started: list[h.Background] = []
    try:
        # the pod's path through the new bridge (IPv6 neighbour discovery first) is open
        for host, own in ((h.ORIGIN_V4, POD_V4), (h.ORIGIN_V6, POD_V6)):
            h.wait_for(
                lambda host=host, own=own: origin_saw(from_pod("tcp", host, 80), host, 80) == own,
                20,
                f"the pod reaching {host} before any rule",
                0.2,
            )
        dns = f" --dns-server {h.DNS_V4} --dns-server {h.DNS_V6}"
        extra = {"AIRGAP_IPTABLES_ARGS": rules.env()["AIRGAP_IPTABLES_ARGS"] + dns}
        done = rules.run(spec, h.APP, env=extra)
        assert done.returncode == 0, done.stderr
        assert f"REDIRECT delivers to its primary address {BRIDGE_V4}:15001" in done.stderr
        saved = h.saved_rules(h.APP)
        assert "-A OUTPUT" not in saved  # nothing of the node's own traffic is touched

        started.append(proxy.start(spec, h.APP, "--log-format", "json"))
        h.wait_for(lambda: proxy.probe(spec, h.APP, "startupProbe"), 30, "startupProbe", 0.2)

        # the pod: redirected, decided by the policy, carried by the proxy from the node
        for port in (80, 443):
            assert origin_saw(from_pod("tcp", h.ORIGIN_V4, port), h.ORIGIN_V4, port) == h.APP_V4
            assert origin_saw(from_pod("tcp", h.ORIGIN_V6, port), h.ORIGIN_V6, port) is None
        records = [r for r in h.proxy_records(started[0]) if r.get("client", "").startswith(POD_V4)]
        assert records, started[0].text()
        # other TCP ports are forwarded as they were; UDP other than DNS is not
        assert origin_saw(from_pod("tcp", h.ORIGIN_V4, 8080), h.ORIGIN_V4, 8080) == POD_V4
        assert "error" in from_pod("udp", h.ORIGIN_V4, h.UDP_PORT)
        assert "error" in from_pod("udp", h.ORIGIN_V6, h.UDP_PORT)
        assert "reply" in from_pod("udp", h.DNS_V4, 53)

        # the node's own traffic: not redirected (the policy would refuse IPv6), not guarded
        before = len(h.proxy_records(started[0]))
        for host in (h.ORIGIN_V4, h.ORIGIN_V6):
            assert origin_saw(from_node("tcp", host, 80), host, 80) is not None
            assert "reply" in from_node("udp", host, h.UDP_PORT)
        assert len(h.proxy_records(started[0])) == before

        # the proxy dies: the pods' transparent ports are closed, the node is unaffected
        started[0].stop(signal.SIGKILL)
        assert "error" in from_pod("tcp", h.ORIGIN_V4, 80)
        assert origin_saw(from_node("tcp", h.ORIGIN_V4, 80), h.ORIGIN_V4, 80) == h.APP_V4
        assert h.saved_rules(h.APP) == saved

        # restarted (the DaemonSet's pod again): reopened, same rules after a new apply
        again = rules.run(spec, h.APP, env=extra)
        assert again.returncode == 0, again.stderr
        started.append(proxy.start(spec, h.APP))
        h.wait_for(lambda: proxy.probe(spec, h.APP, "startupProbe"), 30, "startupProbe", 0.2)
        assert origin_saw(from_pod("tcp", h.ORIGIN_V4, 80), h.ORIGIN_V4, 80) == h.APP_V4
        assert h.saved_rules(h.APP) == saved
    finally:
        for bg in started:
            bg.stop(signal.SIGKILL)
        k.unmount(volumes["policy"])
