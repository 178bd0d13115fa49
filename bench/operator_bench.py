"""Operator: 100 Sessions created at once on the local cluster.

Measures Session -> Pod created latency (p50/p99, from the create call returning to the pod's
ADDED watch event), time until all are Ready, API writes per Session to Ready (the
operator's own counter), and the operator's peak RSS and CPU seconds.
Run with `make bench BENCHES=operator_bench` (or .venv/bin/python bench/operator_bench.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100"))
NS = "bench"
GROUP = ("kubesessions.io", "v1alpha1")


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def metric_total(port: int, prefix: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-op-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(pods=SESSIONS + 20), log=lambda _: None)
        op = None
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            app = {"apiVersion": "kubesessions.io/v1alpha1", "kind": "App", "metadata": {"name": "echo"},
                   "spec": {"image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
                            "entrypoint": "kubesessions_worker.examples.echo:Echo"}}  # fmt: skip
            custom.create_namespaced_custom_object(*GROUP, NS, "apps", app)
            port = 18900
            env = {**os.environ, "KUBECONFIG": str(state_dir.kubeconfig)}
            op = subprocess.Popen(
                [str(Path(sys.executable).parent / "kubesessions"), "operator", "--namespace", NS,
                 "--metrics-port", str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "operator.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    metric_total(port, "kubesessions_operator_sessions")
                    break
                except OSError:
                    time.sleep(0.1)
            created: dict[str, float] = {}
            pod_seen: dict[str, float] = {}
            ready_seen: dict[str, float] = {}
            stop = threading.Event()

            def watch_pods() -> None:
                w = watch.Watch()
                for event in w.stream(core.list_namespaced_pod, NS, timeout_seconds=600):
                    name = event["object"].metadata.name
                    pod_seen.setdefault(name, time.monotonic())
                    if stop.is_set():
                        w.stop()

            def watch_sessions() -> None:
                w = watch.Watch()
                for event in w.stream(
                    custom.list_namespaced_custom_object, *GROUP, NS, "sessions", timeout_seconds=600
                ):
                    obj = event["object"]
                    if (obj.get("status") or {}).get("phase") == "Ready":
                        ready_seen.setdefault(obj["metadata"]["name"], time.monotonic())
                    if stop.is_set() or len(ready_seen) == SESSIONS:
                        w.stop()

            threads = [threading.Thread(target=f, daemon=True) for f in (watch_pods, watch_sessions)]
            for t in threads:
                t.start()
            time.sleep(1)  # both watches established
            _, cpu_before = proc_stats(op.pid)
            writes_before = metric_total(port, "kubesessions_operator_api_writes_total")

            def create(i: int) -> None:
                body = {"apiVersion": "kubesessions.io/v1alpha1", "kind": "Session", "metadata": {"name": f"s{i}"},
                        "spec": {"app": "echo", "sessionTimeout": 3600}}  # fmt: skip
                custom.create_namespaced_custom_object(*GROUP, NS, "sessions", body)
                created[f"s{i}"] = time.monotonic()

            # Phase 1, process node paused (SIGSTOP): the operator alone turns Sessions into
            # Pods; on this 2-core machine 100 workers starting at once would starve it of CPU.
            node_pid = next(
                p.pid for p in cluster.running_state(state_dir).processes if p.name == "process-node"
            )
            os.kill(node_pid, signal.SIGSTOP)
            start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, range(SESSIONS)))
            created_all = time.monotonic() - start
            deadline = time.monotonic() + 120
            while len(pod_seen) < SESSIONS and time.monotonic() < deadline:
                time.sleep(0.05)
            # Phase 2: the node runs the workers; time until every Session is Ready.
            os.kill(node_pid, signal.SIGCONT)
            resumed = time.monotonic()
            deadline = time.monotonic() + 600
            while len(ready_seen) < SESSIONS and time.monotonic() < deadline:
                time.sleep(0.2)
            all_ready = time.monotonic() - start
            ready_after_resume = time.monotonic() - resumed
            stop.set()
            rss, cpu_after = proc_stats(op.pid)
            writes = metric_total(port, "kubesessions_operator_api_writes_total") - writes_before
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                breakdown = [
                    ln
                    for ln in resp.read().decode().splitlines()
                    if ln.startswith("kubesessions_operator_api")
                ]
            if len(ready_seen) < SESSIONS:  # say why, rather than report a silent shortfall
                phases: dict[str, int] = {}
                for item in custom.list_namespaced_custom_object(*GROUP, NS, "sessions")["items"]:
                    st = item.get("status") or {}
                    label = f"{st.get('phase')}/{st.get('reason')}"
                    phases[label] = phases.get(label, 0) + 1
                print(f"not all Ready: {phases}", file=sys.stderr)
            latencies = [max(0.0, pod_seen[n] - created[n]) * 1000 for n in created if n in pod_seen]
        finally:
            if op is not None and op.poll() is not None:
                print(f"the operator exited ({op.returncode}):\n{(Path(tmp) / 'operator.log').read_text()[-3000:]}",
                      file=sys.stderr)  # fmt: skip
            if op is not None:
                op.terminate()
                op.wait(timeout=20)
            cluster.down(state_dir, log=lambda _: None)
    lat = report.summary(latencies)
    results = {
        "sessions": SESSIONS,
        "ready": len(ready_seen),
        "create_calls_seconds": created_all,
        "session_to_pod_ms": lat,
        "all_ready_seconds": all_ready,
        "all_ready_after_resume_seconds": ready_after_resume,
        "api_writes_per_session_to_ready": writes / SESSIONS,
        "api_writes_breakdown": breakdown,
        "operator_peak_rss_mb": rss,
        "operator_cpu_seconds": cpu_after - cpu_before,
    }
    report.write(
        "operator",
        results,
        [
            ("Session->Pod p50, node paused (ms)", f"{lat['median']:.0f}", ""),
            ("Session->Pod p99, node paused (ms)", f"{lat['p99']:.0f}", "<= 250 ms"),
            (
                f"all {SESSIONS} Ready after node resumed (s)",
                f"{ready_after_resume:.1f}",
                f"{len(ready_seen)}/{SESSIONS} Ready",
            ),
            ("API writes per Session to Ready", f"{writes / SESSIONS:.2f}", "<= 8"),
            ("operator peak RSS (MB)", f"{rss:.0f}", "<= 150 MB"),
            ("operator CPU (s)", f"{cpu_after - cpu_before:.1f}", ""),
        ],
    )


if __name__ == "__main__":
    main()
