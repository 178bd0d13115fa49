"""The kubelet node against the process node: Session -> Ready and session "new" -> first
output through the gateway, with the same operator and gateway (local processes) on each.

Run with `make bench BENCHES=kubelet_node` (root: the kubelet node runs containerd). On the
kubelet node every Session is a cold container start from the images built here; on the
process node it is a local process.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import gateway as gwbench
import report

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

NS = "bench"
GROUP = ("kubesessions.io", "v1alpha1")
SESSIONS = 20
NEW_CALLS = 5
OPERATOR_PORT, GATEWAY_PORT = 18941, 18942


def echo_app() -> dict[str, Any]:
    """The echo example App as shipped (cpu 250m: its limit too, so a container's Python start
    is throttled as it would be on a real node; the process node enforces no limits)."""
    app: dict[str, Any] = next(
        a
        for a in yaml.safe_load_all((benchcluster.REPO / "examples" / "apps.yaml").read_text())
        if a["metadata"]["name"] == "echo"
    )
    return app


def session_to_ready(api: client.ApiClient, name: str) -> float:
    """Seconds from the create call to phase Ready, seen through a watch."""
    custom = client.CustomObjectsApi(api)
    started = time.monotonic()
    custom.create_namespaced_custom_object(*GROUP, NS, "sessions", benchcluster.session(name, 120))

    def ready(_: str, obj: dict[str, Any]) -> bool:
        return bool(obj["metadata"]["name"] == name and (obj.get("status") or {}).get("phase") == "Ready")

    benchcluster.watch_objects(
        custom.list_namespaced_custom_object, *GROUP, NS, "sessions", until=ready, limit=120
    )
    took = time.monotonic() - started
    obj = custom.get_namespaced_custom_object(*GROUP, NS, "sessions", name)
    if (obj.get("status") or {}).get("phase") != "Ready":
        raise RuntimeError(f"session {name} not Ready within 120s: {obj.get('status')}")
    custom.delete_namespaced_custom_object(*GROUP, NS, "sessions", name)
    return took


def new_to_first_output(gateway: str) -> float:
    body = json.dumps({"app": "echo", "input": {"x": 1}, "session": "new", "session_timeout": 60}).encode()
    request = urllib.request.Request(  # noqa: S310 - our own gateway on loopback
        f"{gateway}/v1/run",
        data=body,
        headers={"Content-Type": "application/json", "X-Kubesessions-Namespace": NS},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 - our own gateway
        answer = json.loads(resp.read())
    took = time.monotonic() - started
    if "output" not in answer:
        raise RuntimeError(f"no output from a new session: {answer}")
    return took


def measure(kind: str, tmp: Path) -> dict[str, Any]:
    state_dir = cluster.StateDir(tmp / kind)
    logs = report.RESULTS / "kubelet_node-logs"
    logs.mkdir(parents=True, exist_ok=True)
    cluster.up(state_dir, NodeConfig(kind=kind), log=lambda _: None)
    procs = []
    try:
        api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
        benchcluster.prepare(api, NS)
        client.CustomObjectsApi(api).create_namespaced_custom_object(*GROUP, NS, "apps", echo_app())
        procs.append(
            gwbench.start(
                state_dir.kubeconfig,
                logs / f"{kind}-operator.log",
                "operator",
                "--namespace",
                NS,
                "--metrics-port",
                str(OPERATOR_PORT),
            )
        )
        procs.append(
            gwbench.start(
                state_dir.kubeconfig,
                logs / f"{kind}-gateway.log",
                "gateway",
                *("--namespace", NS, "--auth", "none", "--host", "127.0.0.1", "--port", str(GATEWAY_PORT)),
            )
        )
        gwbench.wait_http(f"http://127.0.0.1:{OPERATOR_PORT}/healthz")
        gwbench.wait_http(f"http://127.0.0.1:{GATEWAY_PORT}/readyz")
        readies = [session_to_ready(api, f"r{i}") for i in range(SESSIONS)]
        firsts = [new_to_first_output(f"http://127.0.0.1:{GATEWAY_PORT}") for _ in range(NEW_CALLS)]
        api.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        cluster.down(state_dir, log=lambda _: None)
    return {
        "session_to_ready_seconds": report.summary(readies),
        "new_to_first_output_seconds": report.summary(firsts),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-kubelet-") as tmp:
        results = {kind: measure(kind, Path(tmp)) for kind in ("process", "kubelet")}
    rows = []
    for metric, label, stat in (
        ("session_to_ready_seconds", f"Session -> Ready p50 ({SESSIONS}, cold)", "median"),
        ("session_to_ready_seconds", f"Session -> Ready p99 ({SESSIONS}, cold)", "p99"),
        ("new_to_first_output_seconds", f'"new" -> first output p50 ({NEW_CALLS})', "median"),
        ("new_to_first_output_seconds", f'"new" -> first output p99 ({NEW_CALLS})', "p99"),
    ):
        process, kubelet = results["process"][metric][stat], results["kubelet"][metric][stat]
        rows.append(
            (
                f"{label}: process / kubelet s",
                f"{process:.2f} / {kubelet:.2f}",
                f"ratio {kubelet / process:.1f}x",
            )
        )
    report.write("kubelet_node", results, rows)


if __name__ == "__main__":
    main()
