"""Suspend and resume, the whole path: operator, gateway and the local cluster's SeaweedFS, on
the process node, in one run.

For states of 1 MB, 100 MB and 1 GB (``SUSPEND_SIZES_MB`` overrides), for a session of an App
with a warm pool and one without: a session is made to hold the state (``fill``), suspended by
hand (the ``suspend-requested`` annotation; time to status Suspended, and the worker's own
suspend seconds from ``status.suspension``), then called through the gateway (``POST /v1/run``
on the suspended id: wake, resume on a pool worker or a cold pod, the call) until its reply:
resume -> first output. Beside them, a fresh cold session's first output (``session: "new"``).
From the measured figures: the GPU-seconds one GPU session called once an hour for a day holds,
without suspend (it keeps its worker all day) and with it (each hour: resume, the call, the idle
timeout, the suspend). `make bench BENCHES=suspend` (or .venv/bin/python bench/suspend.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report
from gateway import NS, caller_token, start, wait_http

from kubesessions.api.names import POOL_LABEL, SUSPEND_REQUESTED
from kubesessions.common.timefmt import rfc3339
from kubesessions.localcluster import cluster, objectstore
from kubesessions.localcluster.nodeconfig import NodeConfig

HERE = Path(__file__).parent
GROUP = ("kubesessions.io", "v1alpha1")
SIZES_MB = [int(s) for s in os.environ.get("SUSPEND_SIZES_MB", "1,100,1024").split(",")]
ROUNDS = {1: 10, 100: 5}  # larger states: 3 rounds
IDLE_TIMEOUT = 60  # the idle timeout of the once-an-hour session (the App default)
LOGS = report.RESULTS / "suspend"


def app(name: str, pool: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
        "entrypoint": "suspendapp:SizedBlob",
        "env": [{"name": "PYTHONPATH", "value": str(HERE)}],
        "resources": {"memory": "4Gi", "ephemeralStorage": "4Gi"},
        "scratchSize": "3Gi",
        "suspend": {"enabled": True, "keepSeconds": 3600, "maxStateBytes": 2 * 1024**3},
    }
    if pool:
        spec["warmPool"] = {"size": pool}
    return {"apiVersion": "kubesessions.io/v1alpha1", "kind": "App", "metadata": {"name": name}, "spec": spec}


async def until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await asyncio.to_thread(check)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)
    return found


async def scenarios(gateway: str, token: str, api: client.ApiClient) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    headers = {"Authorization": f"Bearer {token}", "X-Kubesessions-Namespace": NS}

    def session(sid: str) -> dict[str, Any]:
        body: dict[str, Any] = custom.get_namespaced_custom_object(*GROUP, NS, "sessions", sid)
        return body

    def pool_ready() -> bool:
        """A ready unclaimed pool worker, as its pod says (the App's status counts lag a claim)."""
        pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=f"{POOL_LABEL}=blob-pool").items
        return any(
            c.type == "Ready" and c.status == "True"
            for p in pods
            if not p.metadata.deletion_timestamp
            for c in p.status.conditions or []
        )

    async def run(http: aiohttp.ClientSession, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return await benchcluster.gateway_run(http, gateway, headers, body)

    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
        cold_new = [
            (await run(http, {"app": "blob-cold", "input": {}, "session": "new", "session_timeout": 3600}))[0]
            for _ in range(5)
        ]
        results["fresh_cold_first_output_ms"] = report.summary(cold_new)
        samples["fresh cold session"] = cold_new
        for size in SIZES_MB:
            for kind in ("pool", "cold"):
                suspend_ms, worker_suspend_ms = [], []
                resume_ms: dict[str, list[float]] = {"pool": [], "cold": []}  # by where it resumed
                for _ in range(ROUNDS.get(size, 3)):
                    appname = f"blob-{kind}"
                    _, reply = await run(
                        http,
                        {
                            "app": appname,
                            "function": "fill",
                            "input": {"bytes": size * 1024**2},
                            "session": "new",
                            "session_timeout": 3600,
                        },
                    )
                    sid = reply["session_id"]
                    began = time.perf_counter()
                    patch = {"metadata": {"annotations": {SUSPEND_REQUESTED: rfc3339()}}}
                    await asyncio.to_thread(
                        custom.patch_namespaced_custom_object, *GROUP, NS, "sessions", sid, patch
                    )
                    suspended = await until(
                        lambda sid=sid: (
                            (s := session(sid)).get("status", {}).get("phase") == "Suspended" and s
                        ),
                        f"session {sid} to suspend",
                    )
                    suspend_ms.append((time.perf_counter() - began) * 1000)
                    worker_suspend_ms.append(suspended["status"]["suspension"]["seconds"] * 1000)
                    if kind == "pool":
                        await until(pool_ready, "a ready pool worker")
                    elapsed, answer = await run(http, {"app": appname, "input": {}, "session": sid})
                    assert answer["output"] == size * 1024**2, answer
                    resume_ms[session(sid)["status"].get("startedFrom", "cold")].append(elapsed)
                    async with http.delete(f"{gateway}/v1/sessions/{sid}", headers=headers) as r:
                        assert r.status == 204
                results[f"{size}MB_{kind}"] = {
                    "suspend_to_suspended_ms": report.summary(suspend_ms),
                    "worker_suspend_ms": report.summary(worker_suspend_ms),
                    "resume_first_output_ms": {k: report.summary(v) for k, v in resume_ms.items() if v},
                }
                for where, values in resume_ms.items():
                    if values:
                        samples[f"{size} MB, App {kind}: resumed {where}"] = values
    return {"results": results, "samples": samples}


def gpu_day(resume_s: float, suspend_s: float) -> dict[str, float]:
    """GPU-seconds of a 1-GPU session called once an hour for a day (calls take ~no time)."""
    return {
        "without_suspend": 24 * 3600.0,
        "with_suspend": round(24 * (resume_s + IDLE_TIMEOUT + suspend_s), 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-suspend-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
        try:
            os.environ.update(objectstore.operator_env(state_dir.root))  # the operator's store
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            benchcluster.prepare(api, NS)
            for body in (app("blob-pool", 1), app("blob-cold", 0)):
                client.CustomObjectsApi(api).create_namespaced_custom_object(*GROUP, NS, "apps", body)
            token = caller_token(api)
            LOGS.mkdir(parents=True, exist_ok=True)
            op_port, gw_port = cluster.free_port(), cluster.free_port()
            kubeconfig = state_dir.kubeconfig
            with benchcluster.operator(kubeconfig, NS, op_port, LOGS / "operator.log", "--retention", "0"):
                args = ("gateway", "--namespace", NS, "--host", "127.0.0.1", "--port", str(gw_port))
                gateway = start(kubeconfig, LOGS / "gateway.log", *args)
                try:
                    wait_http(f"http://127.0.0.1:{gw_port}/readyz")
                    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
                        measured = loop.run(scenarios(f"http://127.0.0.1:{gw_port}", token, api))
                finally:
                    gateway.terminate()
                    gateway.wait(timeout=15)
        finally:
            cluster.down(state_dir)
    results = measured["results"]
    rows = [
        (
            'fresh cold session: "new" -> first output p50 / p99 ms',
            "{median:.0f} / {p99:.0f}".format(**results["fresh_cold_first_output_ms"]),
            "",
        )
    ]
    targets = {
        ("pool", 1, "resume"): "<= 150 p50",
        ("pool", 1024, "suspend"): "<= 4000",
        ("pool", 1024, "resume"): "<= 2000",
    }
    for size in SIZES_MB:
        for kind in ("pool", "cold"):
            r = results[f"{size}MB_{kind}"]
            rows += [
                (
                    f"{size} MB {kind}: suspend asked -> Suspended p50 / p99 ms (worker's own p50)",
                    "{median:.0f} / {p99:.0f}".format(**r["suspend_to_suspended_ms"])
                    + f" ({r['worker_suspend_ms']['median']:.0f})",
                    targets.get((kind, size, "suspend"), ""),
                ),
            ]
            rows += [
                (
                    f"{size} MB {kind}: call on the suspended id -> first output, resumed {where}: p50 / p99 ms (n)",
                    "{median:.0f} / {p99:.0f} ({n})".format(**stats),
                    targets.get((where, size, "resume"), ""),
                )
                for where, stats in r["resume_first_output_ms"].items()
            ]
    smallest = results[f"{SIZES_MB[0]}MB_pool"]
    resumed = smallest["resume_first_output_ms"].get("pool") or smallest["resume_first_output_ms"]["cold"]
    day = gpu_day(resumed["median"] / 1000, smallest["suspend_to_suspended_ms"]["median"] / 1000)
    results["gpu_seconds_called_hourly_for_a_day"] = day
    rows.append(
        (
            f"GPU-s of a session called hourly for a day ({SIZES_MB[0]} MB, pool): without / with suspend",
            f"{day['without_suspend']:.0f} / {day['with_suspend']:.0f}",
            "",
        )
    )
    report.write("suspend", results, rows, samples=measured["samples"])


if __name__ == "__main__":
    main()
