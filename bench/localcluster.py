"""Local cluster: `up` to ready, pod create -> Ready on the process node, `down`.

Run with `make bench` (or `.venv/bin/python bench/localcluster.py`). Uses its own state dir.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).parent))
import report

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

UPS = 3
PODS = 20


def pod(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11",
                    "command": ["python3", "-m", "http.server", "8000", "--bind", "$(POD_IP)"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                }
            ],
        },
    }


def create_to_ready(core: client.CoreV1Api, name: str) -> float:
    """Seconds from the create call to the Ready condition, seen through a watch."""
    w = watch.Watch()
    started = time.monotonic()
    created = core.create_namespaced_pod("default", pod(name))
    for event in w.stream(
        core.list_namespaced_pod,
        "default",
        field_selector=f"metadata.name={name}",
        resource_version=created.metadata.resource_version,
        timeout_seconds=60,
    ):
        conds = event["object"].status.conditions or []
        if any(c.type == "Ready" and c.status == "True" for c in conds):
            w.stop()
            return time.monotonic() - started
    raise RuntimeError(f"pod {name} not Ready within 60s")


def main() -> None:
    ups, downs, readies = [], [], []
    with tempfile.TemporaryDirectory(prefix="ks-bench-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        for i in range(UPS):
            t = time.monotonic()
            cluster.up(state_dir, NodeConfig(), log=lambda _: None)
            ups.append(time.monotonic() - t)
            if i == UPS - 1:
                api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
                core = client.CoreV1Api(api)
                while not core.list_namespaced_service_account("default").items:
                    time.sleep(0.1)
                for n in range(PODS):
                    readies.append(create_to_ready(core, f"p{n}"))
                api.close()
            t = time.monotonic()
            cluster.down(state_dir, log=lambda _: None)
            downs.append(time.monotonic() - t)
    results = {
        "up_seconds": report.summary(ups),
        "down_seconds": report.summary(downs),
        "pod_create_to_ready_seconds": report.summary(readies),
    }
    report.write(
        "localcluster",
        results,
        [
            (f"up to ready, median of {UPS} (s)", f"{results['up_seconds']['median']:.2f}", "<= 20 s"),
            (
                f"pod create->Ready, median of {PODS} (s)",
                f"{results['pod_create_to_ready_seconds']['median']:.2f}",
                "<= 2 s",
            ),
            ("pod create->Ready, max (s)", f"{results['pod_create_to_ready_seconds']['max']:.2f}", "<= 2 s"),
            (f"down, median of {UPS} (s)", f"{results['down_seconds']['median']:.2f}", ""),
        ],
        samples={"cluster up": ups, "pod create -> Ready": readies, "cluster down": downs},
        unit="s",
    )


if __name__ == "__main__":
    main()
