"""PNG pictures of benchmark results: latency distributions per target, burst timelines.

Pure drawing: the benchmarks hand over what they measured; nothing here measures. matplotlib
draws off-screen (Agg), so no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from report import percentile

matplotlib.use("Agg")  # before pyplot is imported: off-screen drawing, no display needed
import matplotlib.pyplot as plt

POINTS = 2000  # steps drawn per distribution at most


def figure(
    path: Path,
    title: str,
    samples: Mapping[str, Sequence[float]] | None = None,
    timeline: Mapping[str, Sequence[float]] | None = None,
    unit: str = "ms",
) -> Path:
    """One PNG with a panel per kind of data given.

    ``samples``: label -> values (in ``unit``), drawn as cumulative distributions on a log
    axis with their p50 and p99 marked, so targets with different spreads compare on one
    panel. ``timeline``: event -> seconds since the burst began, one per object, drawn as how
    many had reached each event over time.
    """
    panels = [p for p in (samples, timeline) if p]
    if not panels:
        raise ValueError("nothing to draw: give samples or a timeline")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
    column = iter(axes[0])
    if samples:
        _distributions(next(column), samples, unit)
    if timeline:
        _timeline(next(column), timeline)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _distributions(ax: plt.Axes, samples: Mapping[str, Sequence[float]], unit: str) -> None:
    # A log axis spreads sub-millisecond and second-long targets apart, but cannot show values
    # at or below zero (a premature cull is one): then a linear axis, so none is hidden.
    log = all(v > 0 for values in samples.values() for v in values)
    for label, values in samples.items():
        ordered = sorted(values)
        if not ordered:
            continue
        n = len(ordered)
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        # At most POINTS steps: a million calls draw the same curve as POINTS of them, slower.
        ranks = (
            range(n) if n <= POINTS else sorted({round(i * (n - 1) / (POINTS - 1)) for i in range(POINTS)})
        )
        xs, shares = [ordered[r] for r in ranks], [(r + 1) / n for r in ranks]
        label = f"{label}: p50 {p50:.3g}, p99 {p99:.3g} (n={n})"
        (line,) = ax.step(xs, shares, where="post", label=label)
        ax.plot([p50, p99], [0.5, 0.99], "o", color=line.get_color(), markersize=4)
    ax.set_xscale("log" if log else "linear")
    ax.set_xlabel(f"{unit}, log scale" if log else unit)
    ax.set_ylabel("share at or below")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def _timeline(ax: plt.Axes, timeline: Mapping[str, Sequence[float]]) -> None:
    for event, times in timeline.items():
        ordered = sorted(times)
        if ordered:
            ax.step([0.0, *ordered], range(len(ordered) + 1), where="post", label=f"{event} ({len(ordered)})")
    ax.set_xlabel("seconds since the burst began")
    ax.set_ylabel("objects that reached it")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
