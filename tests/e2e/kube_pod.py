"""Running a manifest's containers as a container runtime would, in the firewall rig.

There is no cluster here, so the parts a kubelet and runtime provide are played by the
test: the network namespace is the pod's, each container's command, args and env come from
the manifest (the image's ENV from docker/Dockerfile), its securityContext becomes the uid,
gid, capability bounding set and no_new_privs of its process, readOnlyRootFilesystem a
read-only root mount with the container's writable volumes bound in, and volume paths are
mapped to directories of the test. What the image puts on PATH is this checkout: the
entrypoint as `sh docker/entrypoint.sh`, `airgap-proxy` as `python -m proxy.cli`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import firewall_helpers as h

KUBERNETES = h.REPO / "docker" / "kubernetes"
ENTRYPOINT_IN_IMAGE = "/usr/local/bin/airgap-entrypoint"


def pod_spec(manifest: str, kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((KUBERNETES / manifest).read_text())
    (found,) = [d for d in docs if d and d["kind"] == kind]
    return found["spec"]["template"]["spec"]


def configmap_data(manifest: str) -> dict[str, str]:
    docs = yaml.safe_load_all((KUBERNETES / manifest).read_text())
    (found,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    return dict(found["data"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [
        c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name
    ]
    return found


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV settings (PATH aside: the rig's own tools are on it)."""
    text = re.sub(r"\\\n", " ", (h.REPO / "docker" / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                if key != "PATH":
                    env[key] = value
    return env


class Container:
    """One container of the manifest, with its mount paths mapped to `volumes`."""

    def __init__(self, spec: dict[str, Any], name: str, volumes: dict[str, Path]) -> None:
        self.spec = container(spec, name)
        self.volumes = volumes
        self.mounts = {
            m["mountPath"]: volumes[m["name"]] for m in self.spec.get("volumeMounts", [])
        }

    def path(self, text: str) -> str:
        for mount_path, local in self.mounts.items():
            if text == mount_path or text.startswith(mount_path + "/"):
                return str(local) + text[len(mount_path) :]
        return text

    def _argv(self, words: list[str]) -> list[str]:
        words = [self.path(w) for w in words]
        if words[0] == ENTRYPOINT_IN_IMAGE:
            return ["sh", str(h.REPO / "docker" / "entrypoint.sh"), *words[1:]]
        if words[0] == "airgap-proxy":
            return [sys.executable, "-m", "proxy.cli", *words[1:]]
        return words

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {key: self.path(value) for key, value in image_env().items()}
        env.update({e["name"]: self.path(e["value"]) for e in self.spec.get("env", [])})
        env["AIRGAP_BIN"] = f"{sys.executable} -m proxy.cli"
        if "/run/airgap-proxy" in self.mounts:  # the entrypoint's own default
            env["AIRGAP_STATE_DIR"] = str(self.mounts["/run/airgap-proxy"])
        env.update(extra or {})
        return env

    def uid(self, pod: dict[str, Any]) -> int:
        sc = {**pod.get("securityContext", {}), **self.spec.get("securityContext", {})}
        return int(sc["runAsUser"])

    def _runtime(self, pod: dict[str, Any]) -> list[str]:
        """The process credentials and the read-only root, from the securityContext."""
        sc = {**pod.get("securityContext", {}), **self.spec.get("securityContext", {})}
        uid, gid = int(sc["runAsUser"]), int(sc.get("runAsGroup", sc["runAsUser"]))
        caps = self.spec["securityContext"]["capabilities"]
        assert caps["drop"] == ["ALL"]
        added = [c.lower() for c in caps.get("add", [])]
        bounding = "-all" + "".join(f",+{c}" for c in added)
        creds = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all"]
        if uid != 0:
            creds += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        if sc.get("allowPrivilegeEscalation") is False:
            creds.append("--no-new-privs")
        steps = ["set -e"]
        if sc.get("readOnlyRootFilesystem"):
            for m in self.spec.get("volumeMounts", []):
                if not m.get("readOnly"):
                    local = shlex.quote(str(self.volumes[m["name"]]))
                    steps.append(f"mount --bind {local} {local}")
            steps.append("mount -o remount,bind,ro /")
        steps.append('exec "$@"')
        ns = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(steps), "sh"]
        return [*ns, *h.python_readable_by_all(), *creds, "--"]

    def command(self, pod: dict[str, Any], *extra_args: str) -> list[str]:
        words = [*self.spec["command"], *self.spec.get("args", [])]
        return [*self._runtime(pod), *self._argv(words), *extra_args]

    def probe_command(self, pod: dict[str, Any], probe: str) -> list[str]:
        return [*self._runtime(pod), *self._argv(list(self.spec[probe]["exec"]["command"]))]

    def start(
        self, pod: dict[str, Any], ns: str, *extra_args: str, env: dict[str, str] | None = None
    ) -> h.Background:
        return h.Background(h.in_ns(ns, *self.command(pod, *extra_args)), env=self.env(env))

    def run(
        self, pod: dict[str, Any], ns: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            h.in_ns(ns, *self.command(pod)),
            env={**os.environ, **self.env(env)},
            cwd=h.REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def probe(self, pod: dict[str, Any], ns: str, probe: str) -> bool:
        """The exec probe, as the kubelet runs it: in the container, with its env."""
        proc = subprocess.run(
            h.in_ns(ns, *self.probe_command(pod, probe)),
            env={**os.environ, **self.env()},
            cwd=h.REPO,
            capture_output=True,
            timeout=int(self.spec[probe].get("timeoutSeconds", 1)) + 10,
            check=False,
        )
        return proc.returncode == 0


def read_only_bind(source: Path, target: Path) -> None:
    """`target` shows `source` read-only, as the kubelet mounts a ConfigMap volume."""
    target.mkdir(parents=True, exist_ok=True)
    h.sh("mount", "--bind", str(source), str(target))
    h.sh("mount", "-o", "remount,bind,ro", str(target))


def unmount(target: Path) -> None:
    h.sh("umount", str(target), check=False)
