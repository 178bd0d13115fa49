"""The fault suite's books: every call's outcome on counter sessions, and what they prove.

A counter session answers each ``{"add": n}`` with its new total, and calls on one session run
one at a time, so the totals a client was given tell what the worker ran: between two
acknowledged calls the total must grow by exactly the second one's ``add``, plus at most the
adds of the calls between them that failed back to the client (their fate is unknown: they
may have run once). Less is an acknowledged call lost; more is a call run twice. No I/O here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    worker: int  # the load thread that made the call
    started: float  # monotonic
    ended: float
    session: str | None  # the session the call went to (None: none could be had)
    added: int
    total: int | None = None  # acknowledged: the total the worker answered
    error: str = ""  # failed back to the client: its type and code


@dataclass(frozen=True)
class Violation:
    at: float  # when the acknowledgement that shows it came
    session: str
    kind: str  # "lost" or "ran_twice"
    calls: int


@dataclass
class Phase:
    name: str
    start: float
    end: float = float("inf")
    figures: dict[str, object] = field(default_factory=dict)


class Ledger:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.retries: list[tuple[float, str]] = []  # (when, why) the client sent a call again
        self._lock = threading.Lock()

    def retried(self, why: str) -> None:
        with self._lock:
            self.retries.append((time.monotonic(), why))

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def audit(self) -> list[Violation]:
        """Every lost or repeated call the acknowledged totals show, session by session."""
        found: list[Violation] = []
        total: dict[str, int] = {}  # the last acknowledged total of each session (0 before any)
        unknown: Counter[str] = Counter()  # adds failed back since that acknowledgement
        for o in sorted(self.snapshot(), key=lambda o: o.ended):
            if o.session is None:
                continue
            if o.total is None:
                unknown[o.session] += o.added
                continue
            low = total.get(o.session, 0) + o.added
            high = low + unknown.pop(o.session, 0)
            if o.total < low:
                found.append(Violation(o.ended, o.session, "lost", low - o.total))
            elif o.total > high:
                found.append(Violation(o.ended, o.session, "ran_twice", o.total - high))
            total[o.session] = o.total
        return found

    def figures(self, phase: Phase, violations: list[Violation]) -> dict[str, object]:
        """Calls acknowledged, failed (by reason), lost and run twice within ``phase``."""
        inside = [o for o in self.snapshot() if phase.start <= o.ended < phase.end]
        failed = [o for o in inside if o.total is None]
        hits = [v for v in violations if phase.start <= v.at < phase.end]
        with self._lock:
            retried = Counter(why for at, why in self.retries if phase.start <= at < phase.end)
        return {
            "acknowledged": sum(o.total is not None for o in inside),
            "failed": len(failed),
            "failed_reasons": dict(Counter(o.error for o in failed).most_common()),
            "lost": sum(v.calls for v in hits if v.kind == "lost"),
            "ran_twice": sum(v.calls for v in hits if v.kind == "ran_twice"),
            "sent_again": dict(retried.most_common()),
            # Sent again after a transport failure, not an answer (a 503 is one): the request
            # may have reached a gateway that died with it, and went again with its call id.
            "cut_in_flight": sum(n for why, n in retried.items() if not why.startswith("HTTP ")),
        }

    def acked_since(self, since: float) -> set[int]:
        """The load threads that have had a call acknowledged that they started after ``since``."""
        return {o.worker for o in self.snapshot() if o.total is not None and o.started >= since}
