"""Gateway: the latency it adds, and session "new" -> first output, on the local cluster.

Echo through the gateway (`POST /v1/run` with a session id, bearer-token auth answered from
its cache) against the same echo workers called straight on their pod IPs, in the same run,
at 1 and 10 concurrent clients (each client on its own session, so the router's cost is
measured, not the worker's queue): p50, p99, calls/s and the ratio, the two paths taking
turns in eight short rounds so that this VM's drifting speed falls on both alike. Then session "new" to
first output, p50 and p99. The load generator shares the 2 cores with everything else, so
run it on a quiet machine: `make bench BENCHES=gateway` (or .venv/bin/python bench/gateway.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report

from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

NS = "bench"
REPO = Path(__file__).parent.parent
GROUP = ("kubesessions.io", "v1alpha1")
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
WARMUP = 0.5
ROUNDS = 8
NEW_SESSIONS = int(os.environ.get("BENCH_NEW_SESSIONS", "20"))
PAYLOAD = {"message": "hello", "n": 42}
GATEWAY_PROCESSES = os.environ.get("BENCH_GATEWAY_PROCESSES", "1")
# BENCH_GATEWAY_PROFILE=1: the gateway runs under cProfile; its top functions by own time go to
# bench-results/gateway.profile.txt (cProfile slows every call: ratios from such a run mislead).
PROFILE = report.RESULTS / "gateway.pstats" if os.environ.get("BENCH_GATEWAY_PROFILE") else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    clients: int, paths: dict[str, Callable[[int], Awaitable[None]]], cpu_pids: dict[str, int] | None = None
) -> dict[str, dict[str, float]]:
    """Each path in turn, in short alternating rounds (so that this VM's drifting speed falls on
    all paths alike): ``clients`` loops, client i calling ``path(i)`` back to back; ms. For a
    path named in ``cpu_pids``, that process's CPU during the path's rounds, per call."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    elapsed = dict.fromkeys(paths, 0.0)
    cpu = dict.fromkeys(paths, 0.0)
    pids = cpu_pids or {}

    async def loop(
        once: Callable[[int], Awaitable[None]], i: int, stop: float, out: list[float] | None
    ) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await once(i)
            if out is not None:
                out.append((time.perf_counter() - started) * 1000)

    for once in paths.values():  # warm-up: connections opened, caches filled
        stop = time.monotonic() + WARMUP
        await asyncio.gather(*(loop(once, i, stop, None) for i in range(clients)))
    for _ in range(ROUNDS):
        for name, once in paths.items():
            began = time.monotonic()
            cpu_began = cpu_seconds(pids[name]) if name in pids else 0.0
            stop = began + SECONDS / ROUNDS
            await asyncio.gather(*(loop(once, i, stop, latencies[name]) for i in range(clients)))
            elapsed[name] += time.monotonic() - began
            if name in pids:
                cpu[name] += cpu_seconds(pids[name]) - cpu_began
    return {
        name: {
            "p50_ms": report.percentile(values, 50),
            "p99_ms": report.percentile(values, 99),
            "calls_per_s": len(values) / elapsed[name],
            "n": len(values),
            "samples_ms": values,  # for the plot, not the JSON
        }
        | ({"cpu_ms_per_call": cpu[name] * 1000 / len(values)} if name in pids else {})
        for name, values in latencies.items()
    }


def start(kubeconfig: Path, log: Path, *args: str, profile: str = "") -> subprocess.Popen[bytes]:
    """`kubesessions ARGS`; with ``profile`` (a path), under cProfile, its stats written there
    when the command returns (the gateway does on SIGTERM)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [str(Path(sys.executable).parent / "kubesessions")]
    if profile:
        command = [
            sys.executable,
            "-c",
            "import cProfile, sys; from kubesessions.cli.entry import main; sys.argv[0] = 'kubesessions'; "
            f"cProfile.run('main()', {profile!r})",
        ]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def write_profile(stats: Path, text: Path) -> None:
    """The profiled gateway's top functions, by own time and by cumulative time."""
    import io
    import pstats

    out = io.StringIO()
    for order in ("tottime", "cumulative"):
        pstats.Stats(str(stats), stream=out).strip_dirs().sort_stats(order).print_stats(35)
    text.write_text(out.getvalue())
    print(f"profile: {text}")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our own http URL
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def caller_token(api: client.ApiClient) -> str:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(NS, {"metadata": {"name": "bench"}})
    rbac.create_namespaced_role(
        NS,
        {
            "metadata": {"name": "bench"},
            "rules": [
                {
                    "apiGroups": ["kubesessions.io"],
                    "resources": ["sessions"],
                    "verbs": ["create", "get", "delete"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        NS,
        {
            "metadata": {"name": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": NS}],
        },
    )
    token: str = core.create_namespaced_service_account_token("bench", NS, {"spec": {}}).status.token
    return token


async def scenarios(gateway: str, token: str, api: client.ApiClient, gateway_pid: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "X-Kubesessions-Namespace": NS}
    # The load generator shares the 2 cores with what it measures: bodies and headers are made
    # once, not per call, the same way for both paths.
    json_headers = {**headers, "Content-Type": "application/json"}
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def new_session() -> str:
            async with http.post(
                f"{gateway}/v1/run",
                headers=headers,
                json={"app": "echo", "input": PAYLOAD, "session": "new", "session_timeout": 3600},
            ) as r:
                body = await r.json()
                assert r.status == 200, body
                return str(body["session_id"])

        sessions = [await new_session() for _ in range(10)]
        run_url = f"{gateway}/v1/run"
        gateway_bodies = [
            json.dumps({"app": "echo", "input": PAYLOAD, "session": sid}).encode() for sid in sessions
        ]
        worker_body = json.dumps({"input": PAYLOAD}).encode()
        workers = []
        for sid in sessions:
            status = custom.get_namespaced_custom_object(*GROUP, NS, "sessions", sid)["status"]
            secret = core.read_namespaced_secret(f"{sid}-token", NS)
            workers.append(
                (
                    f"http://{status['podIP']}:8080/run",
                    {
                        "Authorization": f"Bearer {base64.b64decode(secret.data['token']).decode()}",
                        "Content-Type": "application/json",
                    },
                )
            )

        async def via_gateway(i: int) -> None:
            async with http.post(run_url, headers=json_headers, data=gateway_bodies[i]) as r:
                await r.read()
                assert r.status == 200

        async def direct(i: int) -> None:
            async with http.post(workers[i][0], headers=workers[i][1], data=worker_body) as r:
                await r.read()
                assert r.status == 200

        for clients in (1, 10):
            # CPU per call is the serving process's own: with one gateway process, that one.
            cpu_pids = {"gateway": gateway_pid} if GATEWAY_PROCESSES == "1" else {}
            measured = await measure(clients, {"direct": direct, "gateway": via_gateway}, cpu_pids)
            worker, through = measured["direct"], measured["gateway"]
            results[f"{clients}_clients"] = {
                "direct": worker,
                "gateway": through,
                "added_p50_ms": through["p50_ms"] - worker["p50_ms"],
                "added_p99_ms": through["p99_ms"] - worker["p99_ms"],
                "p50_ratio": through["p50_ms"] / worker["p50_ms"],
                "p99_ratio": through["p99_ms"] / worker["p99_ms"],
            }
        firsts = []
        for _ in range(NEW_SESSIONS):
            started = time.perf_counter()
            sid = await new_session()
            firsts.append((time.perf_counter() - started) * 1000)
            async with http.delete(f"{gateway}/v1/sessions/{sid}", headers=headers) as r:
                assert r.status == 204
        results["new_to_first_output"] = {
            "p50_ms": report.percentile(firsts, 50),
            "p99_ms": report.percentile(firsts, 99),
            "n": len(firsts),
            "samples_ms": firsts,
        }
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-gw-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            custom = client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            import yaml

            for body in yaml.safe_load_all((REPO / "examples" / "apps.yaml").read_text()):
                custom.create_namespaced_custom_object(*GROUP, NS, "apps", body)
            token = caller_token(api)
            op_port, gw_port = 18931, 18932
            procs.append(
                start(
                    state_dir.kubeconfig,
                    Path(tmp) / "operator.log",
                    "operator",
                    "--namespace",
                    NS,
                    "--metrics-port",
                    str(op_port),
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
                    str(gw_port),
                    "--processes",
                    GATEWAY_PROCESSES,
                    profile=str(PROFILE.resolve()) if PROFILE else "",
                )
            )
            wait_http(f"http://127.0.0.1:{op_port}/healthz")
            wait_http(f"http://127.0.0.1:{gw_port}/readyz")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
                results = loop.run(scenarios(f"http://127.0.0.1:{gw_port}", token, api, procs[-1].pid))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=15)
            cluster.down(state_dir)
    if PROFILE and PROFILE.exists():
        write_profile(PROFILE, PROFILE.with_suffix(".profile.txt"))
    rows = []
    for clients, target in (("1", "added p50 <= 1 ms, p99 <= 3 ms"), ("10", "gateway p50 < 1.2 ms")):
        r = results[f"{clients}_clients"]
        rows += [
            (
                f"{clients} client(s): direct p50 / p99 ms",
                f"{r['direct']['p50_ms']:.2f} / {r['direct']['p99_ms']:.2f}",
                "",
            ),
            (
                f"{clients} client(s): gateway p50 / p99 ms",
                f"{r['gateway']['p50_ms']:.2f} / {r['gateway']['p99_ms']:.2f}",
                target,
            ),
            (
                f"{clients} client(s): added p50 / p99 ms",
                f"{r['added_p50_ms']:.2f} / {r['added_p99_ms']:.2f}",
                "",
            ),
            (
                f"{clients} client(s): calls/s direct / gateway",
                f"{r['direct']['calls_per_s']:.0f} / {r['gateway']['calls_per_s']:.0f}",
                "",
            ),
            (f"{clients} client(s): gateway/direct p50", f"{r['p50_ratio']:.2f}x", "<= 1.5x"),
            (f"{clients} client(s): gateway/direct p99", f"{r['p99_ratio']:.2f}x", "<= 1.5x"),
        ]
        if "cpu_ms_per_call" in r["gateway"]:
            rows.append(
                (
                    f"{clients} client(s): gateway CPU ms per call",
                    f"{r['gateway']['cpu_ms_per_call']:.3f}",
                    "<= 0.20 ms" if clients == "10" else "",
                )
            )
    new = results["new_to_first_output"]
    rows.append(
        (
            'session "new" -> first output p50 / p99 ms',
            f"{new['p50_ms']:.0f} / {new['p99_ms']:.0f}",
            "process node",
        )
    )
    results["gateway_processes"] = int(GATEWAY_PROCESSES)
    samples = {
        f"{path}, {clients} client(s)": results[f"{clients}_clients"][path].pop("samples_ms")
        for clients in (1, 10)
        for path in ("direct", "gateway")
    }
    samples['session "new" -> first output'] = results["new_to_first_output"].pop("samples_ms")
    report.write("gateway", results, rows, samples=samples)


if __name__ == "__main__":
    main()
