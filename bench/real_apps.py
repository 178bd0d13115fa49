"""Real apps: the four examples/ apps (data, model, chat, browser) side by side, on the kubelet
node where root (each app in its own image, built by `make images`), else on the process node
(BENCH_REAL_NODE=process|kubelet chooses; one kubelet node fits a machine: its bridge is fixed).

Per app, through the gateway (`POST /v1/run`): cold `session: "new"` -> first output (pod start +
setup + the call; BENCH_REAL_NEW (3) sessions, the median), pooled `"new"` -> first output (an
App of the same folder with warmPool.size 1, the pool full before each), warm calls on one session
(BENCH_REAL_CALLS (100) after 10 of warm-up: p50/p99), the worker's RSS (summed over its process
tree: the browser's Chromium processes count) at rest (after the first call), after 10 calls and
after all of them, and the same call in this process with no session at all (the floor: the app
class set up here, the call timed around the method). The data app runs its default 3 M rows.
On the process node its Parquet file and the model's weights are made once into shared paths
(DATA_DIR, MODEL_PATH, as volumes would give them), so a cold start loads them rather than making
them; on the kubelet node the weights are the image's and each pod generates the dataset in its
own /tmp (part of its cold start), and each worker has the CPU limit of KUBELET_CPU (the node has
the machine's cores, and an app's pool worker and its cold session run side by side). The
browser needs Debian's chromium here for the floor (else it is left out, said in the table). `make bench BENCHES=real_apps` (or .venv/bin/python bench/real_apps.py);
a PNG per app, bench-results/real_apps-<app>.png.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report
from gateway import NS, caller_token, start, wait_http

from kubesessions.localcluster import cluster, containerd, images, kubeletnode
from kubesessions.localcluster.nodeconfig import NodeConfig

REPO = Path(__file__).parent.parent
sys.path.insert(0, str(REPO / "examples"))
from localapps import EXAMPLES, example_app, local_app  # noqa: E402 (the examples folder is no package)

GROUP = ("kubesessions.io", "v1alpha1")
NEW = int(os.environ.get("BENCH_REAL_NEW", "3"))
CALLS = int(os.environ.get("BENCH_REAL_CALLS", "100"))
WARMUP = 10
LOGS = report.RESULTS / "real_apps"
# The request is also the limit: two workers of an app (its pool's and a cold session's) fit
# the machine's two cores.
KUBELET_CPU = {"data": "900m", "model": "900m", "chat": "500m", "browser": "900m"}


def node_kind() -> str:
    """BENCH_REAL_NODE, else the kubelet node where it can run (root, its packages)."""
    chosen = os.environ.get("BENCH_REAL_NODE")
    if chosen:
        return chosen
    try:
        kubeletnode.preflight()
    except kubeletnode.NodeError:
        return "process"
    return "kubelet"


def digits() -> list[list[float]]:
    from sklearn.datasets import load_digits

    return [load_digits().data[0].tolist()]


# app -> (module, class, the measured call's function and input, a first call that readies state)
APPS: dict[str, tuple[str, str, str, Callable[[], dict[str, Any]], tuple[str, dict[str, Any]] | None]] = {
    "data": ("data_app", "DataApp", "summary", dict, None),
    "model": ("model_app", "ModelApp", "predict", lambda: {"images": digits()}, None),
    "chat": (
        "chat_app",
        "ChatApp",
        "message",
        lambda: {"text": "What is my name?"},
        ("message", {"text": "My name is Ada."}),
    ),
    "browser": ("browser_app", "BrowserApp", "screenshot", dict, ("start", {})),
}


def floor(app: str, env: dict[str, str]) -> list[float]:
    """The call in this process, no session: ms per call, after the same warm-up."""
    module_name, class_name, function, payload, first = APPS[app]
    sys.path.insert(0, str(EXAMPLES / app))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        instance = getattr(__import__(module_name), class_name)()
        instance.setup({})
        if first:
            getattr(instance, first[0])(first[1])
        method, input = getattr(instance, function), payload()
        times = []
        for i in range(WARMUP + CALLS):
            began = time.perf_counter()
            method(input)
            if i >= WARMUP:
                times.append((time.perf_counter() - began) * 1000)
        getattr(instance, "close", lambda: None)()
        return times
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_rss_mib(pod: str) -> float:
    """RSS of the pod's worker process and its descendants, read in this machine's /proc: the
    worker is the process whose environment says HOSTNAME=<pod> (the process node sets it; in a
    container, the runtime does)."""
    marker = f"HOSTNAME={pod}".encode()
    children: dict[int, list[int]] = {}
    root = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            environ = (entry / "environ").read_bytes().split(b"\0")
            if (
                root is None
                and marker in environ
                and b"kubesessions-worker" in (entry / "cmdline").read_bytes()
            ):
                root = int(entry.name)
        except OSError:
            continue
    if root is None:
        raise RuntimeError(f"no worker process for pod {pod}")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


async def measure(gateway: str, token: str, api: client.ApiClient, app: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    headers = {"Authorization": f"Bearer {token}", "X-Kubesessions-Namespace": NS}
    _, _, function, payload, first = APPS[app]
    input = payload()

    claims = 0

    def pool_ready() -> bool:
        """A ready worker, and not the one just claimed: the status has counted every claim so
        far (right after a claim it may still say ready 1 for the worker that went)."""
        body = custom.get_namespaced_custom_object(*GROUP, NS, "apps", f"{app}-pool")
        pool = (body.get("status") or {}).get("warmPool") or {}
        return bool(pool.get("ready") == 1 and pool.get("claimed", 0) >= claims)

    async def run(http: aiohttp.ClientSession, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return await benchcluster.gateway_run(http, gateway, headers, body)

    async def end(http: aiohttp.ClientSession, sid: str) -> None:
        async with http.delete(f"{gateway}/v1/sessions/{sid}", headers=headers) as r:
            assert r.status == 204

    async def new(http: aiohttp.ClientSession, name: str) -> tuple[float, str]:
        # The first output of the measured kind: a session's first call is the app's own first
        # step (start for the browser), then the measured call.
        step, step_input = first or (function, input)
        ms, reply = await run(http, {"app": name, "function": step, "input": step_input, "session": "new"})
        return ms, str(reply["session_id"])

    result: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        for kind in ("cold", "pool"):
            times = []
            for _ in range(NEW):
                if kind == "pool":
                    deadline = time.monotonic() + 300
                    while not await asyncio.to_thread(pool_ready):
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the {app} pool did not fill")
                        await asyncio.sleep(0.1)
                ms, sid = await new(http, f"{app}-{kind}")
                claims += kind == "pool"
                times.append(ms)
                await end(http, sid)
            result[f"{kind}_new_ms"] = statistics.median(times)
            result[f"{kind}_new_samples_ms"] = times
        _, sid = await new(http, f"{app}-cold")
        status = (await asyncio.to_thread(custom.get_namespaced_custom_object, *GROUP, NS, "sessions", sid))[
            "status"
        ]
        pod = status["podName"]
        result["rss_rest_mib"] = worker_rss_mib(pod)
        warm = []
        for i in range(WARMUP + CALLS):
            ms, _ = await run(
                http, {"app": f"{app}-cold", "function": function, "input": input, "session": sid}
            )
            if i == WARMUP - 1:
                result["rss_10_mib"] = worker_rss_mib(pod)
            if i >= WARMUP:
                warm.append(ms)
        result["rss_after_mib"] = worker_rss_mib(pod)
        await end(http, sid)
    result["warm_ms"] = warm
    result["warm_p50_ms"] = report.percentile(warm, 50)
    result["warm_p99_ms"] = report.percentile(warm, 99)
    return result


def main() -> None:
    apps = [a for a in APPS if a != "browser" or shutil.which("chromium")]
    node = node_kind()
    with tempfile.TemporaryDirectory(prefix="ks-bench-real-") as tmp:
        # Shared files, as a volume would give them: the dataset and the weights are made once
        # (by the floor's setup), so a cold start loads them rather than making them.
        envs = {
            "data": {"DATA_DIR": str(Path(tmp) / "data")},
            "model": {"MODEL_PATH": str(Path(tmp) / "model" / "digits-forest.joblib")},
        }
        floors = {app: floor(app, envs.get(app, {})) for app in apps}
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(kind=node), log=lambda _: None)
        try:
            if node == "kubelet":
                for archive in images.build_examples(REPO, apps).values():
                    containerd.import_archive(kubeletnode.paths(state_dir.root), archive)
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            custom = client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)

            def measured(app: str, gateway: str) -> dict[str, Any]:
                """One app's two Apps (cold, pooled) exist only while it is measured: on the
                kubelet node the pools of all four would not fit the cores beside a cold worker."""
                made = []
                for kind, spec in (("cold", {}), ("pool", {"warmPool": {"size": 1}})):
                    if node == "kubelet":
                        resources = {**example_app(app)["spec"]["resources"], "cpu": KUBELET_CPU[app]}
                        body = example_app(app, name=f"{app}-{kind}", resources=resources, **spec)
                    else:
                        body = local_app(app, name=f"{app}-{kind}", env=envs.get(app, {}), **spec)
                    made.append(custom.create_namespaced_custom_object(*GROUP, NS, "apps", body))
                result = asyncio.run(measure(gateway, token, api, app))
                for body in made:
                    custom.delete_namespaced_custom_object(*GROUP, NS, "apps", body["metadata"]["name"])
                deadline = time.monotonic() + 120
                while client.CoreV1Api(api).list_namespaced_pod(NS).items:  # their CPU back
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {app} workers did not go within 120 s")
                    time.sleep(0.2)
                return result

            token = caller_token(api)
            LOGS.mkdir(parents=True, exist_ok=True)
            op_port, gw_port = cluster.free_port(), cluster.free_port()
            with benchcluster.operator(state_dir.kubeconfig, NS, op_port, LOGS / "operator.log"):
                args = ("gateway", "--namespace", NS, "--host", "127.0.0.1", "--port", str(gw_port))
                gateway = start(state_dir.kubeconfig, LOGS / "gateway.log", *args)
                try:
                    wait_http(f"http://127.0.0.1:{gw_port}/readyz")
                    results = {app: measured(app, f"http://127.0.0.1:{gw_port}") for app in apps}
                finally:
                    gateway.terminate()
                    gateway.wait(timeout=15)
        finally:
            cluster.down(state_dir)
    rows: list[tuple[str, str, str]] = []
    for app in apps:
        r, base = results[app], floors[app]
        r["floor_p50_ms"], r["floor_p99_ms"] = report.percentile(base, 50), report.percentile(base, 99)
        r["floor_ms"] = base
        warm = r["warm_p50_ms"]
        rows += [
            (
                f'{app}: cold / pooled "new" -> first output ms',
                f"{r['cold_new_ms']:.0f} / {r['pool_new_ms']:.0f}",
                f"pooled <= {2 * warm + 50:.0f} (2x warm + 50)",
            ),
            (
                f"{app}: warm call p50 / p99 ms",
                f"{warm:.1f} / {r['warm_p99_ms']:.1f}",
                f"p50 <= {1.2 * r['floor_p50_ms'] + 2:.1f} (1.2x floor + 2)",
            ),
            (
                f"{app}: plain process p50 / p99 ms",
                f"{r['floor_p50_ms']:.1f} / {r['floor_p99_ms']:.1f}",
                "the floor",
            ),
            (
                f"{app}: worker RSS rest / 10 / {CALLS + WARMUP} calls MiB",
                f"{r['rss_rest_mib']:.0f} / {r['rss_10_mib']:.0f} / {r['rss_after_mib']:.0f}",
                f"after <= {1.1 * r['rss_10_mib']:.0f} (+10 %)",
            ),
        ]
    if "browser" not in apps:
        rows.append(("browser", "left out", "no chromium here (make chromium-deps)"))
    rows.insert(0, ("node", node, "kubelet where root, else process (BENCH_REAL_NODE)"))
    report.write("real_apps", {"node": node, **results}, rows)
    import plots  # matplotlib only when there is something to draw

    for app in apps:  # one PNG per app: its calls and first outputs differ by orders of magnitude
        r = results[app]
        samples = {
            "warm call": r["warm_ms"],
            "plain process (floor)": r["floor_ms"],
            'cold "new" -> first output': r["cold_new_samples_ms"],
            'pooled "new" -> first output': r["pool_new_samples_ms"],
        }
        title = f"real_apps: {app} ({node} node)"
        print(f"plot: {plots.figure(report.RESULTS / f'real_apps-{app}.png', title, samples)}")


if __name__ == "__main__":
    main()
