"""Prometheus text exposition, shared by the operator and the gateway: a histogram and a
counter of API writes (the standard library only; no client library for a dozen lines)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def render(self, name: str, labels: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{le}"}} {running}')
        lines.append(f"{name}_sum{{{labels}}} {self.total}")
        lines.append(f"{name}_count{{{labels}}} {running}")
        return lines


def writes_lines(name: str, help_text: str, writes: Counter[str]) -> list[str]:
    """A counter of API writes by verb and resource (``writes`` keys: "verb resource")."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for what, count in sorted(writes.items()):
        verb, resource = what.split(" ", 1)
        lines.append(f'{name}{{verb="{verb}",resource="{resource}"}} {count}')
    return lines
