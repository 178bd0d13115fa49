"""Every target of issue 18 in one table, read from the raw runs in bench-results/*.json.

Each row: the target, the figure measured, what it is judged against (a fixed bound, or a
comparison measured in the same run: the no-operator floor, the worker called directly) and
whether it is met. A benchmark that has not been run shows as such. `make bench` runs this
last; alone: `.venv/bin/python bench/summary.py`. Also written to bench-results/summary.json.
"""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import report


@dataclass(frozen=True)
class Target:
    name: str
    bench: str  # bench-results/<bench>.json
    value: Callable[[dict[str, Any]], float | None]  # from its "results"
    bound: Callable[[dict[str, Any]], float | None]  # what the value is compared with
    compare: str  # "<=" or ">="
    judged_by: str  # how the bound is made, in words
    unit: str = ""


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(results: dict[str, Any]) -> float | None:
        value: Any = results
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return None if value is None else float(value)

    return read


def _fixed(bound: float) -> Callable[[dict[str, Any]], float]:
    return lambda _: bound


def _times(
    factor: float, read: Callable[[dict[str, Any]], float | None]
) -> Callable[[dict[str, Any]], float | None]:
    def bound(results: dict[str, Any]) -> float | None:
        base = read(results)
        return None if base is None else factor * base

    return bound


def _idle_rss_at(sessions: int) -> Callable[[dict[str, Any]], float | None]:
    """The operator's RSS from an idle_cost run of ``sessions`` Sessions, all Ready."""

    def read(results: dict[str, Any]) -> float | None:
        if results.get("sessions_asked") != sessions or results.get("sessions_ready") != sessions:
            return None
        return _get("peak_rss_mb", "operator")(results)

    return read


def _gateway(clients: int) -> list[Target]:
    key = f"{clients}_clients"
    return [
        Target(
            f"gateway p{p}, {clients} client(s)",
            "gateway",
            _get(key, "gateway", f"p{p}_ms"),
            _times(1.5, _get(key, "direct", f"p{p}_ms")),
            "<=",
            f"1.5 x the worker called directly, p{p}, same run",
            "ms",
        )
        for p in (50, 99)
    ]


TARGETS = [
    Target(
        "operator burst: Session -> Pod p99",
        "operator",
        _get("session_to_pod_ms", "p99"),
        _times(1.5, _get("floor_no_operator", "session_to_pod_ms", "p99")),
        "<=",
        "1.5 x the no-operator floor's p99, same run",
        "ms",
    ),
    Target(
        "operator burst: API writes per Session to Ready",
        "operator",
        _get("api_writes_per_session_to_ready"),
        _fixed(6),
        "<=",
        "fixed (the namespace's one NetworkPolicy apply counted apart)",
    ),
    Target(
        "operator RSS, 100 Sessions",
        "operator",
        _get("operator_peak_rss_mb"),
        _fixed(60),
        "<=",
        "fixed",
        "MB",
    ),
    Target(
        "operator RSS, 1,000 idle Sessions", "idle_cost", _idle_rss_at(1000), _fixed(100), "<=", "fixed", "MB"
    ),
    *_gateway(1),
    *_gateway(10),
    Target(
        "gateway CPU per forwarded call, 10 clients",
        "gateway",
        _get("10_clients", "gateway", "cpu_ms_per_call"),
        _fixed(0.20),
        "<=",
        "fixed (below the Go peer's router, 0.23 ms)",
        "ms",
    ),
    Target(
        "worker echo p50 / floor p50, 1 client",
        "worker_echo",
        _get("http_vs_floor", "p50_ratio_1"),
        _fixed(1.3),
        "<=",
        "a bare echo handler on the same HTTP stack, same client, same run",
        "x",
    ),
    Target(
        "worker calls/s / floor calls/s, 8 clients",
        "worker_echo",
        _get("http_vs_floor", "calls_per_second_ratio_8"),
        _fixed(0.75),
        ">=",
        "a bare echo handler on the same HTTP stack, same client, same run",
        "x",
    ),
    Target(
        "10,000 idle Sessions: API writes per minute",
        "idle_cost_10000",
        _get("api_writes_per_minute"),
        _fixed(0),
        "<=",
        "fixed (BENCH_IDLE_COST_SESSIONS=10000 bench/idle_cost.py)",
    ),
    Target(
        "1,000 idle Sessions: API writes per minute",
        "idle_cost",
        _get("api_writes_per_minute"),
        _fixed(0),
        "<=",
        "fixed",
    ),
]
_COMPARE = {"<=": operator.le, ">=": operator.ge}


def evaluate(results_dir: Path = report.RESULTS) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        path = results_dir / f"{target.bench}.json"
        row: dict[str, Any] = {"target": target.name, "source": str(path), "judged_by": target.judged_by}
        if not path.exists():
            rows.append(row | {"value": None, "bound": None, "met": None, "note": "not run"})
            continue
        results = json.loads(path.read_text())["results"]
        value, bound = target.value(results), target.bound(results)
        met = None if value is None or bound is None else _COMPARE[target.compare](value, bound)
        note = "" if met is not None else "no figure in this run"
        rows.append(
            row | {"value": value, "bound": bound, "compare": target.compare, "met": met, "note": note}
        )
    return rows


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if value else "0"
    return f"{text} {unit}".strip()


def main() -> None:
    rows = evaluate()
    report.RESULTS.mkdir(exist_ok=True)
    (report.RESULTS / "summary.json").write_text(json.dumps(rows, indent=2))
    units = {t.name: t.unit for t in TARGETS}
    table = [
        (
            r["target"],
            _show(r["value"], units[r["target"]]),
            f"{r.get('compare', '')} {_show(r['bound'], units[r['target']])}".strip(),
            {True: "met", False: "NOT met", None: r["note"]}[r["met"]],
            r["judged_by"],
        )
        for r in rows
    ]
    header = ("target (issue 18)", "value", "bound", "result", "judged by")
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    print("\nsummary  (bench-results/summary.json)")
    for line in [header, *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
