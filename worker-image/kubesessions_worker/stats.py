"""Counters the runner keeps per call, and the busy/idle split of the time the worker is held;
rendered by :mod:`.metrics` and ``GET /status``."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Seconds; from sub-millisecond echoes to minute-long generations.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


@dataclass
class BusyTime:
    """Seconds with a call in flight, on the runner's monotonic clock.

    Every GPU the pod holds is held for the worker's whole life, so these seconds (and the
    idle rest of the uptime) are the same for each GPU: GPU-seconds are them times the GPUs.
    """

    total: float = 0.0
    since: float | None = None  # when the running call started; None while none runs

    def start(self, now: float) -> None:
        self.since = now

    def stop(self, now: float) -> None:
        if self.since is not None:
            self.total += now - self.since
            self.since = None

    def seconds(self, now: float) -> float:
        return self.total + (now - self.since if self.since is not None else 0.0)


@dataclass
class CallStats:
    """What the runner counts; ``outcomes`` by ok / run_failed / call_timeout / session_ended."""

    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    busy: BusyTime = field(default_factory=BusyTime)
