"""Two sets of results side by side: each target's figure before and now, as a share of its bound.

`.venv/bin/python bench/compare.py PREVIOUS_DIR [CURRENT_DIR]` (CURRENT_DIR: bench-results/)
judges both directories with bench/summary.py's targets and writes bench-results/compare.json
and compare.png: per target, the figure divided by its bound (the bound over the figure for an
"at least" target), so 1.0 is the target and lower is better either way; each bound is made
from its own run (a ratio to the floor measured then), never across runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import report
import summary


def shares(directory: Path) -> dict[str, float]:
    """target -> figure / bound (bound / figure for ">="), for the targets judged there."""
    out = {}
    for row in summary.evaluate(directory):
        value, bound = row["value"], row["bound"]
        if value is None or bound is None or not value or not bound:
            continue
        out[row["target"]] = value / bound if row["compare"] == "<=" else bound / value
    return out


def main(previous: Path, current: Path) -> None:
    before, now = shares(previous), shares(current)
    names = [name for name in now if name in before] + [name for name in now if name not in before]
    rows: list[dict[str, Any]] = [{"target": n, "before": before.get(n), "now": now[n]} for n in names]
    (report.RESULTS / "compare.json").write_text(
        json.dumps({"previous": str(previous), "current": str(current), "rows": rows}, indent=2)
    )
    width = max(len(n) for n in names)
    print(f"\ncompare  (figure / bound; <= 1 meets it)  before: {previous}  now: {current}")
    for row in rows:
        shown = "-" if row["before"] is None else f"{row['before']:.2f}"
        print(f"{row['target'].ljust(width)}  {shown:>6}  {row['now']:6.2f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r["before"] or 0 for r in rows], height=0.4, label="before", color="#bbb")
    ax.barh([y - 0.2 for y in ys], [r["now"] for r in rows], height=0.4, label="now", color="#369")
    ax.axvline(1.0, color="#c33", linestyle="--", label="target")
    ax.set_yticks(list(ys), [r["target"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("figure / bound (<= 1 meets the target; each bound from its own run)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(report.RESULTS / "compare.png", dpi=100)
    print(f"plot: {report.RESULTS / 'compare.png'}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: bench/compare.py PREVIOUS_DIR [CURRENT_DIR]")
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else report.RESULTS)
