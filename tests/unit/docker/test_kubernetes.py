"""docker/kubernetes/: every manifest valid against the Kubernetes OpenAPI schemas (offline,
for the oldest and newest minor versions claimed), and the security settings the README
promises, read from the manifests: a manifest that drifts from them fails here.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rules.config import load_config

KUBERNETES = Path(__file__).resolve().parents[3] / "docker" / "kubernetes"
#: Native sidecars (an init container with restartPolicy: Always) are on by default from
#: 1.29; the newest is the newest schema kubernetes-validate ships.
VERSIONS = ("1.29.0", "1.37.0")
PROXY_UID = 10001
ENTRYPOINT = "/usr/local/bin/airgap-entrypoint"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(kind: str, path: Path) -> dict[str, Any]:
    found = [doc for doc in documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"{path.name}: {len(found)} {kind}"
    return found[0]


def pod_spec(path: Path, kind: str) -> dict[str, Any]:
    return one(kind, path)["spec"]["template"]["spec"]


def sidecar_pod() -> dict[str, Any]:
    return pod_spec(KUBERNETES / "sidecar.yaml", "Deployment")


def node_pod() -> dict[str, Any]:
    return pod_spec(KUBERNETES / "node-daemonset.yaml", "DaemonSet")


def by_name(containers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in containers}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_the_manifests_are_there() -> None:
    assert [p.name for p in MANIFESTS] == ["node-daemonset.yaml", "sidecar.yaml"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_is_not_vacuous() -> None:
    deployment = copy.deepcopy(one("Deployment", KUBERNETES / "sidecar.yaml"))
    sidecar = deployment["spec"]["template"]["spec"]["initContainers"][1]
    sidecar["securityContext"]["capabilities"]["dorp"] = ["ALL"]  # a typo, strict refuses
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    sidecar["securityContext"]["capabilities"].pop("dorp")
    sidecar["securityContext"]["readOnlyRootFilesystem"] = "yes"  # not a boolean
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


# ---------------------------------------------------------------- every container


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("spec", [sidecar_pod(), node_pod()], ids=["sidecar", "node"])
def test_every_container_drops_all_and_cannot_escalate(spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostPID", "hostIPC", "shareProcessNamespace"):
        assert not spec.get(key), key
    for c in all_containers(spec):
        sc = c["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert not sc.get("privileged"), c["name"]
        assert "seccompProfile" not in sc, c["name"]  # the pod's RuntimeDefault holds


@pytest.mark.parametrize("spec", [sidecar_pod(), node_pod()], ids=["sidecar", "node"])
def test_only_the_rules_step_is_root_and_it_holds_net_admin_alone(spec: dict[str, Any]) -> None:
    init = by_name(spec["initContainers"])
    rules = init["airgap-rules"]
    assert spec["initContainers"][0] is rules  # before the proxy and everything else
    assert "restartPolicy" not in rules  # runs to completion, once per pod
    assert rules["command"] == [ENTRYPOINT, "rules"]
    assert rules["securityContext"]["runAsUser"] == 0
    assert rules["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert env(rules)["AIRGAP_BLOCK_UNREDIRECTED"] == "1"
    for c in all_containers(spec):
        if c is not rules:
            assert "add" not in c["securityContext"]["capabilities"], c["name"]
            assert c["securityContext"]["runAsNonRoot"] is True, c["name"]
            assert c["securityContext"]["runAsUser"] != 0, c["name"]


def proxy_args(container: dict[str, Any]) -> list[str]:
    assert container["command"] == ["airgap-proxy", "run"]
    return list(container["args"])


def listens(container: dict[str, Any]) -> list[str]:
    args = proxy_args(container)
    return [args[i + 1] for i, a in enumerate(args) if a == "--listen"]


def check_proxy_container(proxy: dict[str, Any]) -> None:
    sc = proxy["securityContext"]
    assert sc["runAsUser"] == PROXY_UID and sc["runAsGroup"] == PROXY_UID
    assert sc["capabilities"] == {"drop": ["ALL"]}  # not even NET_ADMIN: it cannot mark
    args = proxy_args(proxy)
    assert args[args.index("--mark") + 1] == "0"
    assert args[args.index("--config") + 1] == "/etc/airgap-proxy/admin-settings.json"
    # Probes run in the container (exec): a kubelet probe comes from the node to the pod
    # IP, which a loopback listener does not answer and which must not be opened for it.
    for probe in ("startupProbe", "readinessProbe"):
        assert proxy[probe]["exec"]["command"] == [ENTRYPOINT, "healthcheck"], probe
    assert "httpGet" not in str(proxy) and "tcpSocket" not in str(proxy)
    mounts = by_name(proxy["volumeMounts"])
    assert mounts["policy"]["readOnly"] is True and "subPath" not in mounts["policy"]
    assert mounts["state"]["readOnly"] is True


# ---------------------------------------------------------------- the pod sidecar


def test_sidecar_is_native_and_gates_the_app() -> None:
    spec = sidecar_pod()
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["airgap-rules", "airgap-proxy"]
    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    check_proxy_container(proxy)
    # a startupProbe, not only readiness, holds back the containers after a native sidecar
    assert proxy["startupProbe"]["failureThreshold"] * proxy["startupProbe"]["periodSeconds"] >= 30
    assert listens(proxy) == ["127.0.0.1:15001", "[::1]:15001"]


def test_sidecar_rules_exempt_the_proxy_uid_and_no_app_runs_as_it() -> None:
    spec = sidecar_pod()
    rules = by_name(spec["initContainers"])["airgap-rules"]
    words = shlex.split(env(rules)["AIRGAP_IPTABLES_ARGS"])
    assert words[words.index("--proxy-uid") + 1] == str(PROXY_UID)
    assert "--from-interface" not in words and "--forwarded-only" not in words
    # the pod's default uid is not the proxy's, and every app container names its own
    assert spec["securityContext"]["runAsUser"] not in (0, PROXY_UID)
    for app in spec["containers"]:
        sc = app["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] not in (0, PROXY_UID), app["name"]
        assert sc.get("runAsGroup") != PROXY_UID, app["name"]


def test_sidecar_policy_is_a_configmap_directory_that_loads(tmp_path: Path) -> None:
    path = KUBERNETES / "sidecar.yaml"
    spec = pod_spec(path, "Deployment")
    volumes = by_name(spec["volumes"])
    assert volumes["policy"]["configMap"]["name"] == one("ConfigMap", path)["metadata"]["name"]
    for c in spec["initContainers"]:
        mount = by_name(c["volumeMounts"])["policy"]
        assert mount["mountPath"] == "/etc/airgap-proxy" and "subPath" not in mount
    policy = tmp_path / "admin-settings.json"
    policy.write_text(one("ConfigMap", path)["data"]["admin-settings.json"])
    policy.chmod(0o644)
    assert str(load_config(policy).transparent_ports) == "80,443"


# ---------------------------------------------------------------- the node DaemonSet


def test_node_daemonset_polices_only_the_bridge() -> None:
    path = KUBERNETES / "node-daemonset.yaml"
    spec = node_pod()
    assert spec["hostNetwork"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    rules = by_name(spec["initContainers"])["airgap-rules"]
    words = shlex.split(env(rules)["AIRGAP_IPTABLES_ARGS"])
    assert words[words.index("--from-interface") + 1] == "cni0"
    assert "--forwarded-only" in words  # the node's own traffic is not the proxy's
    assert "--proxy-uid" not in words  # nothing of the node's is redirected: no exemption
    (proxy,) = spec["containers"]
    check_proxy_container(proxy)
    # REDIRECT from the bridge delivers to the bridge's own address
    assert listens(proxy) == ["0.0.0.0:15001", "[::]:15001"]
    namespace = one("Namespace", path)["metadata"]
    assert one("DaemonSet", path)["metadata"]["namespace"] == namespace["name"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
