"""`make demo`: the local cluster up, its GPU node, and a pod running on it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .localcluster import binaries, cluster
from .localcluster.nodeconfig import NodeConfig

DEMO_NAMESPACE = "kubesessions-demo"


def demo_pod() -> dict[str, Any]:
    """A pod that asks for a GPU and serves HTTP on its own podIP."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello-gpu", "namespace": DEMO_NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11-slim",
                    "command": ["python3", "-m", "http.server", "8000", "--bind", "$(POD_IP)"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                }
            ],
        },
    }


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run_demo() -> int:
    state_dir = cluster.StateDir(cluster.default_state_dir())
    kubectl = str(binaries.ensure_binaries(("kubectl",))["kubectl"])
    if cluster.running_state(state_dir) is None:
        _step(
            "starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, process node)"
        )
        cluster.up(state_dir, NodeConfig())
    else:
        _step(f"the local cluster in {state_dir.root} is already running; using it")
    kc = [kubectl, f"--kubeconfig={state_dir.kubeconfig}"]

    def show(*args: str) -> None:
        print("$ kubectl " + " ".join(args), flush=True)
        subprocess.run([*kc, *args], check=True)

    _step("the process node: a development node advertising nvidia.com/gpu")
    show("get", "nodes", "-o",
         "custom-columns=NAME:.metadata.name,STATUS:.status.conditions[-1].type,"
         "GPUS:.status.capacity.nvidia\\.com/gpu,PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product")  # fmt: skip
    _step("a pod that asks for one GPU and serves HTTP on its own loopback podIP")
    subprocess.run([*kc, "create", "namespace", DEMO_NAMESPACE], capture_output=True, check=False)
    pod = ["pod", "hello-gpu", "-n", DEMO_NAMESPACE]
    subprocess.run([*kc, "delete", *pod, "--ignore-not-found", "--wait"], check=True, capture_output=True)
    subprocess.run([*kc, "apply", "-f", "-"], input=yaml.safe_dump(demo_pod()), text=True, check=True)
    started = time.monotonic()
    show("wait", "--for=condition=Ready", *pod, "--timeout=60s")
    print(f"(Ready {time.monotonic() - started:.1f}s after create)")
    show("get", *pod, "-o", "wide")
    ip = subprocess.run(
        [*kc, "get", *pod, "-o", "jsonpath={.status.podIP}"], check=True, capture_output=True, text=True
    ).stdout
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}:8000/", timeout=5) as resp:
        print(f"GET http://{ip}:8000/ -> {resp.status}")
    _step("use it")
    env = "\n".join(cluster.env_lines(state_dir))
    print(
        f"{env}\n"
        "kubectl get nodes,pods -A\n"
        f"# container output of the demo pod: {Path(state_dir.node_dir)}/pods/<uid>/web.log\n"
        "kubesessions localcluster down   # stops every process of the cluster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
