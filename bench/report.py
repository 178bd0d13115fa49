"""Shared by the benchmarks: percentiles, a JSON result file, a short table and a PNG."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path("bench-results")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def write(
    name: str,
    results: dict[str, Any],
    rows: list[tuple[str, str, str]],
    *,
    samples: Mapping[str, Sequence[float]] | None = None,
    timeline: Mapping[str, Sequence[float]] | None = None,
    unit: str = "ms",
) -> Path:
    """Save ``results`` as bench-results/<name>.json and print (metric, value, target) rows;
    with raw ``samples`` (label -> latencies in ``unit``) or a burst ``timeline`` (event ->
    seconds since the start, one per object), also bench-results/<name>.png (see plots)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    path.write_text(json.dumps({"benchmark": name, **meta, "results": results}, indent=2))
    width = max(len(r[0]) for r in rows)
    print(f"\n{name}  ({path})")
    print(f"{'metric'.ljust(width)}  {'value':>12}  target")
    for metric, value, target in rows:
        print(f"{metric.ljust(width)}  {value:>12}  {target}")
    if samples or timeline:
        import plots  # matplotlib only when there is something to draw

        picture = plots.figure(RESULTS / f"{name}.png", name, samples, timeline, unit)
        print(f"plot: {picture}")
    return path
