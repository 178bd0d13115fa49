"""Pure: is a session idle past its timeout, and when to look at it again.

Deciding is kept apart from acting (Kubeflow's culler does the same): the controller reads
the worker's activity, asks :func:`decide`, and only then patches or deletes.
"""

from __future__ import annotations

from dataclasses import dataclass

# While a call is in flight the deadline cannot fall, but the call may end at any moment
# and the timeout counts from there: look again often enough to be at most this late.
BUSY_LOOK_MIN, BUSY_LOOK_MAX = 0.25, 5.0
# A look lands a hair after the deadline rather than a hair before it.
EPSILON = 0.005


@dataclass(frozen=True)
class Decision:
    expire: bool
    look_again_in: float | None  # seconds; None when expiring


def busy_look_interval(timeout: float) -> float:
    return min(BUSY_LOOK_MAX, max(BUSY_LOOK_MIN, timeout / 4))


def decide(now: float, last_activity: float, timeout: float, in_flight: bool) -> Decision:
    """``now`` and ``last_activity`` in seconds on one clock; ``timeout`` > 0.

    Never early: expire only when nothing is in flight and ``now >= last_activity + timeout``.
    Never more than one look-interval late: the next look is at the deadline itself, or,
    while busy, within :func:`busy_look_interval`.
    """
    if in_flight:
        return Decision(False, busy_look_interval(timeout))
    deadline = last_activity + timeout
    if now >= deadline:
        return Decision(True, None)
    return Decision(False, deadline - now + EPSILON)


def write_interval(timeout: float) -> float:
    """The shortest gap between two activity writes for one session: max(1 s, timeout/10)."""
    return max(1.0, timeout / 10)


def unreachable_backoff(failures: int) -> float:
    """Seconds before the next try at a worker that did not answer ``failures`` times."""
    return float(min(10.0, 0.5 * 2 ** max(0, failures - 1)))
