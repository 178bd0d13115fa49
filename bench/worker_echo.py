"""Worker echo round trip: HTTP on loopback, and the runner's queue without HTTP.

Starts `kubesessions-worker` with the echo app on 127.0.0.1 in a subprocess and measures
`POST /run` with an aiohttp client at 1 and 8 concurrent clients (the 8 queue behind each
other in the worker). The worker runs on uvloop (as installed by the [worker] extra) and,
for comparison, on asyncio's own loop (uvloop made unimportable). The floor is a bare echo
handler on the same HTTP stack (bench/echo_floor.py: aiohttp on uvloop, nothing of the
worker), measured by the same client: the worker's targets are ratios to it (p50 at 1 client
<= 1.3x, calls/s at 8 clients >= 0.75x), taken per round and the median over rounds. The
three servers alternate over ROUNDS rounds and each figure is the median over rounds, so a
busy machine weighs on all alike. This process runs on the same loop as the gateway (the
worker's real client).
Side by side, in this process: the app called directly, the app thread's round trip alone
(the floor of running sync app code off the event loop), and the same app through the runner
(FIFO queue + app thread) without HTTP, so the queue's overhead and HTTP's share are
visible. Run with `.venv/bin/python bench/worker_echo.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
import report

from kubesessions.common import eventloop
from kubesessions_worker.app import AppHost
from kubesessions_worker.examples.echo import Echo
from kubesessions_worker.runner import Done, Runner
from kubesessions_worker.termination import Reason

SECONDS = 2.0  # per scenario, after a short warm-up
ROUNDS = 3  # of each loop, alternating
WARMUP = 0.5
TOKEN = secrets.token_urlsafe(32)
PAYLOAD = {"input": {"message": "hello", "n": 42}}
APP = "kubesessions_worker.examples.echo:Echo"


async def measure(clients: int, once: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """``clients`` loops calling ``once`` back to back for SECONDS; latencies in ms."""
    latencies: list[float] = []
    stop = time.monotonic() + WARMUP

    async def loop(record: bool) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await once()
            if record:
                latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop(False) for _ in range(clients)))
    stop = time.monotonic() + SECONDS
    started = time.perf_counter()
    await asyncio.gather(*(loop(True) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    stats = report.summary(latencies)
    return {
        "clients": clients,
        "calls": len(latencies),
        "calls_per_second": len(latencies) / elapsed,
        "p50_ms": stats["median"],
        "p99_ms": stats["p99"],
        "max_ms": stats["max"],
        "samples_ms": latencies,  # for the plot, not the JSON
    }


SERVERS = {
    "uvloop": [],
    # The same command with uvloop unimportable, so the worker falls back to asyncio's loop.
    "asyncio": [
        "-c",
        "import sys; sys.modules['uvloop'] = None; "
        "from kubesessions_worker.cli import main; sys.exit(main(sys.argv[1:]))",
    ],
    # The floor: a bare echo handler on the same stack (it ignores the worker's arguments).
    "floor": [str(Path(__file__).parent / "echo_floor.py")],
}
# BENCH_WORKER_BEFORE=DIR: also an earlier worker, its package in DIR (e.g. `git archive REV
# worker-image | tar -x -C /tmp/before` gives DIR=/tmp/before/worker-image), in the same rounds.
BEFORE = os.environ.get("BENCH_WORKER_BEFORE")
if BEFORE:
    SERVERS["before"] = [
        "-c",
        f"import sys; sys.path.insert(0, {BEFORE!r}); "
        "from kubesessions_worker.cli import main; sys.exit(main(sys.argv[1:]))",
    ]


async def start_worker(server: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        **os.environ,
        "SESSION_ID": "bench",
        "KUBESESSIONS_APP": APP,
        "KUBESESSIONS_SESSION_TOKEN": TOKEN,
        "KUBESESSIONS_TERMINATION_MESSAGE_PATH": os.devnull,
    }
    command = (
        [sys.executable, *SERVERS[server]]
        if SERVERS[server]
        else [str(Path(sys.executable).parent / "kubesessions-worker")]
    )
    proc = await asyncio.create_subprocess_exec(
        *command, "--host=127.0.0.1", "--port=0", env=env, stderr=asyncio.subprocess.PIPE
    )
    return proc, await await_ready(proc, 20)


async def await_ready(proc: asyncio.subprocess.Process, timeout: float) -> str:
    """The URL a worker started with ``--port=0`` and a piped stderr listens on, once its
    ``/readyz`` answers 200."""
    assert proc.stderr is not None
    async with asyncio.timeout(timeout):
        while line := await proc.stderr.readline():
            message = json.loads(line)["message"]
            if message.startswith("listening on "):
                url = message.removeprefix("listening on ")
                break
        else:
            raise RuntimeError("the worker exited before it listened")
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.01)
    # Keep draining its logs so a full pipe can never stall it.
    asyncio.get_running_loop().create_task(proc.stderr.read())
    return url


async def http_scenarios(url: str) -> dict[str, dict[str, Any]]:
    body = json.dumps(PAYLOAD).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    results = {}
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def once() -> None:
            async with http.post(f"{url}/run", data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        for clients in (1, 8):
            results[f"http_{clients}"] = await measure(clients, once)
    return results


async def in_process_scenarios() -> dict[str, dict[str, Any]]:
    echo = Echo()

    async def direct() -> None:
        echo.run(PAYLOAD["input"])

    runner = Runner(AppHost(APP), session_id="bench", session_timeout=60, queue_size=16, call_timeout=600)
    await runner.setup({})

    async def queued() -> None:
        call = runner.submit(PAYLOAD["input"])
        async for batch in call.follow():
            event = batch[-1]
        assert isinstance(event, Done), event

    async def handed_off() -> None:
        # The app thread's round trip alone (AppThread.run): the floor of running sync app code
        # off the event loop, which the worker contract requires.
        await runner.app.thread.run(echo.run, PAYLOAD["input"])

    results = {"direct_1": await measure(1, direct), "thread_1": await measure(1, handed_off)}
    for clients in (1, 8):
        results[f"runner_{clients}"] = await measure(clients, queued)
    runner.stop(Reason.CLOSED)
    await runner.shutdown(grace=5)
    return results


async def http_rounds() -> dict[str, Any]:
    """ROUNDS rounds of each server, alternating; per server and client count, the median round."""
    rounds: dict[str, list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):
        for server in SERVERS:
            proc, url = await start_worker(server)
            try:
                for name, result in (await http_scenarios(url)).items():
                    rounds.setdefault(f"{name}_{server}", []).append(result)
            finally:
                proc.terminate()
                await proc.wait()
    results: dict[str, Any] = {}
    for key, runs in rounds.items():
        results[key] = {
            field: statistics.median(r[field] for r in runs)
            for field in ("calls", "calls_per_second", "p50_ms", "p99_ms", "max_ms")
        } | {
            "clients": runs[0]["clients"],
            "rounds": [{k: v for k, v in r.items() if k != "samples_ms"} for r in runs],
        }
        results[key]["samples_ms"] = [x for r in runs for x in r["samples_ms"]]
    for clients in (1, 8):
        base, fast = results[f"http_{clients}_asyncio"], results[f"http_{clients}_uvloop"]
        results[f"http_{clients}_uvloop_vs_asyncio"] = {
            "p50_ratio": fast["p50_ms"] / base["p50_ms"],
            "calls_per_second_ratio": fast["calls_per_second"] / base["calls_per_second"],
        }
    # Against the floor, round by round (the two ran a few seconds apart), then the median.
    vs_floor = {
        "p50_ratio_1": statistics.median(
            w["p50_ms"] / f["p50_ms"]
            for w, f in zip(rounds["http_1_uvloop"], rounds["http_1_floor"], strict=True)
        ),
        "calls_per_second_ratio_8": statistics.median(
            w["calls_per_second"] / f["calls_per_second"]
            for w, f in zip(rounds["http_8_uvloop"], rounds["http_8_floor"], strict=True)
        ),
    }
    results["http_vs_floor"] = vs_floor
    # The worker as shipped: uvloop.
    results["http_1"], results["http_8"] = results["http_1_uvloop"], results["http_8_uvloop"]
    return results


async def main() -> None:
    results = await http_rounds()
    results |= await in_process_scenarios()
    results["queue_overhead_p50_ms"] = results["runner_1"]["p50_ms"] - results["direct_1"]["p50_ms"]
    results["http_share_p50_ms"] = results["http_1"]["p50_ms"] - results["runner_1"]["p50_ms"]

    def row(name: str, label: str, target: str = "") -> list[tuple[str, str, str]]:
        r = results[name]
        return [
            (f"{label} p50 ms", f"{r['p50_ms']:.4f}", target if "p50" in target else ""),
            (f"{label} p99 ms", f"{r['p99_ms']:.4f}", ""),
            (f"{label} calls/s", f"{r['calls_per_second']:,.0f}", target if "calls" in target else ""),
        ]

    rows = [
        *row("http_1_uvloop", "http uvloop, 1 client"),
        *row("http_8_uvloop", "http uvloop, 8 clients"),
        *row("http_1_floor", "floor (bare echo), 1 client"),
        *row("http_8_floor", "floor (bare echo), 8 clients"),
        ("worker/floor p50, 1 client", f"{results['http_vs_floor']['p50_ratio_1']:.2f}x", "<= 1.3x"),
        (
            "worker/floor calls/s, 8 clients",
            f"{results['http_vs_floor']['calls_per_second_ratio_8']:.2f}x",
            ">= 0.75x",
        ),
        *row("http_1_asyncio", "http asyncio, 1 client"),
        *row("http_8_asyncio", "http asyncio, 8 clients"),
        *(
            (
                f"uvloop/asyncio, {c} client(s)",
                f"{results[f'http_{c}_uvloop_vs_asyncio']['p50_ratio']:.2f} / "
                f"{results[f'http_{c}_uvloop_vs_asyncio']['calls_per_second_ratio']:.2f}",
                "p50 ratio / calls/s ratio",
            )
            for c in (1, 8)
        ),
        *(row("http_1_before", "earlier worker, 1 client") if BEFORE else ()),
        *(row("http_8_before", "earlier worker, 8 clients") if BEFORE else ()),
        *row("runner_1", "runner (no http), 1"),
        *row("runner_8", "runner (no http), 8"),
        *row("direct_1", "app called directly"),
        *row("thread_1", "app thread round trip, 1"),
        ("queue overhead p50 ms", f"{results['queue_overhead_p50_ms']:.3f}", "runner_1 - direct"),
        ("http share p50 ms", f"{results['http_share_p50_ms']:.3f}", "http_1 - runner_1"),
    ]
    labels = {
        "http_1_uvloop": "http uvloop, 1 client",
        "http_8_uvloop": "http uvloop, 8 clients",
        "http_1_asyncio": "http asyncio, 1 client",
        "http_8_asyncio": "http asyncio, 8 clients",
        "http_1_floor": "floor, 1 client",
        "http_8_floor": "floor, 8 clients",
        "runner_1": "runner, 1",
        "runner_8": "runner, 8",
        "direct_1": "app directly",
        "thread_1": "app thread round trip",
    }
    if BEFORE:
        labels |= {"http_1_before": "earlier worker, 1 client", "http_8_before": "earlier worker, 8 clients"}
    samples = {label: results[name].pop("samples_ms") for name, label in labels.items()}
    for name in ("http_1", "http_8"):  # the same objects as the uvloop rows
        results[name] = {k: v for k, v in results[name].items() if k != "rounds"}
    report.write("worker_echo", results, rows, samples=samples)


if __name__ == "__main__":
    eventloop.run(main())
