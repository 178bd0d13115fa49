"""Idle culling: how close to its deadline each idle session ends, and what idleness costs.

Part 1: N sessions (default 100) with idle timeouts spread over 1-10 s and no calls after
Ready. For each, deadline = max(the worker's own lastActivity read from its /status, the
status.readyAt the Session was announced Ready with: nobody can call it before) + timeout,
and deletion start = when a pod watch first sees the pod marked for deletion. Reports the
distribution of (deletion start - deadline) and the count of premature deletions. Sessions
come in waves of 20, each wave culled before the next starts: on this 2-core machine twenty
Python workers starting at once take every core from the operator, which says nothing about
the operator (on a real cluster workers start on their own GPU nodes).
Part 2: M idle sessions (default 200) with 1-hour timeouts: the operator's API writes per
minute and CPU seconds per minute over a quiet window.
Run with `make bench BENCHES=idle` (or .venv/bin/python bench/idle.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
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

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report
from operator_bench import metric_total, proc_stats

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

CULLED = int(os.environ.get("BENCH_IDLE_SESSIONS", "100"))
QUIET = int(os.environ.get("BENCH_QUIET_SESSIONS", "200"))
QUIET_WINDOW = float(os.environ.get("BENCH_QUIET_SECONDS", "60"))
NS = "idle"
GROUP = ("kubesessions.io", "v1alpha1")


def session(name: str, timeout: int) -> dict[str, object]:
    return {"apiVersion": "kubesessions.io/v1alpha1", "kind": "Session", "metadata": {"name": name},
            "spec": {"app": "echo", "sessionTimeout": timeout}}  # fmt: skip


def wait_ready(
    custom: client.CustomObjectsApi,
    names: set[str],
    limit: float,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Watch until every one of ``names`` is Ready; ``on_ready`` runs (on a pool) as each gets there."""
    ready: dict[str, dict[str, Any]] = {}
    w = watch.Watch()
    deadline = time.monotonic() + limit
    with ThreadPoolExecutor(8) as pool:
        for event in w.stream(
            custom.list_namespaced_custom_object, *GROUP, NS, "sessions", timeout_seconds=int(limit)
        ):
            obj = event["object"]
            name = obj["metadata"]["name"]
            if name in names and name not in ready and (obj.get("status") or {}).get("phase") == "Ready":
                ready[name] = obj
                if on_ready is not None:
                    pool.submit(on_ready, obj)
            if len(ready) == len(names) or time.monotonic() > deadline:
                w.stop()
    return ready


def idle_since(core: client.CoreV1Api, obj: dict[str, Any]) -> float:
    """Epoch seconds idleness counts from: the worker's own lastActivity, not before readyAt."""
    name, status = obj["metadata"]["name"], obj["status"]
    token = base64.b64decode(core.read_namespaced_secret(f"{name}-token", NS).data["token"]).decode()
    request = urllib.request.Request(
        f"http://{status['podIP']}:8080/status", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - a local pod
        last = json.loads(resp.read())["lastActivity"]
    return max(epoch(last), epoch(status["readyAt"]))


def epoch(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-idle-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(pods=max(CULLED, QUIET) + 20), log=lambda _: None)
        op = None
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            custom.create_namespaced_custom_object(*GROUP, NS, "apps", {
                "apiVersion": "kubesessions.io/v1alpha1", "kind": "App", "metadata": {"name": "echo"},
                "spec": {"image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
                         "entrypoint": "kubesessions_worker.examples.echo:Echo"}})  # fmt: skip
            port = 18950
            op = subprocess.Popen(
                [str(Path(sys.executable).parent / "kubesessions"), "operator", "--namespace", NS,
                 "--metrics-port", str(port), "--retention", "3600"],
                env={**os.environ, "KUBECONFIG": str(state_dir.kubeconfig)},
                stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "operator.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            while True:
                try:
                    metric_total(port, "kubesessions_operator_sessions")
                    break
                except OSError:
                    time.sleep(0.1)

            # Part 1: culling accuracy, in waves (see the module docstring).
            deletion_seen: dict[str, float] = {}

            def watch_deletions() -> None:
                w = watch.Watch()
                for event in w.stream(core.list_namespaced_pod, NS, timeout_seconds=900):
                    pod = event["object"]
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        deletion_seen.setdefault(pod.metadata.name, time.time())
                    if len(deletion_seen) >= CULLED:
                        w.stop()

            watcher = threading.Thread(target=watch_deletions, daemon=True)
            watcher.start()
            time.sleep(1)
            deadlines: dict[str, float] = {}
            unread: list[str] = []

            def record_deadline(obj: dict[str, Any]) -> None:
                # Read at once: with a 1 s timeout the worker may be culled a moment later.
                try:
                    deadlines[obj["metadata"]["name"]] = idle_since(core, obj) + obj["spec"]["sessionTimeout"]
                except Exception:
                    unread.append(obj["metadata"]["name"])

            for wave in range(0, CULLED, 20):
                names = {f"c{i}" for i in range(wave, min(CULLED, wave + 20))}
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda n: custom.create_namespaced_custom_object(
                        *GROUP, NS, "sessions", session(n, 1 + int(n[1:]) % 10)), sorted(names)))  # fmt: skip
                wait_ready(custom, names, 120, record_deadline)
                limit = time.monotonic() + 60
                while not names <= deletion_seen.keys() and time.monotonic() < limit:
                    time.sleep(0.05)  # the bench's own pace: the watch thread fills deletion_seen
            watcher.join(timeout=60)
            lateness = [deletion_seen[n] - d for n, d in deadlines.items() if n in deletion_seen]
            premature = sum(1 for x in lateness if x < 0)

            # Part 2: the cost of idleness, sessions that stay idle for an hour.
            quiet = {f"q{i}" for i in range(QUIET)}
            for wave in range(0, QUIET, 20):
                names = sorted(quiet)[wave : wave + 20]
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda n: custom.create_namespaced_custom_object(
                        *GROUP, NS, "sessions", session(n, 3600)), names))  # fmt: skip
                wait_ready(custom, set(names), 120)
            time.sleep(5)  # let the Ready transitions' writes settle before the window opens
            writes0 = metric_total(port, "kubesessions_operator_api_writes_total")
            _, cpu0 = proc_stats(op.pid)
            time.sleep(QUIET_WINDOW)  # the window being measured
            writes1 = metric_total(port, "kubesessions_operator_api_writes_total")
            rss, cpu1 = proc_stats(op.pid)
        finally:
            if op is not None:
                op.terminate()
                op.wait(timeout=30)
            cluster.down(state_dir, log=lambda _: None)
    minutes = QUIET_WINDOW / 60
    late = report.summary(lateness) if lateness else {}
    results = {
        "culled_sessions": len(lateness),
        "deadline_unread": unread,
        "deletion_minus_deadline_seconds": late,
        "premature_deletions": premature,
        "quiet_sessions": QUIET,
        "quiet_window_seconds": QUIET_WINDOW,
        "api_writes_per_minute": (writes1 - writes0) / minutes,
        "api_writes_per_session_per_minute": (writes1 - writes0) / minutes / QUIET,
        "operator_cpu_seconds_per_minute": (cpu1 - cpu0) / minutes,
        "operator_peak_rss_mb": rss,
    }
    report.write(
        "idle",
        results,
        [
            (f"late p50 ({len(lateness)} culled, s)", f"{late.get('median', float('nan')):.3f}", ""),
            ("late p99 (s)", f"{late.get('p99', float('nan')):.3f}", "<= 1 s"),
            ("late max (s)", f"{late.get('max', float('nan')):.3f}", ""),
            ("premature deletions", str(premature), "0"),
            (f"API writes/min, {QUIET} idle sessions", f"{results['api_writes_per_minute']:.1f}", ""),
            (
                "API writes per session per minute",
                f"{results['api_writes_per_session_per_minute']:.3f}",
                "<= 1",
            ),
            ("operator CPU s per minute", f"{results['operator_cpu_seconds_per_minute']:.2f}", ""),
        ],
    )


if __name__ == "__main__":
    main()
