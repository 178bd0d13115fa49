"""Idle culling: how close to its deadline each idle session ends.

N sessions (default 100) with idle timeouts spread over 1-10 s and no calls after Ready. For
each, deadline = max(the worker's own lastActivity read from its /status, the status.readyAt
the Session was announced Ready with: nobody can call it before) + timeout, and deletion
start = when a pod watch first sees the pod marked for deletion. Reports the distribution of
(deletion start - deadline) and the count of premature deletions. Sessions come in waves of
20, each wave culled before the next starts: on this 2-core machine twenty Python workers
starting at once take every core from the operator, which says nothing about the operator
(on a real cluster workers start on their own GPU nodes). What idleness costs (1,000 idle
sessions) is bench/idle_cost.py.
Run with `make bench BENCHES=idle` (or .venv/bin/python bench/idle.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
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

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

SESSIONS = int(os.environ.get("BENCH_IDLE_SESSIONS", "100"))
WAVE = 20
NS = "idle"
GROUP = ("kubesessions.io", "v1alpha1")


def wait_ready(
    custom: client.CustomObjectsApi,
    names: set[str],
    limit: float,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Watch until every one of ``names`` is Ready or ``limit`` seconds pass; ``on_ready`` runs
    (on a pool) as each gets there."""
    ready: dict[str, dict[str, Any]] = {}

    def seen(_: str, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        if name in names and name not in ready and (obj.get("status") or {}).get("phase") == "Ready":
            ready[name] = obj
            if on_ready is not None:
                pool.submit(on_ready, obj)
        return len(ready) == len(names)

    with ThreadPoolExecutor(8) as pool:
        benchcluster.watch_objects(
            custom.list_namespaced_custom_object, *GROUP, NS, "sessions", until=seen, limit=limit
        )
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
        cluster.up(state_dir, NodeConfig(pods=SESSIONS + 20), log=lambda _: None)
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            custom.create_namespaced_custom_object(
                *GROUP,
                NS,
                "apps",
                benchcluster.echo_app(),
            )
            log = Path(tmp) / "operator.log"
            with benchcluster.operator(
                state_dir.kubeconfig, NS, cluster.free_port(), log, "--retention", "3600"
            ):
                lateness, unread = cull_in_waves(core, custom)
        finally:
            cluster.down(state_dir, log=lambda _: None)
    late = report.summary(lateness) if lateness else {}
    premature = sum(1 for x in lateness if x < 0)
    results = {
        "sessions": SESSIONS,
        "culled_sessions": len(lateness),
        "deadline_unread": unread,
        "deletion_minus_deadline_seconds": late,
        "premature_deletions": premature,
    }
    report.write(
        "idle",
        results,
        [
            (f"late p50 ({len(lateness)} culled, s)", f"{late.get('median', float('nan')):.3f}", ""),
            ("late p99 (s)", f"{late.get('p99', float('nan')):.3f}", "<= 1 s"),
            ("late max (s)", f"{late.get('max', float('nan')):.3f}", ""),
            ("premature deletions", str(premature), "0"),
        ],
        samples={"cull: deletion - deadline": lateness},
        unit="s",
    )


def cull_in_waves(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> tuple[list[float], list[str]]:
    """(deletion start - deadline for each culled session, sessions whose deadline was unread)."""
    deletion_seen: dict[str, float] = {}

    def deletion(kind: str, pod: dict[str, Any]) -> bool:
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            deletion_seen.setdefault(pod["metadata"]["name"], time.time())
        return len(deletion_seen) >= SESSIONS

    established = threading.Event()

    def watch_deletions() -> None:
        benchcluster.watch_objects(
            core.list_namespaced_pod, NS, until=deletion, limit=900, established=established
        )

    watcher = threading.Thread(target=watch_deletions, daemon=True)
    watcher.start()
    benchcluster.await_established(established, "pod")
    deadlines: dict[str, float] = {}
    unread: list[str] = []

    def record_deadline(obj: dict[str, Any]) -> None:
        # Read at once: with a 1 s timeout the worker may be culled a moment later.
        try:
            deadlines[obj["metadata"]["name"]] = idle_since(core, obj) + obj["spec"]["sessionTimeout"]
        except Exception:
            unread.append(obj["metadata"]["name"])

    for wave in range(0, SESSIONS, WAVE):
        names = {f"c{i}" for i in range(wave, min(SESSIONS, wave + WAVE))}
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: custom.create_namespaced_custom_object(
                        *GROUP, NS, "sessions", benchcluster.session(n, 1 + int(n[1:]) % 10)
                    ),
                    sorted(names),
                )
            )
        wait_ready(custom, names, 120, record_deadline)
        limit = time.monotonic() + 60
        while not names <= deletion_seen.keys() and time.monotonic() < limit:
            time.sleep(0.05)  # the bench's own pace: the watch thread fills deletion_seen
    watcher.join(timeout=60)
    return [deletion_seen[n] - d for n, d in deadlines.items() if n in deletion_seen], unread


if __name__ == "__main__":
    main()
