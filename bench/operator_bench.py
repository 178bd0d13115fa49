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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report

from kubesessions.api.models import AppSpec, SessionSpec
from kubesessions.control.decide import children
from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100"))
NS = "bench"
GROUP = ("kubesessions.io", "v1alpha1")
OPERATOR_LOG = report.RESULTS / "operator_bench.operator.log"
FLOOR_NS = "floor"
APP = {
    "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
    "entrypoint": "kubesessions_worker.examples.echo:Echo",
}


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def floor(
    api: client.ApiClient, core: client.CoreV1Api, custom: client.CustomObjectsApi, pids: dict[str, int]
) -> dict[str, Any]:
    """The same burst with no operator, in a namespace of its own and the node paused again:
    the bench creates each Session's Secret, Pod and Service itself (the operator's own
    manifests, Secret before Pod as it must be, from 32 threads like its 32 workers) the
    moment the Session's create call returns, with no watch, cache or status. What this machine's control plane allows at best
    for Session -> Pod, measured the same way."""
    benchcluster.create_namespace(api, FLOOR_NS)
    # An image the node has no command for: once it resumes, these pods fail without starting.
    app = AppSpec.model_validate({**APP, "image": "floor.invalid/never-started:0"})
    spec = SessionSpec.model_validate({"app": "echo", "sessionTimeout": 3600})
    created: dict[str, float] = {}
    pod_seen: dict[str, float] = {}

    def seen(_: str, pod: dict[str, Any]) -> bool:
        pod_seen.setdefault(pod["metadata"]["name"], time.monotonic())
        return len(pod_seen) >= SESSIONS

    def make_children(name: str, uid: str) -> None:
        ref = children.SessionRef(name=name, namespace=FLOOR_NS, uid=uid)
        # The operator's order: the pod's token Secret must exist before the pod does.
        core.create_namespaced_secret(FLOOR_NS, children.build_secret(ref, "echo", children.new_token()))
        core.create_namespaced_pod(FLOOR_NS, children.build_pod(ref, "echo", app, spec))
        core.create_namespaced_service(FLOOR_NS, children.build_service(ref, "echo"))

    established = threading.Event()
    watcher = threading.Thread(
        target=benchcluster.watch_objects,
        args=(core.list_namespaced_pod, FLOOR_NS),
        kwargs={"until": seen, "limit": 300, "established": established},
        daemon=True,
    )
    watcher.start()
    benchcluster.await_established(established, "pod")
    cpu = {name: proc_stats(pid)[1] for name, pid in pids.items()}
    os.kill(pids["process-node"], signal.SIGSTOP)
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(32) as workers:

            def create(i: int) -> None:
                body = benchcluster.session(f"f{i}", 3600)
                obj = custom.create_namespaced_custom_object(*GROUP, FLOOR_NS, "sessions", body)
                created[f"f{i}"] = time.monotonic()
                workers.submit(make_children, f"f{i}", obj["metadata"]["uid"])

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, range(SESSIONS)))
        watcher.join(timeout=120)
        seconds = time.monotonic() - start
        cpu = {n: round(proc_stats(pid)[1] - cpu[n], 2) for n, pid in pids.items()}
    finally:
        os.kill(pids["process-node"], signal.SIGCONT)
    return {
        "session_to_pod_ms": report.summary(
            [(pod_seen[n] - created[n]) * 1000 for n in created if n in pod_seen]
        ),
        "burst_seconds": seconds,
        "burst_cpu_seconds_by_process": cpu,
    }


def wait_while_running(op: subprocess.Popen[bytes], done: Callable[[], bool], limit: float) -> None:
    """Until ``done()`` or ``limit`` seconds (a shortfall is reported with the results); fails at
    once if the operator exits."""
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        if op.poll() is not None:
            raise RuntimeError(f"the operator exited with {op.returncode}; see {OPERATOR_LOG}")
        time.sleep(0.05)  # the watch threads fill the tallies


# The one write made per namespace, not per Session: the workers' NetworkPolicy, applied once per
# namespace while the operator runs.
NAMESPACE_WRITES = 'kubesessions_operator_api_writes_total{verb="apply",resource="networkpolicies"}'


def metric_total(port: int, prefix: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-op-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(pods=2 * SESSIONS + 20), log=lambda _: None)
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            app = {
                "apiVersion": "kubesessions.io/v1alpha1",
                "kind": "App",
                "metadata": {"name": "echo"},
                "spec": APP,
            }
            custom.create_namespaced_custom_object(*GROUP, NS, "apps", app)
            port = cluster.free_port()  # a fixed port could answer for a stray operator
            report.RESULTS.mkdir(exist_ok=True)
            extra = os.environ.get("BENCH_OPERATOR_ARGS", "").split()
            with benchcluster.operator(state_dir.kubeconfig, NS, port, OPERATOR_LOG, *extra) as op:
                created: dict[str, float] = {}
                pod_seen: dict[str, float] = {}
                ready_seen: dict[str, float] = {}
                stop = threading.Event()

                def pod_event(_: str, pod: dict[str, Any]) -> bool:
                    pod_seen.setdefault(pod["metadata"]["name"], time.monotonic())
                    return stop.is_set()

                def session_event(_: str, obj: dict[str, Any]) -> bool:
                    if (obj.get("status") or {}).get("phase") == "Ready":
                        ready_seen.setdefault(obj["metadata"]["name"], time.monotonic())
                    return stop.is_set() or len(ready_seen) == SESSIONS

                pods_open = threading.Event()

                def watch_pods() -> None:
                    benchcluster.watch_objects(
                        core.list_namespaced_pod, NS, until=pod_event, limit=900, established=pods_open
                    )

                def watch_sessions() -> None:
                    # The custom-objects client takes no sendInitialEvents: this watch says it is
                    # open with its first event; it misses none (opened without a version it begins
                    # with every Session there), and only the all-Ready total is read from it.
                    benchcluster.watch_objects(
                        custom.list_namespaced_custom_object,
                        *GROUP,
                        NS,
                        "sessions",
                        until=session_event,
                        limit=900,
                    )

                threads = [threading.Thread(target=f, daemon=True) for f in (watch_pods, watch_sessions)]
                for t in threads:
                    t.start()
                benchcluster.await_established(pods_open, "pod")  # the latencies are read from it
                _, cpu_before = proc_stats(op.pid)
                writes_before = metric_total(port, "kubesessions_operator_api_writes_total")
                namespace_writes_before = metric_total(port, NAMESPACE_WRITES)

                def create(i: int) -> None:
                    custom.create_namespaced_custom_object(
                        *GROUP, NS, "sessions", benchcluster.session(f"s{i}", 3600)
                    )
                    created[f"s{i}"] = time.monotonic()

                # Phase 1, process node paused (SIGSTOP): the operator alone turns Sessions into
                # Pods; on this 2-core machine 100 workers starting at once would starve it of CPU.
                # Where the CPU goes during the burst: each cluster process, the operator, the bench.
                pids = {p.name: p.pid for p in cluster.running_state(state_dir).processes}
                node_pid = pids["process-node"]
                pids |= {"operator": op.pid, "bench client": os.getpid()}
                burst_cpu = {name: proc_stats(pid)[1] for name, pid in pids.items()}
                os.kill(node_pid, signal.SIGSTOP)
                try:
                    start = time.monotonic()
                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(create, range(SESSIONS)))
                    created_all = time.monotonic() - start
                    wait_while_running(op, lambda: len(pod_seen) >= SESSIONS, 120)
                    burst_seconds = time.monotonic() - start
                    burst_cpu = {n: round(proc_stats(pid)[1] - burst_cpu[n], 2) for n, pid in pids.items()}
                finally:  # Phase 2: the node runs the workers; time until every Session is Ready.
                    os.kill(node_pid, signal.SIGCONT)
                resumed = time.monotonic()
                wait_while_running(op, lambda: len(ready_seen) >= SESSIONS, 600)
                all_ready = time.monotonic() - start
                ready_after_resume = time.monotonic() - resumed
                stop.set()
                rss, cpu_after = proc_stats(op.pid)
                writes = metric_total(port, "kubesessions_operator_api_writes_total") - writes_before
                namespace_writes = metric_total(port, NAMESPACE_WRITES) - namespace_writes_before
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
                timeline = {
                    what: [t - start for n, t in seen.items() if n in created]
                    for what, seen in (
                        ("Session created", created),
                        ("Pod created (node paused)", pod_seen),
                        ("Session Ready (node resumed)", ready_seen),
                    )
                }
                floor_results = floor(api, core, custom, pids)
        finally:
            cluster.down(state_dir, log=lambda _: None)
    lat = report.summary(latencies)
    results = {
        "sessions": SESSIONS,
        "ready": len(ready_seen),
        "create_calls_seconds": created_all,
        "burst_seconds": burst_seconds,
        "burst_cpu_seconds_by_process": burst_cpu,
        "session_to_pod_ms": lat,
        "all_ready_seconds": all_ready,
        "all_ready_after_resume_seconds": ready_after_resume,
        "api_writes_per_session_to_ready": (writes - namespace_writes) / SESSIONS,
        "api_writes_per_namespace": namespace_writes,
        "api_writes_breakdown": breakdown,
        "operator_peak_rss_mb": rss,
        "operator_cpu_seconds": cpu_after - cpu_before,
        "floor_no_operator": floor_results,
    }
    report.write(
        "operator",
        results,
        [
            ("Session->Pod p50, node paused (ms)", f"{lat['median']:.0f}", ""),
            ("Session->Pod p99, node paused (ms)", f"{lat['p99']:.0f}", "<= 250 ms"),
            (
                "same burst, no operator: p50 (ms)",
                f"{floor_results['session_to_pod_ms']['median']:.0f}",
                "floor",
            ),
            (
                "same burst, no operator: p99 (ms)",
                f"{floor_results['session_to_pod_ms']['p99']:.0f}",
                "floor",
            ),
            (
                f"all {SESSIONS} Ready after node resumed (s)",
                f"{ready_after_resume:.1f}",
                f"{len(ready_seen)}/{SESSIONS} Ready",
            ),
            (
                "API writes per Session to Ready",
                f"{(writes - namespace_writes) / SESSIONS:.2f}",
                f"<= 6 (and {namespace_writes:.0f} for the namespace)",
            ),
            ("operator peak RSS (MB)", f"{rss:.0f}", "<= 150 MB"),
            ("operator CPU (s)", f"{cpu_after - cpu_before:.1f}", ""),
        ],
        samples={"Session -> Pod, node paused": latencies},
        timeline=timeline,
    )


if __name__ == "__main__":
    main()
