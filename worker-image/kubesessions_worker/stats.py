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


@dataclass(frozen=True)
class Held:
    """The worker's life so far, in seconds: starting (until setup is done), busy (a call in
    flight), idle (the rest), all of them the session's; and pool: a warm pool worker's time
    before a session claimed it (its setup and its wait), its App's, not the session's. Every
    GPU the pod holds is held all along, so these are also the GPU-seconds per GPU."""

    starting: float
    busy: float
    idle: float
    pool: float = 0.0

    def items(self) -> tuple[tuple[str, float], ...]:
        return (("starting", self.starting), ("busy", self.busy), ("idle", self.idle), ("pool", self.pool))


@dataclass
class HeldTime:
    """Marks on the runner's monotonic clock from which :class:`Held` is split. The session's
    clock starts at ``started``: the process start, or a pool worker's claim."""

    started: float
    pooled: bool = False  # an unclaimed pool worker: all its time so far is pool time
    pool: float = 0.0  # seconds in the pool before the claim
    ready_at: float | None = None
    busy_total: float = 0.0
    busy_since: float | None = None  # when the running call started; None while none runs

    def ready(self, now: float) -> None:
        self.ready_at = now

    def claimed(self, now: float) -> None:
        """The session's clock starts now, its worker set up already: nothing before is its."""
        self.pool, self.pooled = now - self.started, False
        self.started = self.ready_at = now

    def call_started(self, now: float) -> None:
        self.busy_since = now

    def call_ended(self, now: float) -> None:
        if self.busy_since is not None:
            self.busy_total += now - self.busy_since
            self.busy_since = None

    def split(self, now: float) -> Held:
        if self.pooled:
            return Held(starting=0.0, busy=0.0, idle=0.0, pool=now - self.started)
        ready = now if self.ready_at is None else self.ready_at
        busy = self.busy_total + (0.0 if self.busy_since is None else now - self.busy_since)
        return Held(
            starting=ready - self.started, busy=busy, idle=max(0.0, now - ready - busy), pool=self.pool
        )


@dataclass
class CallStats:
    """What the runner counts; ``outcomes`` by ok / run_failed / call_timeout / session_ended."""

    held: HeldTime
    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
