"""Worker echo by where the kernel runs its two threads: the event loop's and the app's.

`bench/worker_echo.py`'s 8-client figure is bimodal on this 2-core machine (rounds of ~2,000 and
of ~4,000 calls/s in one run). This bench places the threads by hand, each placement in turn
over ROUNDS rounds, and measures the same calls (`worker_echo.measure`, 1 and 8 clients):

- ``free``: as the kernel places them (what `worker_echo` measures);
- ``one-cpu``: both worker threads on CPU 1, this client on CPU 0;
- ``split``: the loop's thread on CPU 1, the app thread on CPU 0 with this client;
- ``floor-one-cpu``: the bare echo handler (`bench/echo_floor.py`) on CPU 1, this client on CPU 0.

Linux only (``os.sched_setaffinity``), two CPUs or more. Run with
`.venv/bin/python bench/worker_placement.py`; writes bench-results/worker_placement.json.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import report
import worker_echo as we

from kubesessions.common import eventloop

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PLACEMENTS = ("free", "one-cpu", "split", "floor-one-cpu")
ALL = set(range(os.cpu_count() or 1))


def place(pid: int, placement: str) -> None:
    """Pin the server's threads (and this client) for ``placement``."""
    threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for tid in threads:
        if placement in ("one-cpu", "floor-one-cpu"):
            os.sched_setaffinity(tid, {1})
        elif placement == "split":  # the process's main thread runs the event loop
            os.sched_setaffinity(tid, {1} if tid == pid else {0})
    os.sched_setaffinity(0, ALL if placement == "free" else {0})


async def one_round(placement: str) -> dict[str, dict[str, Any]]:
    proc, url = await we.start_worker("floor" if placement.startswith("floor") else "uvloop")
    try:
        place(proc.pid, placement)
        return await we.http_scenarios(url)  # http_1 and http_8: 1 and 8 clients
    finally:
        os.sched_setaffinity(0, ALL)
        proc.terminate()
        await proc.wait()


async def main() -> None:
    if len(ALL) < 2:
        raise SystemExit("needs two CPUs or more")
    rounds: dict[str, list[dict[str, dict[str, Any]]]] = {p: [] for p in PLACEMENTS}
    for _ in range(ROUNDS):
        for placement in PLACEMENTS:
            rounds[placement].append(await one_round(placement))
    results: dict[str, Any] = {}
    rows = []
    for placement, runs in rounds.items():
        for clients in (1, 8):
            figures = [r[f"http_{clients}"] for r in runs]
            r = results[f"{placement}_c{clients}"] = {
                "p50_ms": statistics.median(f["p50_ms"] for f in figures),
                "calls_per_second": statistics.median(f["calls_per_second"] for f in figures),
                "rounds": [
                    {"p50_ms": f["p50_ms"], "calls_per_second": f["calls_per_second"]} for f in figures
                ],
            }
            each = ", ".join(f"{f['calls_per_second']:,.0f}" for f in figures)
            rows.append((f"{placement}, {clients} client(s) p50 ms", f"{r['p50_ms']:.3f}", ""))
            rows.append(
                (
                    f"{placement}, {clients} client(s) calls/s",
                    f"{r['calls_per_second']:,.0f}",
                    f"rounds: {each}",
                )
            )
    floor = results["floor-one-cpu_c8"]["calls_per_second"]
    for placement in ("free", "one-cpu", "split"):
        ratio = results[f"{placement}_c8"]["calls_per_second"] / floor
        results[f"{placement}_vs_floor_one_cpu_c8"] = ratio
        rows.append((f"{placement} / floor-one-cpu calls/s, 8 clients", f"{ratio:.2f}x", ""))
    report.write("worker_placement", results, rows)


if __name__ == "__main__":
    eventloop.run(main())
