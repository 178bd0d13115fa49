"""Warm pool: session "new" -> first output through the gateway, from a ready pool worker vs a
cold start, side by side in one run on the process node, and the API writes of each.

Two Apps of the echo example: `echo-pooled` (warmPool.size 2) and `echo` (no pool). Sessions
take turns, one of each, BENCH_POOL_SESSIONS (50) of each: p50/p99 of `POST /v1/run` with
`session: "new"` until its reply. Before each, the previous session is gone (the operator runs
with --retention 0, so its last write is the Session's deletion) and the pool is full, so every
pooled session finds a ready worker and the API-write count of each session (the operator's
/metrics around it, less the pool's upkeep writes: the replacement worker, the App's status) is
its own. The writes to Ready are counted on 10 more sessions of each kind started with
`POST /v1/sessions` (no call: the operator's record of a first call's activity, which races the
call, stays out); those to the first output are reported by kind too.
`make bench BENCHES=warm_pool` (or .venv/bin/python bench/warm_pool.py).
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

from kubesessions.api.names import JSON

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
WRITE_SAMPLES = 10  # sessions of each kind started without a call, to count the writes to Ready
POOL_SIZE = 2
PAYLOAD = {"message": "hello"}
LOGS = report.RESULTS / "warm_pool"


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


def writes(port: int) -> Counter[str]:
    """The operator's API writes so far by verb and resource, less those of the pools' upkeep
    (the replacement worker, the App's status): what the Sessions cost."""
    return Counter(
        {
            labels: metric_total(port, f"kubesessions_operator_api_writes_total{labels}")
            - metric_total(port, f"kubesessions_pool_upkeep_writes_total{labels}")
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


async def scenarios(gateway: str, token: str, api: client.ApiClient, op_port: int) -> dict[str, Any]:
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

    async def one(
        http: aiohttp.ClientSession, kind: str, call: bool
    ) -> tuple[float, Counter[str], JSON, float]:
        """A new session with the pool full: ms until the reply, the writes made meanwhile, its
        status, and the wall-clock time of the request. ``call``: `POST /v1/run` (until the
        first output); else `POST /v1/sessions` (until Ready, no call: so no activity record of
        a first call among the writes)."""
        await until(pool_full, "the warm pool to be full")
        app = "echo-pooled" if kind == "pool" else "echo"
        path, body = (
            ("/v1/run", {"app": app, "input": PAYLOAD, "session": "new"})
            if call
            else ("/v1/sessions", {"app": app})
        )
        before = await asyncio.to_thread(writes, op_port)
        began, wall = time.perf_counter(), time.time()
        async with http.post(f"{gateway}{path}", headers=headers, json=body) as r:
            reply = await r.json()
            assert r.status in (200, 201), reply
        elapsed = (time.perf_counter() - began) * 1000
        spent = await asyncio.to_thread(writes, op_port) - before
        sid = str(reply.get("session_id") or reply.get("id"))
        status = (await asyncio.to_thread(custom.get_namespaced_custom_object, *GROUP, NS, "sessions", sid))[
            "status"
        ]
        async with http.delete(f"{gateway}/v1/sessions/{sid}", headers=headers) as r:
            assert r.status == 204
        await until(lambda: gone(sid), f"session {sid} to be deleted")
        return elapsed, spent, status, wall

    latency: dict[str, list[float]] = {"pool": [], "cold": []}
    to_output: dict[str, Counter[str]] = {"pool": Counter(), "cold": Counter()}
    to_ready: dict[str, list[Counter[str]]] = {"pool": [], "cold": []}
    # When the claim and the Ready status came (status.claimedAt, readyAt), from the request.
    phases: dict[str, list[float]] = {"claimed_ms": [], "ready_ms": []}
    started_from: dict[str, list[str]] = {"pool": [], "cold": []}
    async with aiohttp.ClientSession() as http:
        for i in range(SESSIONS * 2):
            kind = "pool" if i % 2 == 0 else "cold"
            elapsed, spent, status, wall = await one(http, kind, call=True)
            latency[kind].append(elapsed)
            to_output[kind] += spent
            started_from[kind].append(status.get("startedFrom", "?"))
            if kind == "pool":
                for name, field in (("claimed_ms", "claimedAt"), ("ready_ms", "readyAt")):
                    phases[name].append((instant(status[field]) - wall) * 1000)
            if i < 2 * WRITE_SAMPLES:
                to_ready[kind].append((await one(http, kind, call=False))[1])
    return {
        kind: {
            "p50_ms": report.percentile(latency[kind], 50),
            "p99_ms": report.percentile(latency[kind], 99),
            "n": len(latency[kind]),
            "started_from": {k: started_from[kind].count(k) for k in set(started_from[kind])},
            "writes_to_ready_max": max(sum(c.values()) for c in to_ready[kind]),
            "writes_to_ready_by_kind": _per_session(sum(to_ready[kind], Counter()), len(to_ready[kind])),
            "writes_to_first_output_by_kind": _per_session(to_output[kind], len(latency[kind])),
        }
        for kind in ("pool", "cold")
    } | {"pool_timeline_p50_ms": {name: report.percentile(values, 50) for name, values in phases.items()}}


def _per_session(total: Counter[str], n: int) -> dict[str, float]:
    return {k.strip("{}"): v / n for k, v in sorted(total.items()) if v}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-pool-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
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
            kubeconfig = state_dir.kubeconfig
            LOGS.mkdir(parents=True, exist_ok=True)  # the logs are kept, next to the results
            op_port, gw_port = cluster.free_port(), cluster.free_port()  # other benches may run too
            with benchcluster.operator(kubeconfig, NS, op_port, LOGS / "operator.log", "--retention", "0"):
                args = ("gateway", "--namespace", NS, "--host", "127.0.0.1", "--port", str(gw_port))
                gateway = start(kubeconfig, LOGS / "gateway.log", *args)
                try:
                    wait_http(f"http://127.0.0.1:{gw_port}/readyz")
                    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
                        results = loop.run(scenarios(f"http://127.0.0.1:{gw_port}", token, api, op_port))
                finally:
                    gateway.terminate()
                    gateway.wait(timeout=15)
        finally:
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
        ("pool: API writes per claimed Session to Ready (max)", f"{pool['writes_to_ready_max']:.0f}", "<= 4"),
        ("cold: API writes per Session to Ready (max)", f"{cold['writes_to_ready_max']:.0f}", ""),
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
