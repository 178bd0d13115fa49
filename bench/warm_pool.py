"""Warm pool: session "new" -> first output through the gateway, from a ready pool worker vs a
cold start, side by side in one run on the process node, and the API writes of each.

Two Apps of the echo example: `echo-pooled` (warmPool.size 2) and `echo` (no pool). Sessions
take turns, one of each, BENCH_POOL_SESSIONS (50) of each: p50/p99 of `POST /v1/run` with
`session: "new"` until its reply. Before each, the previous session is gone (the operator runs
with --retention 0, so its last write is the Session's deletion) and the pool is full, so every
pooled session finds a ready worker and the API-write count of each session (the operator's
/metrics around it, less the pool's upkeep writes: the replacement worker, the App's status) is
its own. `make bench BENCHES=warm_pool` (or .venv/bin/python bench/warm_pool.py).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report
from gateway import NS, caller_token, start, wait_http
from operator_bench import metric_total

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

REPO = Path(__file__).parent.parent
GROUP = ("kubesessions.io", "v1alpha1")
SESSIONS = int(os.environ.get("BENCH_POOL_SESSIONS", "50"))
POOL_SIZE = 2
PAYLOAD = {"message": "hello"}
OP_PORT, GW_PORT = 18941, 18942


WRITES = [
    f'{{verb="{verb}",resource="{resource}"}}'
    for verb, resource in (
        ("create", "secrets"),
        ("create", "services"),
        ("create", "pods"),
        ("patch", "pods"),
        ("patch", "sessions/status"),
        ("create", "events"),
        ("apply", "networkpolicies"),
        ("delete", "pods"),
        ("delete", "services"),
        ("delete", "secrets"),
        ("delete", "sessions"),
        ("patch", "apps/status"),
    )
]


def writes() -> Counter[str]:
    """The operator's API writes so far by verb and resource, less those of the pools' upkeep
    (the replacement worker, the App's status): what the Sessions cost."""
    return Counter(
        {
            labels: metric_total(OP_PORT, f"kubesessions_operator_api_writes_total{labels}")
            - metric_total(OP_PORT, f"kubesessions_pool_upkeep_writes_total{labels}")
            for labels in WRITES
        }
    )


def instant(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def scenarios(gateway: str, token: str, api: client.ApiClient) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    headers = {"Authorization": f"Bearer {token}", "X-Kubesessions-Namespace": NS}

    def pool_full() -> bool:
        app = custom.get_namespaced_custom_object(*GROUP, NS, "apps", "echo-pooled")
        return bool(((app.get("status") or {}).get("warmPool") or {}).get("ready") == POOL_SIZE)

    def gone(name: str) -> bool:
        try:
            custom.get_namespaced_custom_object(*GROUP, NS, "sessions", name)
        except ApiException as exc:
            return exc.status == 404
        return False

    latency: dict[str, list[float]] = {"pool": [], "cold": []}
    per_session: dict[str, list[float]] = {"pool": [], "cold": []}
    by_kind: dict[str, Counter[str]] = {"pool": Counter(), "cold": Counter()}
    # When the claim and the Ready status came (status.claimedAt, readyAt), from the request.
    phases: dict[str, list[float]] = {"claimed_ms": [], "ready_ms": []}
    started_from: dict[str, list[str]] = {"pool": [], "cold": []}
    async with aiohttp.ClientSession() as http:
        for i in range(SESSIONS * 2):
            kind = "pool" if i % 2 == 0 else "cold"
            await until(pool_full, "the warm pool to be full")
            before = await asyncio.to_thread(writes)
            began, wall = time.perf_counter(), time.time()
            body = {"app": "echo-pooled" if kind == "pool" else "echo", "input": PAYLOAD, "session": "new"}
            async with http.post(f"{gateway}/v1/run", headers=headers, json=body) as r:
                reply = await r.json()
                assert r.status == 200, reply
            latency[kind].append((time.perf_counter() - began) * 1000)
            after = await asyncio.to_thread(writes)  # at the first output
            sid = str(reply["session_id"])
            status = (
                await asyncio.to_thread(custom.get_namespaced_custom_object, *GROUP, NS, "sessions", sid)
            )["status"]
            started_from[kind].append(status.get("startedFrom", "?"))
            spent = after - before
            per_session[kind].append(sum(spent.values()))
            by_kind[kind] += spent
            if kind == "pool":
                for name, field in (("claimed_ms", "claimedAt"), ("ready_ms", "readyAt")):
                    phases[name].append((instant(status[field]) - wall) * 1000)
            async with http.delete(f"{gateway}/v1/sessions/{sid}", headers=headers) as r:
                assert r.status == 204
            await until(lambda sid=sid: gone(sid), f"session {sid} to be deleted")
    return {
        kind: {
            "p50_ms": report.percentile(latency[kind], 50),
            "p99_ms": report.percentile(latency[kind], 99),
            "n": len(latency[kind]),
            "writes_per_session_max": max(per_session[kind]),
            "writes_per_session_median": report.percentile(per_session[kind], 50),
            "started_from": {k: started_from[kind].count(k) for k in set(started_from[kind])},
            "writes_by_kind_per_session": {
                k.strip("{}"): v / len(latency[kind]) for k, v in sorted(by_kind[kind].items()) if v
            },
        }
        for kind in ("pool", "cold")
    } | {"pool_timeline_p50_ms": {name: report.percentile(values, 50) for name, values in phases.items()}}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-pool-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
        procs = []
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            custom = client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            echo = next(
                b
                for b in yaml.safe_load_all((REPO / "examples" / "apps.yaml").read_text())
                if b["metadata"]["name"] == "echo"
            )
            pooled = copy.deepcopy(echo)
            pooled["metadata"]["name"] = "echo-pooled"
            pooled["spec"]["warmPool"] = {"size": POOL_SIZE}
            for body in (echo, pooled):
                custom.create_namespaced_custom_object(*GROUP, NS, "apps", body)
            token = caller_token(api)
            procs.append(
                start(
                    state_dir.kubeconfig,
                    Path(tmp) / "operator.log",
                    "operator",
                    "--namespace",
                    NS,
                    "--metrics-port",
                    str(OP_PORT),
                    "--retention",
                    "0",
                )
            )
            procs.append(
                start(
                    state_dir.kubeconfig,
                    Path(tmp) / "gateway.log",
                    "gateway",
                    "--namespace",
                    NS,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(GW_PORT),
                )
            )
            wait_http(f"http://127.0.0.1:{OP_PORT}/healthz")
            wait_http(f"http://127.0.0.1:{GW_PORT}/readyz")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
                results = loop.run(scenarios(f"http://127.0.0.1:{GW_PORT}", token, api))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=15)
            cluster.down(state_dir)
    pool, cold = results["pool"], results["cold"]
    rows = [
        (
            'pool: session "new" -> first output p50 / p99 ms',
            f"{pool['p50_ms']:.1f} / {pool['p99_ms']:.1f}",
            "p50 <= 30",
        ),
        (
            'cold: session "new" -> first output p50 / p99 ms',
            f"{cold['p50_ms']:.0f} / {cold['p99_ms']:.0f}",
            "no slower than today",
        ),
        ("pool: API writes per claimed Session (max)", f"{pool['writes_per_session_max']:.0f}", "<= 4"),
        ("cold: API writes per Session (max)", f"{cold['writes_per_session_max']:.0f}", ""),
        (
            "pool: claimed / Ready at, after the request (p50 ms)",
            " / ".join(f"{v:.0f}" for v in results["pool_timeline_p50_ms"].values()),
            "",
        ),
        (
            "pool: started from",
            ", ".join(f"{k} {v}" for k, v in sorted(pool["started_from"].items())),
            f"pool {pool['n']}",
        ),
    ]
    report.write("warm_pool", results, rows)


if __name__ == "__main__":
    main()
