"""bench/summary.py: each issue-18 target judged from the raw results, comparisons made within one run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent.parent / "bench"))

import summary

pytestmark = pytest.mark.unit


def write(directory: Path, bench: str, results: dict[str, Any]) -> None:
    (directory / f"{bench}.json").write_text(json.dumps({"benchmark": bench, "results": results}))


def rows(directory: Path) -> dict[str, dict[str, Any]]:
    return {row["target"]: row for row in summary.evaluate(directory)}


def test_ratios_are_judged_against_the_same_runs_comparison(tmp_path: Path) -> None:
    write(
        tmp_path,
        "gateway",
        {
            "1_clients": {
                "direct": {"p50_ms": 0.5, "p99_ms": 2.0},
                "gateway": {"p50_ms": 0.75, "p99_ms": 3.3},
            },
            "10_clients": {
                "direct": {"p50_ms": 4.0, "p99_ms": 10.0},
                "gateway": {"p50_ms": 6.5, "p99_ms": 15.0, "cpu_ms_per_call": 0.2},
            },
        },
    )
    got = rows(tmp_path)
    assert got["gateway p50, 1 client(s)"]["met"] is True  # 0.75 <= 1.5 x 0.5
    assert got["gateway p99, 1 client(s)"]["met"] is False  # 3.3 > 1.5 x 2.0
    assert got["gateway p50, 10 client(s)"]["met"] is False  # 6.5 > 6.0
    assert got["gateway p50, 10 client(s)"]["bound"] == pytest.approx(6.0)
    assert got["gateway CPU per forwarded call, 10 clients"]["met"] is True


def test_a_bench_not_run_or_a_figure_missing_is_said_not_judged(tmp_path: Path) -> None:
    write(tmp_path, "idle_cost", {"sessions_asked": 1000, "sessions_ready": 640, "api_writes_per_minute": 0})
    got = rows(tmp_path)
    worker = got["worker echo p50 / floor p50, 1 client"]
    assert (worker["met"], worker["note"]) == (None, "not run")
    # Fewer than 1,000 Ready: the 1,000-session memory figure is not claimed from it.
    assert got["operator RSS, 1,000 idle Sessions"]["met"] is None
    assert got["operator RSS, 1,000 idle Sessions"]["note"] == "no figure in this run"
    assert got["1,000 idle Sessions: API writes per minute"]["met"] is True
