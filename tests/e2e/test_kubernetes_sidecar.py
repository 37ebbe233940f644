"""docker/kubernetes/sidecar.yaml's start-up path for real, in a network namespace (the pod).

The rules init container and the native sidecar run as the manifest says (command, args,
env, uid, capabilities, read-only root, the ConfigMap as a read-only `..data` symlink
chain), the application as another uid without capabilities. Then: the startup probe holds
until the proxy listens, allowed traffic passes and the rest is refused, a killed proxy
leaves egress closed with the rules untouched, and the kubelet's restart in place (the
same command again) reopens it without one rule more.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.configmap import write_volume
from tests.e2e import firewall_helpers as h
from tests.e2e import kube_pod as k

if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1":
    pytest.skip("run through tests/run.sh (private network namespace)", allow_module_level=True)

pytestmark = pytest.mark.e2e

MANIFEST = "sidecar.yaml"
KEY = "admin-settings.json"
#: The rig's stand-in for the pod's /etc/resolv.conf (the rules read the resolvers there).
DNS_ARGS = f" --dns-server {h.DNS_V4} --dns-server {h.DNS_V6}"


def rig_policy() -> str:
    """The manifest's ConfigMap policy with the rig's origin instead of example.com."""
    doc = json.loads(k.configmap_data(MANIFEST)[KEY])
    assert doc["containersProxy"]["exclude"] == ["example.com"]
    doc["containersProxy"]["exclude"] = [h.ORIGIN_V4]  # IPv4 origin allowed, IPv6 not
    return json.dumps(doc)


class Pod:
    def __init__(self, workdir: Path) -> None:
        self.spec = k.pod_spec(MANIFEST, "Deployment")
        self.source = workdir / "configmap"
        write_volume(self.source, {KEY: rig_policy()})
        self.volumes = {
            "policy": workdir / "volumes" / "policy",
            "state": workdir / "volumes" / "state",
            "tmp": workdir / "volumes" / "tmp",
        }
        k.read_only_bind(self.source, self.volumes["policy"])
        for name in ("state", "tmp"):
            self.volumes[name].mkdir(parents=True)
            self.volumes[name].chmod(0o777 if name == "tmp" else 0o755)
        self.rules = k.Container(self.spec, "airgap-rules", self.volumes)
        self.proxy = k.Container(self.spec, "airgap-proxy", self.volumes)
        self.started: list[h.Background] = []

    def rules_env(self) -> dict[str, str]:
        return {"AIRGAP_IPTABLES_ARGS": self.rules.env()["AIRGAP_IPTABLES_ARGS"] + DNS_ARGS}

    def init(self) -> Any:
        return self.rules.run(self.spec, h.APP, env=self.rules_env())

    def start_proxy(self) -> h.Background:
        bg = self.proxy.start(self.spec, h.APP)
        self.started.append(bg)
        return bg

    def started_up(self) -> bool:
        return self.proxy.probe(self.spec, h.APP, "startupProbe")

    def ready(self) -> bool:
        return self.proxy.probe(self.spec, h.APP, "readinessProbe")

    def close(self) -> None:
        for bg in self.started:
            bg.stop(signal.SIGKILL)
        k.unmount(self.volumes["policy"])


@pytest.fixture
def pod(workdir: Path) -> Iterator[Pod]:
    p = Pod(workdir)
    yield p
    p.close()


def client(host: str, port: int) -> dict:
    return h.probe(h.APP, "tcp", host, str(port), uid=h.CLIENT_UID)


def reaches(host: str, port: int) -> bool:
    return client(host, port).get("reply", "").startswith(f"ORIGIN {host} {port} ")


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines}


def proxy_process(bg: h.Background) -> int:
    """The proxy: the last process of the container's chain (unshare, sh, setpriv exec)."""
    pid = bg.proc.pid
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children or "proxy.cli" in Path(f"/proc/{pid}/cmdline").read_text():
            return pid
        pid = int(children[0])


def test_sidecar_start_up_path(pod: Pod) -> None:
    assert reaches(h.ORIGIN_V6, 80)  # open before the pod's rules
    done = pod.init()
    assert done.returncode == 0, done.stderr
    assert "rules applied" in done.stderr
    rules = h.saved_rules(h.APP)
    # the app's containers would not start yet: the sidecar's startup probe fails
    assert not pod.started_up()
    assert "error" in client(h.ORIGIN_V4, 80)  # redirected to a port nothing listens on

    proxy = pod.start_proxy()
    h.wait_for(pod.started_up, 30, "the sidecar's startupProbe", 0.2)
    assert pod.ready()
    assert reaches(h.ORIGIN_V4, 80), proxy.text()
    assert not reaches(h.ORIGIN_V6, 80)  # decided by the policy: not allowed
    assert not reaches(h.ORIGIN_V6, 443)
    assert reaches(h.ORIGIN_V6, 8080)  # not a transparent port: left alone, as documented
    assert "error" in h.probe(h.APP, "udp", h.ORIGIN_V4, str(h.UDP_PORT), uid=h.CLIENT_UID)
    assert "reply" in h.probe(h.APP, "udp", h.DNS_V4, "53", uid=h.CLIENT_UID)
    # the proxy as the manifest's uid, without any capability
    fields = status(proxy_process(proxy))
    assert fields["Uid"].split() == [str(pod.proxy.uid(pod.spec))] * 4
    assert int(fields["CapEff"], 16) == int(fields["CapPrm"], 16) == 0
    assert int(fields["CapBnd"], 16) == 0 and fields["NoNewPrivs"] == "1"

    # killed (OOM, crash): nothing wraps it, the rules in the pod keep egress closed
    os.kill(proxy_process(proxy), signal.SIGKILL)
    proxy.proc.wait(10)
    assert not pod.ready()
    for host in (h.ORIGIN_V4, h.ORIGIN_V6):
        assert "error" in client(host, 80) and "error" in client(host, 443)
    assert "error" in h.probe(h.APP, "udp", h.ORIGIN_V4, str(h.UDP_PORT), uid=h.CLIENT_UID)
    assert h.saved_rules(h.APP) == rules

    # the kubelet restarts the native sidecar in place: same command, same namespace
    pod.start_proxy()
    h.wait_for(pod.started_up, 30, "the restarted sidecar's startupProbe", 0.2)
    assert reaches(h.ORIGIN_V4, 80)
    assert not reaches(h.ORIGIN_V6, 80)
    assert h.saved_rules(h.APP) == rules  # reused, not re-applied nor duplicated

    # a new pod sandbox runs the init container again: its apply replaces, never adds
    again = pod.init()
    assert again.returncode == 0, again.stderr
    assert h.saved_rules(h.APP) == rules
    assert reaches(h.ORIGIN_V4, 80)


def test_rules_step_runs_as_root_with_net_admin_only(pod: Pod, tmp_path: Path) -> None:
    # what the runtime grants: the bounding set of the init container is NET_ADMIN alone,
    # on a read-only root; `env` reports the capabilities the entrypoint would have
    cmd = pod.rules.command(pod.spec)
    entry = cmd.index("--") + 1
    probe = [
        *cmd[:entry],
        "sh",
        "-c",
        "grep -E '^(Cap(Eff|Bnd)|NoNewPrivs):' /proc/self/status; touch /x 2>&1 || true",
    ]
    out = h.sh(*h.in_ns(h.APP, *probe))
    assert f"CapEff:\t{1 << 12:016x}" in out and f"CapBnd:\t{1 << 12:016x}" in out
    assert "NoNewPrivs:\t1" in out and "Read-only file system" in out


def test_rules_step_fails_closed_on_a_writable_policy_volume(pod: Pod) -> None:
    # the same volume mounted read-write (an emptyDir, or readOnly dropped from the mount):
    # its 0777 directory lets anyone repoint `..data`, so the policy loader refuses it, the
    # init container fails, and the pod's namespace is locked down
    for mount in pod.rules.spec["volumeMounts"]:
        if mount["name"] == "policy":
            mount["readOnly"] = False
    pod.rules.volumes = {**pod.volumes, "policy": pod.source}
    pod.rules.mounts["/etc/airgap-proxy"] = pod.source
    done = pod.init()
    assert done.returncode == 1, done.stderr
    assert f"its directory {pod.source} is writable by group or others" in done.stderr
    assert "locking down" in done.stderr
    assert "error" in client(h.ORIGIN_V6, 8080)  # reject-all
    assert not pod.started_up()


def test_the_kubelets_volume_layout_passes_only_as_its_read_only_mount(pod: Pod) -> None:
    # The same 0777 volume directory and `..data` chain: through the read-only bind mount
    # (how the kubelet mounts a ConfigMap into every container) no one can repoint it; the
    # writable source itself is refused. Real mounts, real statvfs, no read-only root here.
    from rules.config import ConfigError, load_config

    assert load_config(pod.volumes["policy"] / KEY).transparent_ports.ranges()
    with pytest.raises(ConfigError, match=f"its directory {pod.source} is writable"):
        load_config(pod.source / KEY)
