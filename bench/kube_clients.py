"""Kubernetes clients side by side: import time, memory and GETs per second on a real API server.

Three client families used in this repository, in one run against the same cluster:

- ``kubernetes``: the official sync client (urllib3; threads for concurrency);
- ``kubernetes_asyncio``: what the operator and gateway use, imported plainly
  (``from kubernetes_asyncio import client, config``: every generated module) and the way the
  operator and gateway do it (``kubesessions.kube.slimimports.install()`` first: lazy packages);
- ``raw aiohttp``: ``bench/rawkube.py``, a bare REST client (aiohttp + json + yaml, certificate
  auth from the kubeconfig): the floor any client on aiohttp could reach.

Per client, in fresh ``python -c`` processes (REPEATS of them, variants alternating, one
discarded warm-up each so compiled bytecode exists): the time of the import statements alone
(time.perf_counter inside the process, not interpreter start), the modules they load, and
VmRSS before the import, after it, and after creating the client and one GET. Medians.

Then in this process (uvloop when installed, as the operator runs): GET of one ConfigMap in
``default`` (created first, deleted at the end), REQUESTS times back to back, then REQUESTS
times from CONCURRENCY threads (sync) or tasks (async) sharing one client; median latency and
requests per second. The slim import only changes what is imported, not the client, so it is
not timed again. The cluster: ``--kubeconfig`` (default $KUBECONFIG), else a local cluster of
its own. Run with ``make bench BENCHES=kube_clients`` or ``.venv/bin/python bench/kube_clients.py``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_asyncio

sys.path.insert(0, str(Path(__file__).parent))
import report
from rawkube import ApiClient, ApiError, connection_from_kubeconfig

from kubesessions.common import eventloop
from kubesessions.localcluster import cluster
from kubesessions.localcluster.nodeconfig import NodeConfig

NAME = "bench-kube-clients"
NAMESPACE = "default"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
DATA = {f"key-{i}": "x" * 64 for i in range(10)}
WARMUP = 20  # requests before each timed run

# What each client family runs in a fresh process: the import statements (timed), then
# creating a client and one GET of the ConfigMap. {kubeconfig}, {name}, {namespace}, {path}
# are filled in; nothing else is imported before the timed statements but sys and time.
VARIANTS: dict[str, tuple[str, str]] = {
    "kubernetes": (
        "from kubernetes import client, config",
        "api = config.new_client_from_config(config_file={kubeconfig!r})\n"
        "cm = client.CoreV1Api(api).read_namespaced_config_map({name!r}, {namespace!r})\n"
        "assert cm.metadata.name == {name!r}\n"
        "api.close()",
    ),
    "kubernetes_asyncio": (
        "from kubernetes_asyncio import client, config",
        "import asyncio\n"
        "async def main():\n"
        "    api = await config.new_client_from_config(config_file={kubeconfig!r})\n"
        "    try:\n"
        "        cm = await client.CoreV1Api(api).read_namespaced_config_map({name!r}, {namespace!r})\n"
        "        assert cm.metadata.name == {name!r}\n"
        "    finally:\n"
        "        await api.close()\n"
        "asyncio.run(main())",
    ),
    "kubernetes_asyncio slim": (
        "from kubesessions.kube import slimimports\n"
        "slimimports.install()\n"
        "from kubernetes_asyncio import client, config",
        "import asyncio\n"
        "async def main():\n"
        "    api = await config.new_client_from_config(config_file={kubeconfig!r})\n"
        "    try:\n"
        "        cm = await client.CoreV1Api(api).read_namespaced_config_map({name!r}, {namespace!r})\n"
        "        assert cm.metadata.name == {name!r}\n"
        "    finally:\n"
        "        await api.close()\n"
        "asyncio.run(main())",
    ),
    "raw aiohttp": (
        "from rawkube import ApiClient, connection_from_kubeconfig",
        "import asyncio\n"
        "from pathlib import Path\n"
        "async def main():\n"
        "    api = ApiClient(connection_from_kubeconfig(Path({kubeconfig!r})))\n"
        "    try:\n"
        "        cm = await api.get({path!r})\n"
        "        assert cm['metadata']['name'] == {name!r}\n"
        "    finally:\n"
        "        await api.close()\n"
        "asyncio.run(main())",
    ),
}

CHILD = """\
import sys, time
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
rss_start, modules_start = rss(), len(sys.modules)
started = time.perf_counter()
{imports}
import_ms = (time.perf_counter() - started) * 1000
rss_import, modules_import = rss(), len(sys.modules)
started = time.perf_counter()
{request}
first_request_ms = (time.perf_counter() - started) * 1000
print(repr(dict(import_ms=import_ms, modules=modules_import - modules_start,
    rss_start_mb=rss_start, rss_import_mb=rss_import, rss_request_mb=rss(),
    first_request_ms=first_request_ms)))
"""


def child(variant: str, kubeconfig: Path) -> dict[str, float]:
    imports, request = VARIANTS[variant]
    fill = {"kubeconfig": str(kubeconfig), "name": NAME, "namespace": NAMESPACE, "path": PATH}
    code = CHILD.format(imports=imports, request=request.format(**fill))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},  # rawkube
    )
    if out.returncode != 0:
        raise RuntimeError(f"{variant}: child failed:\n{out.stderr}")
    result: dict[str, float] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return result


def startup(kubeconfig: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Per variant, the median of each figure over ``repeats`` fresh processes."""
    for variant in VARIANTS:  # warm-up: bytecode compiled, files in the page cache
        child(variant, kubeconfig)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            runs[variant].append(child(variant, kubeconfig))
    return {
        variant: {field: statistics.median(r[field] for r in rs) for field in rs[0]}
        | {"import_ms_all": [r["import_ms"] for r in rs]}
        for variant, rs in runs.items()
    }


def figures(latencies: list[float], elapsed: float, concurrency: int) -> dict[str, Any]:
    stats = report.summary(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": stats["median"],
        "p90_ms": stats["p90"],
        "p99_ms": stats["p99"],
        "max_ms": stats["max"],
    }


def sync_throughput(kubeconfig: Path, requests: int, concurrency: int) -> dict[str, Any]:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    core = kubernetes.client.CoreV1Api(api)

    def once() -> float:
        started = time.perf_counter()
        cm = core.read_namespaced_config_map(NAME, NAMESPACE)
        assert cm.metadata is not None and cm.metadata.name == NAME
        return (time.perf_counter() - started) * 1000

    def loop(n: int) -> list[float]:
        return [once() for _ in range(n)]

    try:
        loop(WARMUP)
        started = time.perf_counter()
        sequential = figures(loop(requests), time.perf_counter() - started, 1)
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(loop, [WARMUP // concurrency + 1] * concurrency))
            started = time.perf_counter()
            shares = list(pool.map(loop, [requests // concurrency] * concurrency))
            elapsed = time.perf_counter() - started
        concurrent = figures([x for s in shares for x in s], elapsed, concurrency)
        pool_size = api.configuration.connection_pool_maxsize
    finally:
        api.close()
    return {"sequential": sequential, "concurrent": concurrent, "connection_pool_maxsize": pool_size}


async def async_throughput(
    once: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> dict[str, Any]:
    async def loop(n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            await once()
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    await loop(WARMUP)
    started = time.perf_counter()
    sequential = figures(await loop(requests), time.perf_counter() - started, 1)
    await asyncio.gather(*(loop(WARMUP // concurrency + 1) for _ in range(concurrency)))
    started = time.perf_counter()
    shares = await asyncio.gather(*(loop(requests // concurrency) for _ in range(concurrency)))
    concurrent = figures([x for s in shares for x in s], time.perf_counter() - started, concurrency)
    return {"sequential": sequential, "concurrent": concurrent}


async def kubernetes_asyncio_throughput(
    kubeconfig: Path, requests: int, concurrency: int, *, models: bool = True
) -> dict[str, Any]:
    """``models``: replies as model objects (the default); else raw JSON (``_preload_content=False``,
    as the operator's hot paths and the informer read them)."""
    api = await kubernetes_asyncio.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes_asyncio.client.CoreV1Api(api)

    async def once() -> None:
        if models:
            cm = await core.read_namespaced_config_map(NAME, NAMESPACE)
            assert cm.metadata is not None and cm.metadata.name == NAME
            return
        reply = await core.read_namespaced_config_map(NAME, NAMESPACE, _preload_content=False)
        try:
            assert json.loads(await reply.read())["metadata"]["name"] == NAME
        finally:
            reply.release()

    try:
        result = await async_throughput(once, requests, concurrency)
        result["connection_pool_maxsize"] = api.configuration.connection_pool_maxsize
        result["loop"] = type(asyncio.get_running_loop()).__module__
        return result
    finally:
        await api.close()


async def write_latency(kubeconfig: Path, requests: int) -> dict[str, Any]:
    """One API write, as the operator makes them (kubernetes_asyncio, a merge patch, raw JSON
    reply): ``requests`` merge patches of the ConfigMap, one after another. A warm pool claim
    waits on three in a row (the Session's create, the claim, the status)."""
    api = await kubernetes_asyncio.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes_asyncio.client.CoreV1Api(api)
    latencies = []
    try:
        for n in range(WARMUP + requests):
            started = time.perf_counter()
            body = {"data": {"written": str(n)}}
            reply = await core.patch_namespaced_config_map(
                NAME,
                NAMESPACE,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
            try:
                assert reply.status == 200, await reply.text()
                await reply.read()
            finally:
                reply.release()
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await api.close()
    return figures(latencies[WARMUP:], sum(latencies[WARMUP:]) / 1000, 1)


async def raw_throughput(kubeconfig: Path, requests: int, concurrency: int) -> dict[str, Any]:
    api = ApiClient(connection_from_kubeconfig(kubeconfig))

    async def once() -> None:
        cm = await api.get(PATH)
        assert cm["metadata"]["name"] == NAME

    try:
        result = await async_throughput(once, requests, concurrency)
        result["connection_pool_maxsize"] = 32  # apiclient's TCPConnector(limit=32)
        result["loop"] = type(asyncio.get_running_loop()).__module__
        return result
    finally:
        await api.close()


async def configmap(kubeconfig: Path, *, create: bool) -> None:
    api = ApiClient(connection_from_kubeconfig(kubeconfig))
    try:
        if create:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}, "data": DATA}
            try:
                await api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", body=body)
            except ApiError as e:
                if e.status != 409:
                    raise
                await api.request("PUT", PATH, body=body)
        else:
            await api.request("DELETE", PATH)
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG"),
        help="the cluster to measure against (default: $KUBECONFIG; without either, a local cluster of its own)",
    )
    parser.add_argument("--requests", type=int, default=300, help="GETs per timed run (default: 300)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="threads or tasks in the concurrent run (default: 10)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per client (default: 5)")
    args = parser.parse_args()
    if args.kubeconfig is not None:
        measure(args.kubeconfig.resolve(), args)
        return
    with tempfile.TemporaryDirectory(prefix="ks-bench-clients-") as tmp:
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        cluster.up(state_dir, NodeConfig(), log=lambda _: None)
        try:
            measure(state_dir.kubeconfig, args)
        finally:
            cluster.down(state_dir)


def measure(kubeconfig: Path, args: argparse.Namespace) -> None:
    eventloop.run(configmap(kubeconfig, create=True))
    try:
        results: dict[str, Any] = {
            "configmap_bytes": len(str(DATA)),
            "requests": args.requests,
            "concurrency": args.concurrency,
            "startup": startup(kubeconfig, args.repeats),
            "throughput": {
                "kubernetes": sync_throughput(kubeconfig, args.requests, args.concurrency),
                "kubernetes_asyncio": eventloop.run(
                    kubernetes_asyncio_throughput(kubeconfig, args.requests, args.concurrency)
                ),
                "kubernetes_asyncio raw JSON": eventloop.run(
                    kubernetes_asyncio_throughput(kubeconfig, args.requests, args.concurrency, models=False)
                ),
                "raw aiohttp": eventloop.run(raw_throughput(kubeconfig, args.requests, args.concurrency)),
            },
            "write": eventloop.run(write_latency(kubeconfig, args.requests)),
        }
    finally:
        eventloop.run(configmap(kubeconfig, create=False))

    startup_rows = [
        ("import ms", "import_ms", "{:.0f}"),
        ("modules imported", "modules", "{:.0f}"),
        ("RSS after import MB", "rss_import_mb", "{:.1f}"),
        ("RSS after client + GET MB", "rss_request_mb", "{:.1f}"),
        ("client + first GET ms", "first_request_ms", "{:.0f}"),
    ]
    throughput_rows = [
        ("GET p50 ms, sequential", "sequential", "p50_ms", "{:.2f}"),
        ("GET/s, sequential", "sequential", "requests_per_second", "{:,.0f}"),
        (f"GET p50 ms, {args.concurrency} concurrent", "concurrent", "p50_ms", "{:.2f}"),
        (f"GET/s, {args.concurrency} concurrent", "concurrent", "requests_per_second", "{:,.0f}"),
    ]
    rows: list[tuple[str, str, str]] = []
    for label, field, fmt in startup_rows:
        base = results["startup"]["raw aiohttp"][field]
        for variant, r in results["startup"].items():
            rows.append((f"{label}: {variant}", fmt.format(r[field]), f"{r[field] / base:.2f}x raw"))
    for label, run, field, fmt in throughput_rows:
        base = results["throughput"]["raw aiohttp"][run][field]
        for family, r in results["throughput"].items():
            value = r[run][field]
            rows.append((f"{label}: {family}", fmt.format(value), f"{value / base:.2f}x raw"))
    write = results["write"]
    rows.append(
        (
            "PATCH p50 / p99 ms, sequential: kubernetes_asyncio",
            f"{write['p50_ms']:.2f} / {write['p99_ms']:.2f}",
            "one API write",
        )
    )
    report.write("kube_clients", results, rows)


if __name__ == "__main__":
    main()
